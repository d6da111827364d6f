// README.md's samples are real output: a test prints it from a recorded run
// and compares it with the block between two markers, or writes it there
// with RSTWATCH_UPDATE_README=1.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace rstwatch::readme_sample {

inline std::string read_text(const std::string &path)
{
    std::ifstream in(path);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// `sample` must be what the README holds between `begin` and `end`;
// `how_to_update` says which test to run with RSTWATCH_UPDATE_README=1.
inline void expect_readme_block(const std::string &readme_path, const std::string &begin, const std::string &end,
                                const std::string &sample, const std::string &how_to_update)
{
    std::string readme = read_text(readme_path);
    const size_t at = readme.find(begin);
    const size_t until = readme.find(end);
    ASSERT_NE(at, std::string::npos) << readme_path << " has no " << begin;
    ASSERT_NE(until, std::string::npos) << readme_path << " has no " << end;
    const size_t from = at + begin.size();
    if (std::getenv("RSTWATCH_UPDATE_README")) {
        readme.replace(from, until - from, sample);
        std::ofstream(readme_path) << readme;
        return;
    }
    EXPECT_EQ(readme.substr(from, until - from), sample)
        << readme_path << "'s sample is not what rstwatch prints today; to take the new output: "
        << "RSTWATCH_UPDATE_README=1 " << how_to_update;
}

}  // namespace rstwatch::readme_sample
