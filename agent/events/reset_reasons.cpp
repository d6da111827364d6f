#include "events/reset_reasons.h"

#include <map>

#include <cctype>
#include <charconv>
#include <iterator>

namespace rstwatch {

namespace {

// A small cursor over the print fmt text. The grammar we read is the one
// the kernel's trace event code prints, e.g.
//   __print_symbolic(REC->reason, { 0, "NOT_SPECIFIED" }, { 1, "NO_SOCKET" })
class Cursor {
public:
    explicit Cursor(std::string_view s) : s_(s) {}

    void skip_space()
    {
        while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_])))
            ++pos_;
    }
    bool eat(char c)
    {
        skip_space();
        if (pos_ < s_.size() && s_[pos_] == c) {
            ++pos_;
            return true;
        }
        return false;
    }
    // Text up to (not including) `stop`, trimmed; nullopt if `stop` never comes.
    std::optional<std::string_view> until(char stop)
    {
        size_t end = s_.find(stop, pos_);
        if (end == std::string_view::npos)
            return std::nullopt;
        std::string_view token = trim(s_.substr(pos_, end - pos_));
        pos_ = end;
        return token;
    }
    std::optional<std::string> quoted()
    {
        if (!eat('"'))
            return std::nullopt;
        std::string out;
        while (pos_ < s_.size() && s_[pos_] != '"') {
            if (s_[pos_] == '\\' && pos_ + 1 < s_.size())
                ++pos_;
            out += s_[pos_++];
        }
        if (pos_ >= s_.size())
            return std::nullopt;
        ++pos_;  // closing quote
        return out;
    }
    size_t pos() const { return pos_; }

    static std::string_view trim(std::string_view v)
    {
        while (!v.empty() && std::isspace(static_cast<unsigned char>(v.front())))
            v.remove_prefix(1);
        while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back())))
            v.remove_suffix(1);
        return v;
    }

private:
    std::string_view s_;
    size_t pos_ = 0;
};

std::optional<uint32_t> parse_number(std::string_view v)
{
    int base = 10;
    if (v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
        base = 16;
        v.remove_prefix(2);
    }
    uint32_t out = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out, base);
    if (ec != std::errc() || end != v.data() + v.size())
        return std::nullopt;
    return out;
}

void set_error(std::string *error, std::string message)
{
    if (error)
        *error = std::move(message);
}

std::string_view line_starting_with(std::string_view text, std::string_view prefix)
{
    size_t at = 0;
    while (at < text.size()) {
        size_t end = text.find('\n', at);
        if (end == std::string_view::npos)
            end = text.size();
        std::string_view line = text.substr(at, end - at);
        if (line.starts_with(prefix))
            return line.substr(prefix.size());
        at = end + 1;
    }
    return {};
}

// True if the format's field list has a field named `reason`.
bool has_reason_field(std::string_view text)
{
    size_t at = 0;
    while ((at = text.find("field:", at)) != std::string_view::npos) {
        size_t end = text.find(';', at);
        if (end == std::string_view::npos)
            return false;
        std::string_view decl = Cursor::trim(text.substr(at, end - at));
        at = end;
        // "field:enum sk_rst_reason reason" -> last word is the field name.
        size_t space = decl.find_last_of(" \t*");
        if (space != std::string_view::npos && decl.substr(space + 1) == "reason")
            return true;
    }
    return false;
}


// In the enum's order; Unknown last.
constexpr const char *kReasonNames[] = {
    "NOT_SPECIFIED",       "NO_SOCKET",           "TCP_INVALID_ACK_SEQUENCE", "TCP_RFC7323_PAWS",
    "TCP_TOO_OLD_ACK",     "TCP_ACK_UNSENT_DATA", "TCP_FLAGS",                "TCP_OLD_ACK",
    "TCP_ABORT_ON_DATA",   "TCP_TIMEWAIT_SOCKET", "INVALID_SYN",              "TCP_ABORT_ON_CLOSE",
    "TCP_ABORT_ON_LINGER", "TCP_ABORT_ON_MEMORY", "TCP_STATE",                "TCP_KEEPALIVE_TIMEOUT",
    "TCP_DISCONNECT_WITH_DATA", "MPTCP_RST_EUNSPEC", "MPTCP_RST_EMPTCP",      "MPTCP_RST_ERESOURCE",
    "MPTCP_RST_EPROHIBIT", "MPTCP_RST_EWQ2BIG",   "MPTCP_RST_EBADPERF",       "MPTCP_RST_EMIDDLEBOX",
    "ERROR",               "UNKNOWN",
};
static_assert(std::size(kReasonNames) == static_cast<size_t>(ResetReason::Unknown) + 1,
              "one name per ResetReason");

