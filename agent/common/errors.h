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

// Runs fn and returns what it returns; a FatalError from it becomes the
// fault of one option: "--store: cannot open ...". The checks word their
// errors for any caller; the command line knows which option named the path.
template <typename Fn>
auto as_option(const char *option, Fn &&fn) -> decltype(fn())
{
    try {
        return fn();
    } catch (const FatalError &e) {
        throw FatalError(std::string(option) + ": " + e.what(), e.hint());
    }
}

}  // namespace rstwatch
