// TCP states as the kernel numbers them (include/net/tcp_states.h; the
// numbering has been stable since 2.6, and only grows at the end).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rstwatch {

// A value past the last one named here (a newer kernel's) is kept as its
// number and shown as "STATE_<n>".
enum class TcpState : uint8_t {
    Unknown = 0,  // not a kernel state: the record had none
    Established = 1,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    BoundInactive,  // bound, never listened or connected (newer kernels)
};

// "ESTABLISHED", "SYN_SENT", ..., "STATE_<n>" for a number not named above.
std::string tcp_state_name(TcpState state);
// The inverse, "STATE_<n>" included; nullopt for anything else.
std::optional<TcpState> tcp_state_from_name(std::string_view name);

}  // namespace rstwatch
