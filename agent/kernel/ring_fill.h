// How full the BPF ring buffer is, for rstwatch_ring_buffer_fill_ratio.
// libbpf 1.1 (Debian 12) has no ring__avail_data_size(), so this maps the
// ring's two position pages read-only (a second, independent mapping of
// the map; libbpf's own consumer is unaffected) and reads them.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace rstwatch {

class RingFill {
public:
    // ring_fd: the BPF_MAP_TYPE_RINGBUF map; size_bytes: its max_entries.
    // On failure ratio() is always 0 and ok() false.
    RingFill(int ring_fd, uint64_t size_bytes);
    ~RingFill();
    RingFill(const RingFill &) = delete;
    RingFill &operator=(const RingFill &) = delete;

    bool ok() const { return pages_ != nullptr; }
    // Unconsumed bytes / size, in [0, 1].
    double ratio() const;

private:
    void *pages_ = nullptr;
    size_t page_size_ = 0;
    uint64_t size_ = 0;
};

// How full the BPF ring buffer is, as the consumer finds it: for the
// store's waits, the fill metric and the exit log. Reading it loads the
// producers' position, a cache line they write from other CPUs, so it is
// read at the first record after each wakeup (when the ring is fullest),
// every kEvery records after that, and when the store's queue is full:
// not for every record.
class RingFillWatch {
public:
    void attach(int map_fd, uint64_t bytes) { ring_.emplace(map_fd, bytes); }
    bool readable() const { return ring_ && ring_->ok(); }
    // The fill now; it counts towards the peaks.
    double sample()
    {
        const double fill = ring_ ? ring_->ratio() : 0;
        peak_ = std::max(peak_, fill);
        window_peak_ = std::max(window_peak_, fill);
        return fill;
    }
    void woke() { countdown_ = 0; }
    void took_record()
    {
        if (countdown_-- == 0) {
            sample();
            countdown_ = kEvery - 1;
        }
    }
    // The fullest over this window and the last: what the metric shows.
    double recent_peak(std::chrono::steady_clock::time_point now)
    {
        const double recent = std::max(window_peak_, last_window_peak_);
        if (now - window_start_ >= kWindow) {
            last_window_peak_ = window_peak_;
            window_peak_ = 0;
            window_start_ = now;
        }
        return recent;
    }
    double peak() const { return peak_; }

private:
    static constexpr uint32_t kEvery = 64;  // 12 KiB of records, 0.3% of the default ring
    static constexpr std::chrono::seconds kWindow{10};
    std::optional<RingFill> ring_;
    uint32_t countdown_ = 0;
    double peak_ = 0, window_peak_ = 0, last_window_peak_ = 0;
    std::chrono::steady_clock::time_point window_start_ = std::chrono::steady_clock::now();
};

}  // namespace rstwatch
