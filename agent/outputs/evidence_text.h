// The diagnosis in words: what the text line's "why:" and "fix:" and the
// JSON's "evidence" and "hint" say. The diagnosis engine concludes in codes
// and numbers (events/evidence.h); the words are made here, once per code.
#pragma once

#include <string>

#include "events/evidence.h"

namespace rstwatch {

std::string evidence_text(const Evidence &evidence);
// "" for HintCode::None.
std::string hint_text(const Hint &hint);

// A reset's reason as the outputs show it: the kernel's name, REASON_<n>
// for a number this build cannot name, "" for none.
std::string reason_text(const std::optional<ResetReason> &reason, const std::optional<uint32_t> &code);

}  // namespace rstwatch
