// Fatal errors travel up to main() as exceptions and become one clear
// message and a non-zero exit; recoverable ones are returned.
#pragma once

#include <stdexcept>
#include <string>

namespace rstwatch {

class FatalError : public std::runtime_error {
public:
    // `what` names the problem, `hint` says what a person can do about it.
    FatalError(const std::string &what, std::string hint = {})
        : std::runtime_error(what), hint_(std::move(hint)) {}
    const std::string &hint() const { return hint_; }

private:
    std::string hint_;
};

}  // namespace rstwatch
