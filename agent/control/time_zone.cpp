#include "control/time_zone.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>

namespace rstwatch {

namespace {

std::string tz_database()
{
    const char *dir = std::getenv("TZDIR");
    return dir && *dir ? dir : "/usr/share/zoneinfo";
}

bool is_utc(const std::string &zone) { return zone == "UTC" || zone == "Etc/UTC"; }

// IANA names: Area/Location, letters, digits, _ + -. Nothing that climbs
// out of the database or names a file elsewhere.
bool looks_like_zone_name(const std::string &zone)
{
    if (zone.empty() || zone.size() > 255 || zone.front() == '/' || zone.front() == '-')
        return false;
    if (zone.find("..") != std::string::npos)
        return false;
    return std::all_of(zone.begin(), zone.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '_' || c == '+' || c == '-';
    });
}

long utc_offset_at(int64_t utc_second)
{
    std::time_t when = static_cast<std::time_t>(utc_second);
    std::tm tm{};
    localtime_r(&when, &tm);
    return tm.tm_gmtoff;
}

bool shows(int64_t utc_second, const CivilTime &t)
{
    std::time_t when = static_cast<std::time_t>(utc_second);
    std::tm tm{};
    localtime_r(&when, &tm);
    return tm.tm_year == t.year - 1900 && tm.tm_mon == t.month - 1 && tm.tm_mday == t.day && tm.tm_hour == t.hour &&
           tm.tm_min == t.minute && tm.tm_sec == t.second;
}

}  // namespace

std::string time_zone_problem(const std::string &zone)
{
    if (is_utc(zone))
        return {};
    if (!looks_like_zone_name(zone))
        return "'" + zone + "' is not a time zone name such as Europe/Berlin, America/New_York or UTC";
    const std::filesystem::path file = std::filesystem::path(tz_database()) / zone;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(file, ec))
        return "'" + zone + "' is not a time zone of the tz database (" + tz_database() +
               "; Debian's tzdata package)";
    char magic[4] = {};
    std::ifstream(file, std::ios::binary).read(magic, sizeof(magic));
    if (std::string(magic, sizeof(magic)) != "TZif")
        return "'" + zone + "': " + file.string() + " is not a tz database file";
    return {};
}

void use_time_zone(const std::string &zone)
{
    // ":" asks glibc for the file; it knows UTC without one.
    if (!zone.empty())
        setenv("TZ", (":" + zone).c_str(), 1);
    tzset();
}

std::vector<int64_t> local_to_utc(const CivilTime &t)
{
    // The UTC second is this minus the zone's offset then, which is one of
    // the offsets in force a day either side (zones change at most once a day).
    const int64_t as_if_utc = seconds_as_if_utc(t);
    std::vector<int64_t> out;
    for (int64_t probe : {as_if_utc - 86400, as_if_utc + 86400}) {
        const int64_t candidate = as_if_utc - utc_offset_at(probe);
        if (shows(candidate, t) && std::find(out.begin(), out.end(), candidate) == out.end())
            out.push_back(candidate);
    }
    if (out.empty())
        out.push_back(as_if_utc - utc_offset_at(as_if_utc - 86400));
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace rstwatch
