// The time zone nginx's error-log times are read in: the host's (TZ, else
// /etc/localtime, as nginx itself has it), or one named by --tz. Zones come
// from the system's tz database through libc: GCC 12's libstdc++ has no
// std::chrono::zoned_time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "explain/error_log_line.h"

namespace rstwatch {

// "" when `zone` is UTC or a zone of the tz database (Europe/Berlin), else
// what is wrong with it, for a person to read.
std::string time_zone_problem(const std::string &zone);

// Makes `zone` the process's local time (TZ); "" keeps the host's.
void use_time_zone(const std::string &zone);

// A local time of that zone as the UTC seconds it may be: two in the hour
// that a change back from daylight-saving time repeats; in the hour a change
// to it skips (which no clock shows), the one with the offset from before.
std::vector<int64_t> local_to_utc(const CivilTime &t);

}  // namespace rstwatch
