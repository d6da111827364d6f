#include "outputs/metrics.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <fstream>


namespace rstwatch {

namespace {

std::string escape_label(const std::string &v)
{
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"')
            out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

std::string number(double v)
{
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    return buf;
}

void header(std::string &out, const char *name, const char *type, const char *help)
{
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

void Metrics::add(const Event &e)
{
    std::lock_guard lock(mu_);
    if (std::holds_alternative<OomEvent>(e)) {
        ++oom_kills_;
        return;
    }
    const auto &r = std::get<ResetEvent>(e);
    // Only an owned upstream connection's remote is an upstream; anything
    // else (clients, the far side of a flow) would be unbounded.
    std::string upstream;
    if (r.owner_known && r.role == Role::Upstream) {
        if (upstreams_.count(r.remote) || upstreams_.size() < kMaxUpstreams) {
            upstreams_.insert(r.remote);
            upstream = r.remote;
        } else {
            upstream = "other";
        }
    }
    std::string cause = r.diagnosis ? to_string(r.diagnosis->cause) : "undiagnosed";
    ++resets_[{to_string(r.direction), to_string(r.role), upstream, cause}];

    if (r.owner_known && r.role == Role::Upstream && r.idle_ms) {
        double s = std::max(0.0, *r.idle_ms / 1000.0);
        ++idle_count_;
        idle_sum_s_ += s;
        for (size_t i = 0; i < kIdleBuckets.size(); ++i) {
            if (s <= kIdleBuckets[i]) {
                ++idle_buckets_[i];
                break;
            }
        }
    }
}

void Metrics::set_lost(const LossCounts &lost)
{
    std::lock_guard lock(mu_);
    lost_ = lost;
}

void Metrics::set_ring_buffer_fill(double ratio)
{
    std::lock_guard lock(mu_);
    ring_fill_ = ratio;
}

LossCounts Metrics::lost() const
{
    std::lock_guard lock(mu_);
    return lost_;
}

std::string Metrics::render(uint64_t rss_bytes) const
{
    std::lock_guard lock(mu_);
    std::string out;
    header(out, "rstwatch_resets_total", "counter",
           "TCP resets on tracked connections, by direction, role, upstream (role upstream only) and diagnosed cause.");
    for (const auto &[key, n] : resets_) {
        const auto &[direction, role, upstream, cause] = key;
        out += "rstwatch_resets_total{direction=\"" + direction + "\",role=\"" + role + "\",upstream=\"" +
               escape_label(upstream) + "\",cause=\"" + cause + "\"} " + std::to_string(n) + "\n";
    }
    header(out, "rstwatch_oom_kills_total", "counter", "OOM kills seen by the agent.");
    out += "rstwatch_oom_kills_total " + std::to_string(oom_kills_) + "\n";
    header(out, "rstwatch_lost_events_total", "counter",
           "Events lost: ring_buffer (BPF could not reserve), consumer (undecodable), store (not written).");
    out += "rstwatch_lost_events_total{where=\"ring_buffer\"} " + std::to_string(lost_.ring_buffer_full) + "\n";
    out += "rstwatch_lost_events_total{where=\"consumer\"} " + std::to_string(lost_.decode_errors) + "\n";
    out += "rstwatch_lost_events_total{where=\"store\"} " + std::to_string(lost_.not_stored.value_or(0)) + "\n";
    header(out, "rstwatch_unresolved_owners_total", "counter",
           "Resets on sockets whose file's credentials no process held any more (its process changed them, or "
           "left the socket to another): their owner is unknown, and unless tracking everything they go unseen.");
    out += "rstwatch_unresolved_owners_total " + std::to_string(lost_.owners_unresolved) + "\n";
    header(out, "rstwatch_unrecorded_endpoints_total", "counter",
           "Listening sockets of tracked processes not recorded because their BPF table was full: resets of "
           "client connections closed by their worker on such a listener go unseen.");
    out += "rstwatch_unrecorded_endpoints_total " + std::to_string(lost_.listeners_dropped) + "\n";
    header(out, "rstwatch_ring_buffer_fill_ratio", "gauge",
           "Highest share of the BPF ring buffer holding unconsumed records that the agent found in the last "
           "10-20 s (it wakes early at an eighth; a full ring loses events).");
    out += "rstwatch_ring_buffer_fill_ratio " + number(ring_fill_) + "\n";
    header(out, "rstwatch_agent_rss_bytes", "gauge", "Resident set size of the agent.");
    out += "rstwatch_agent_rss_bytes " + std::to_string(rss_bytes) + "\n";
    header(out, "rstwatch_reset_idle_seconds", "histogram",
           "Idle time of upstream connections before they were reset.");
    uint64_t cumulative = 0;
    for (size_t i = 0; i < kIdleBuckets.size(); ++i) {
        cumulative += idle_buckets_[i];
        char le[32];
        std::snprintf(le, sizeof(le), "%g", kIdleBuckets[i]);
        out += std::string("rstwatch_reset_idle_seconds_bucket{le=\"") + le + "\"} " +
               std::to_string(cumulative) + "\n";
    }
    out += "rstwatch_reset_idle_seconds_bucket{le=\"+Inf\"} " + std::to_string(idle_count_) + "\n";
    out += "rstwatch_reset_idle_seconds_sum " + number(idle_sum_s_) + "\n";
    out += "rstwatch_reset_idle_seconds_count " + std::to_string(idle_count_) + "\n";
    return out;
}

uint64_t self_rss_bytes()
{
    std::ifstream in("/proc/self/statm");
    uint64_t size = 0, resident = 0;
    if (!(in >> size >> resident))
        return 0;
    return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

bool is_loopback_host(const std::string &host)
{
    in_addr a4{};
    if (inet_pton(AF_INET, host.c_str(), &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return host == "::1" || host == "localhost";
}

std::optional<ListenAddress> parse_listen_address(const std::string &text, std::string *error)
{
    auto fail = [&](const std::string &why) -> std::optional<ListenAddress> {
        if (error)
            *error = "'" + text + "': " + why + " (want 127.0.0.1:9477, [::1]:9477 or a port)";
        return std::nullopt;
    };
    std::string host = "127.0.0.1", port_text = text;
    if (!text.empty() && text[0] == '[') {
        auto close = text.find("]:");
        if (close == std::string::npos)
            return fail("no ]:port");
        host = text.substr(1, close - 1);
        port_text = text.substr(close + 2);
        in6_addr a6{};
        if (inet_pton(AF_INET6, host.c_str(), &a6) != 1)
            return fail("not an IPv6 address");
    } else if (auto colon = text.rfind(':'); colon != std::string::npos) {
        host = text.substr(0, colon);
        port_text = text.substr(colon + 1);
        in_addr a4{};
        if (host != "localhost" && inet_pton(AF_INET, host.c_str(), &a4) != 1)
            return fail("not an IPv4 address");
    }
    if (port_text.empty() || port_text.find_first_not_of("0123456789") != std::string::npos ||
        port_text.size() > 5 || std::stoul(port_text) > 65535)
        return fail("bad port");
    return ListenAddress{host, static_cast<uint16_t>(std::stoul(port_text))};
}

}  // namespace rstwatch
