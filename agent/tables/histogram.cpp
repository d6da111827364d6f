#include "tables/histogram.h"

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <cstdio>
#include <limits>

namespace rstwatch {

size_t Log2Histogram::bucket_of(uint64_t value)
{
    // floor(log2(value)), with 0 sharing bucket 0 with 1.
    return value == 0 ? 0 : static_cast<size_t>(std::bit_width(value) - 1);
}

uint64_t Log2Histogram::bucket_low(size_t bucket)
{
    return bucket == 0 ? 0 : uint64_t{1} << bucket;
}

uint64_t Log2Histogram::bucket_high(size_t bucket)
{
    if (bucket + 1 >= kBuckets)
        return std::numeric_limits<uint64_t>::max();
    return (uint64_t{1} << (bucket + 1)) - 1;
}

void Log2Histogram::add(uint64_t value)
{
    ++buckets_[bucket_of(value)];
    ++total_;
}

int Log2Histogram::highest_bucket() const
{
    for (int i = static_cast<int>(kBuckets) - 1; i >= 0; --i)
        if (buckets_[i] != 0)
            return i;
    return -1;
}

std::string Log2Histogram::render(std::string_view label) const
{
    int top = highest_bucket();
    if (top < 0)
        return {};
    uint64_t max_count = *std::max_element(buckets_.begin(), buckets_.end());
    // bcc widens the range columns (and halves the bar) past 2^32.
    bool wide = top > 32;
    int range_width = wide ? 20 : 10;
    int bar_width = wide ? 20 : 40;

    std::string out;
    char line[256];
    std::snprintf(line, sizeof(line), "%*s%-*.*s : count    distribution\n", wide ? 15 : 5, "",
                  wide ? 29 : 19, static_cast<int>(label.size()), label.data());
    out += line;
    for (int i = 0; i <= top; ++i) {
        uint64_t n = buckets_[i];
        int stars = static_cast<int>(n * bar_width / max_count);
        std::snprintf(line, sizeof(line), "%*" PRIu64 " -> %-*" PRIu64 " : %-8" PRIu64 " |%s%s|\n",
                      range_width, bucket_low(i), range_width, bucket_high(i), n,
                      std::string(stars, '*').c_str(),
                      std::string(bar_width - stars, ' ').c_str());
        out += line;
    }
    return out;
}

nlohmann::json Log2Histogram::to_json() const
{
    nlohmann::json out = nlohmann::json::array();
    for (int i = 0; i <= highest_bucket(); ++i)
        out.push_back({{"low", bucket_low(i)}, {"high", bucket_high(i)}, {"count", buckets_[i]}});
    return out;
}

}  // namespace rstwatch
