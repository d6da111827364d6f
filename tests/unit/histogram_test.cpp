// Log2Histogram: bucket boundaries and bcc's drawing.
#include <gtest/gtest.h>

#include <limits>

#include "tables/histogram.h"

using rstwatch::Log2Histogram;

TEST(Log2Histogram, BucketBoundaries)
{
    EXPECT_EQ(Log2Histogram::bucket_of(0), 0u);
    EXPECT_EQ(Log2Histogram::bucket_of(1), 0u);
    EXPECT_EQ(Log2Histogram::bucket_of(2), 1u);
    EXPECT_EQ(Log2Histogram::bucket_of(3), 1u);
    EXPECT_EQ(Log2Histogram::bucket_of(4), 2u);
    EXPECT_EQ(Log2Histogram::bucket_of(7), 2u);
    EXPECT_EQ(Log2Histogram::bucket_of(8), 3u);
    EXPECT_EQ(Log2Histogram::bucket_of(5000), 12u);  // 4096 -> 8191
    EXPECT_EQ(Log2Histogram::bucket_of(std::numeric_limits<uint64_t>::max()), 63u);

    EXPECT_EQ(Log2Histogram::bucket_low(0), 0u);
    EXPECT_EQ(Log2Histogram::bucket_high(0), 1u);
    EXPECT_EQ(Log2Histogram::bucket_low(2), 4u);
    EXPECT_EQ(Log2Histogram::bucket_high(2), 7u);
    EXPECT_EQ(Log2Histogram::bucket_high(63), std::numeric_limits<uint64_t>::max());
}

TEST(Log2Histogram, CountsAndJson)
{
    Log2Histogram h;
    for (uint64_t v : {0, 1, 2, 3, 3, 40})
        h.add(v);
    EXPECT_EQ(h.count(), 6u);
    EXPECT_EQ(h.bucket_count(0), 2u);
    EXPECT_EQ(h.bucket_count(1), 3u);
    EXPECT_EQ(h.bucket_count(5), 1u);  // 32 -> 63

    nlohmann::json j = h.to_json();
    ASSERT_EQ(j.size(), 6u);  // up to the highest non-empty bucket, gaps included
    EXPECT_EQ(j[0], (nlohmann::json{{"low", 0}, {"high", 1}, {"count", 2}}));
    EXPECT_EQ(j[2], (nlohmann::json{{"low", 4}, {"high", 7}, {"count", 0}}));
    EXPECT_EQ(j[5], (nlohmann::json{{"low", 32}, {"high", 63}, {"count", 1}}));
}

TEST(Log2Histogram, RendersLikeBcc)
{
    Log2Histogram h;
    for (uint64_t v : {0, 1, 2, 3, 3, 5})
        h.add(v);
    EXPECT_EQ(h.render("idle_ms"),
              "     idle_ms             : count    distribution\n"
              "         0 -> 1          : 2        |**************************              |\n"
              "         2 -> 3          : 3        |****************************************|\n"
              "         4 -> 7          : 1        |*************                           |\n");
}

TEST(Log2Histogram, WideValuesUseBccWideLayout)
{
    Log2Histogram h;
    h.add(uint64_t{1} << 40);
    std::string out = h.render("x");
    // Past 2^32 bcc widens the range columns to 20 and halves the bar.
    EXPECT_EQ(out.substr(0, out.find('\n')),
              std::string(15, ' ') + "x" + std::string(28, ' ') + " : count    distribution");
    EXPECT_NE(out.find("       1099511627776 -> 2199023255551        : 1        |" +
                       std::string(20, '*') + "|\n"),
              std::string::npos)
        << out;
}

TEST(Log2Histogram, EmptyDrawsNothing)
{
    Log2Histogram h;
    EXPECT_EQ(h.count(), 0u);
    EXPECT_EQ(h.render("idle_ms"), "");
    EXPECT_TRUE(h.to_json().is_array());
    EXPECT_TRUE(h.to_json().empty());
}
