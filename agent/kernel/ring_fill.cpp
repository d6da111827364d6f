#include "kernel/ring_fill.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

namespace rstwatch {

RingFill::RingFill(int ring_fd, uint64_t size_bytes) : size_(size_bytes)
{
    page_size_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    // Page 0 holds the consumer position, page 1 the producer position.
    void *p = mmap(nullptr, 2 * page_size_, PROT_READ, MAP_SHARED, ring_fd, 0);
    if (p != MAP_FAILED && size_ > 0)
        pages_ = p;
}

RingFill::~RingFill()
{
    if (pages_)
        munmap(pages_, 2 * page_size_);
}

double RingFill::ratio() const
{
    if (!pages_)
        return 0;
    auto *base = static_cast<const char *>(pages_);
    uint64_t cons = std::atomic_ref(*const_cast<uint64_t *>(reinterpret_cast<const uint64_t *>(base))).load(std::memory_order_acquire);
    uint64_t prod = std::atomic_ref(*const_cast<uint64_t *>(reinterpret_cast<const uint64_t *>(base + page_size_)))
                        .load(std::memory_order_acquire);
    if (prod <= cons)
        return 0;
    return std::min(1.0, static_cast<double>(prod - cons) / static_cast<double>(size_));
}

}  // namespace rstwatch