constexpr std::string_view kBtfPrefix = "SK_RST_REASON_";

// Numbers past this are no reason the kernel sends (it has about 25): a
// table indexed by them would only waste memory.
constexpr uint32_t kMaxCode = 255;

}  // namespace

const char *reset_reason_name(ResetReason reason)
{
    const auto i = static_cast<size_t>(reason);
    return i < std::size(kReasonNames) ? kReasonNames[i] : "UNKNOWN";
}

std::optional<ResetReason> reset_reason_from_name(std::string_view name)
{
    if (name.starts_with(kBtfPrefix))
        name.remove_prefix(kBtfPrefix.size());
    for (size_t i = 0; i < std::size(kReasonNames) - 1; i++)
        if (name == kReasonNames[i])
            return static_cast<ResetReason>(i);
    return std::nullopt;
}

void ResetReasonTable::add(uint32_t code, std::string_view kernel_name)
{
    if (kernel_name.starts_with(kBtfPrefix))
        kernel_name.remove_prefix(kBtfPrefix.size());
    if (kernel_name == "MAX")
        return;  // the enum's end marker, never a reason sent
    auto reason = reset_reason_from_name(kernel_name);
    if (!reason || code > kMaxCode) {
        unknown_names_.push_back(std::string(kernel_name) + "=" + std::to_string(code));
        return;
    }
    if (code >= by_code_.size())
        by_code_.resize(code + 1, ResetReason::Unknown);
    by_code_[code] = *reason;
    known_++;
}

ResetReason ResetReasonTable::reason(uint32_t code) const
{
    return code < by_code_.size() ? by_code_[code] : ResetReason::Unknown;
}

std::map<uint32_t, std::string> ResetReasonTable::names() const
{
    std::map<uint32_t, std::string> names;
    for (uint32_t code = 0; code < by_code_.size(); code++)
        if (by_code_[code] != ResetReason::Unknown)
            names[code] = reset_reason_name(by_code_[code]);
    return names;
}

ResetReasonTable ResetReasonTable::from_enumerators(const std::vector<std::pair<std::string, uint32_t>> &enumerators)
{
    ResetReasonTable table;
    for (const auto &[name, code] : enumerators)
        table.add(code, name);
    return table;
}

std::optional<ResetReasonTable> ResetReasonTable::parse_format(std::string_view format_text, std::string *error)
{
    std::string_view fmt = line_starting_with(format_text, "print fmt:");
    if (fmt.empty()) {
        set_error(error, "no 'print fmt:' line: not a tracepoint format file");
        return std::nullopt;
    }

    // The print fmt holds several __print_symbolic() calls (state, family,
    // reason). Only the one whose first argument is REC->reason is ours.
    std::optional<size_t> reason_list;
    for (size_t at = 0; (at = fmt.find("__print_symbolic(", at)) != std::string_view::npos;) {
        at += std::string_view("__print_symbolic(").size();
        Cursor c(fmt.substr(at));
        auto arg = c.until(',');
        if (arg && *arg == "REC->reason") {
            reason_list = at + c.pos() + 1;  // just past the comma
            break;
        }
    }

    ResetReasonTable table;
    bool numbered = false;
    if (!reason_list) {
        if (has_reason_field(format_text)) {
            set_error(error, "tracepoint has a reason field but no __print_symbolic(REC->reason, ...)");
            return std::nullopt;
        }
        return table;  // kernel before 6.10: resets carry no reason
    }

    Cursor c(fmt.substr(*reason_list));
    for (;;) {
        if (!c.eat('{')) {
            set_error(error, "malformed reason list in print fmt: expected '{'");
            return std::nullopt;
        }
        auto value = c.until(',');
        if (!value) {
            set_error(error, "malformed reason list in print fmt: missing ','");
            return std::nullopt;
        }
        c.eat(',');
        auto name = c.quoted();
        if (!name || !c.eat('}')) {
            set_error(error, "malformed reason list in print fmt: bad name after " +
                                 std::string(*value));
            return std::nullopt;
        }
        // The kernel substitutes numbers for enum names that are declared
        // with TRACE_DEFINE_ENUM; an unresolved symbol tells us nothing.
        if (auto number = parse_number(*value)) {
            table.add(*number, *name);
            numbered = true;
        }
        if (c.eat(')'))
            break;
        if (!c.eat(',')) {
            set_error(error, "malformed reason list in print fmt: expected ',' or ')'");
            return std::nullopt;
        }
    }
    if (!numbered) {
        set_error(error, "reason list in print fmt has no numeric values");
        return std::nullopt;
    }
    return table;
}

}  // namespace rstwatch
