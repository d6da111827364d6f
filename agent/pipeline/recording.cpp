#include "pipeline/recording.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/errors.h"

namespace rstwatch {

namespace {

constexpr const char *kFormat = "rstwatch-recording";
constexpr int kVersion = 1;
// Larger than any record (rw_oom_record is under 1 KiB): a bigger length
// means the file is not what it claims.
constexpr uint32_t kMaxRecordBytes = 64 * 1024;

std::string header_line(const RecordingHeader &h)
{
    nlohmann::json reasons = nlohmann::json::object();
    for (const auto &[code, name] : h.reset_reasons)
        reasons[std::to_string(code)] = name;
    nlohmann::json j = {{"format", kFormat},
                        {"version", kVersion},
                        {"realtime_offset_ns", h.realtime_offset_ns},
                        {"kernel", h.kernel},
                        {"reset_reasons", reasons}};
    return j.dump() + "\n";
}

RecordingHeader parse_header(const std::string &path, const std::string &line)
{
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || j.value("format", "") != kFormat)
        throw FatalError(path + ": not an rstwatch recording (no header line)");
    if (j.value("version", 0) != kVersion)
        throw FatalError(path + ": recording version " + j.value("version", nlohmann::json()).dump() +
                         ", this rstwatch reads version " + std::to_string(kVersion));
    RecordingHeader h;
    h.realtime_offset_ns = j.value("realtime_offset_ns", int64_t{0});
    h.kernel = j.value("kernel", "");
    const nlohmann::json reasons = j.value("reset_reasons", nlohmann::json::object());
    for (const auto &[code, name] : reasons.items())
        if (name.is_string())
            h.reset_reasons[static_cast<uint32_t>(std::stoul(code))] = name.get<std::string>();
    return h;
}

uint32_t little_endian_u32(const uint8_t *b)
{
    return b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
}

}  // namespace

DecodeContext RecordingHeader::decode_context() const
{
    DecodeContext ctx;
    ctx.realtime_offset_ns = realtime_offset_ns;
    std::vector<std::pair<std::string, uint32_t>> enumerators;
    for (const auto &[code, name] : reset_reasons)
        enumerators.emplace_back(name, code);
    ctx.reasons = ResetReasonTable::from_enumerators(enumerators);
    return ctx;
}

RecordingWriter::RecordingWriter(const std::string &path, const RecordingHeader &header) : path_(path)
{
    file_ = std::fopen(path.c_str(), "wb");
    if (!file_)
        throw FatalError("cannot create the recording " + path + ": " + std::strerror(errno));
    const std::string line = header_line(header);
    std::fwrite(line.data(), 1, line.size(), file_);
}

RecordingWriter::~RecordingWriter()
{
    if (file_ && std::fclose(file_) != 0)
        spdlog::error("recording {}: {}", path_, std::strerror(errno));
}

void RecordingWriter::write(std::span<const uint8_t> record)
{
    if (!file_)
        return;
    const uint32_t n = static_cast<uint32_t>(record.size());
    const uint8_t length[4] = {static_cast<uint8_t>(n), static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n >> 16),
                               static_cast<uint8_t>(n >> 24)};
    if (std::fwrite(length, 1, 4, file_) != 4 || std::fwrite(record.data(), 1, n, file_) != n) {
        spdlog::error("recording {} stopped: {}", path_, std::strerror(errno));
        std::fclose(file_);
        file_ = nullptr;
    }
}

void RecordingWriter::flush()
{
    if (file_)
        std::fflush(file_);
}

RecordingHeader replay_recording(const std::string &path,
                                 const std::function<void(std::span<const uint8_t>)> &on_record)
{
    std::unique_ptr<std::FILE, int (*)(std::FILE *)> file(std::fopen(path.c_str(), "rb"), std::fclose);
    if (!file)
        throw FatalError("cannot read the recording " + path + ": " + std::strerror(errno));
    std::string line;
    for (int c; (c = std::fgetc(file.get())) != EOF && c != '\n' && line.size() < kMaxRecordBytes;)
        line += static_cast<char>(c);
    RecordingHeader header = parse_header(path, line);
    std::vector<uint8_t> record;
    for (long offset = std::ftell(file.get());; offset = std::ftell(file.get())) {
        uint8_t length[4];
        const size_t got = std::fread(length, 1, 4, file.get());
        if (got == 0)
            break;
        const uint32_t n = got == 4 ? little_endian_u32(length) : 0;
        if (got != 4 || n > kMaxRecordBytes)
            throw FatalError(path + ": not a record frame at byte " + std::to_string(offset));
        record.resize(n);
        if (std::fread(record.data(), 1, n, file.get()) != n)
            throw FatalError(path + ": cut short in the record at byte " + std::to_string(offset));
        on_record(record);
    }
    return header;
}

}  // namespace rstwatch
