// A recording: the ring buffer's records as the agent took them, with what
// decoding them needs, so that a run can be replayed through the pipeline
// without root or a kernel (tests; a bug report: rstwatch run --record).
//
// File: one JSON line (the header), then one frame per record: its length
// as a little-endian uint32 and its bytes.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "events/decode.h"

namespace rstwatch {

struct RecordingHeader {
    int64_t realtime_offset_ns = 0;                  // DecodeContext::realtime_offset_ns
    std::map<uint32_t, std::string> reset_reasons;   // the kernel's names of its reason numbers
    std::string kernel;                              // uname -r, for whoever reads the file

    // How the recorded run decoded its records.
    DecodeContext decode_context() const;
};

class RecordingWriter {
public:
    // Creates (truncates) `path`; throws FatalError naming it.
    RecordingWriter(const std::string &path, const RecordingHeader &header);
    ~RecordingWriter();
    RecordingWriter(const RecordingWriter &) = delete;
    RecordingWriter &operator=(const RecordingWriter &) = delete;

    // Buffered; a write error is reported once (log) and ends the recording,
    // never the agent.
    void write(std::span<const uint8_t> record);
    void flush();

private:
    std::string path_;
    std::FILE *file_ = nullptr;
};

// Reads a recording and hands each record to `on_record`. Throws
// FatalError naming the file and the byte offset when it is not a
// recording or is cut short.
RecordingHeader replay_recording(const std::string &path,
                                 const std::function<void(std::span<const uint8_t>)> &on_record);

}  // namespace rstwatch
