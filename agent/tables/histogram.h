// A power-of-two histogram drawn the way bcc's tools draw them
// (print_log2_hist in libbpf-tools/trace_helpers.c), so that people who
// know `biolatency` read it at a glance:
//
//      idle_ms             : count    distribution
//          0 -> 1          : 2        |**********                              |
//          2 -> 3          : 8        |****************************************|
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace rstwatch {

class Log2Histogram {
public:
    // Bucket i holds [2^i, 2^(i+1) - 1], except bucket 0, which holds 0 and 1.
    static constexpr size_t kBuckets = 64;

    void add(uint64_t value);
    uint64_t count() const { return total_; }
    uint64_t bucket_count(size_t bucket) const { return buckets_.at(bucket); }
    static size_t bucket_of(uint64_t value);
    static uint64_t bucket_low(size_t bucket);
    static uint64_t bucket_high(size_t bucket);

    // Header and one line per bucket up to the highest non-empty one;
    // "" when nothing was added (as bcc prints nothing).
    std::string render(std::string_view label) const;
    // [{"low":0,"high":1,"count":2}, ...], the same buckets as render().
    nlohmann::json to_json() const;

private:
    // Index of the highest non-empty bucket, or -1.
    int highest_bucket() const;

    std::array<uint64_t, kBuckets> buckets_{};
    uint64_t total_ = 0;
};

}  // namespace rstwatch
