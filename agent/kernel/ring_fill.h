// How full the BPF ring buffer is, for rstwatch_ring_buffer_fill_ratio.
// libbpf 1.1 (Debian 12) has no ring__avail_data_size(), so this maps the
// ring's two position pages read-only (a second, independent mapping of
// the map; libbpf's own consumer is unaffected) and reads them.
#pragma once

#include <cstddef>
#include <cstdint>

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

}  // namespace rstwatch
