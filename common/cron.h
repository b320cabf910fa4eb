// Standard 5-field cron expressions evaluated in a named time zone (schedules such as
// "forge schedule create --cron '0 2 * * *'").
#ifndef FORGE_COMMON_CRON_H_
#define FORGE_COMMON_CRON_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"

namespace forge {

// A parsed cron schedule: "minute hour day-of-month month day-of-week".
//
// Fields: minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or JAN-DEC, day-of-week 0-7
// (0 and 7 are Sunday) or SUN-SAT; names are case-insensitive. Each field is a comma list of
// *, N, A-B, */S, A-B/S or N/S (N/S means N-max/S, as in Vixie cron). Macros: @yearly
// (@annually), @monthly, @weekly, @daily (@midnight), @hourly. Everything else (seconds,
// years, L/W/#/?, @reboot, wrap-around ranges such as 22-2) is rejected.
//
// Day matching follows Vixie cron: when both day-of-month and day-of-week are restricted a day
// matches if EITHER matches; when one of them is unrestricted both must match. As in Vixie
// and cronie, a field counts as unrestricted when its text starts with '*', so "*/2" is
// unrestricted for this rule (but still only matches odd days).
//
// Time zones: the fields are matched against the civil (wall-clock) time of the zone, and
// each matching civil minute maps to one instant:
//   * a civil time skipped by a forward transition (02:30 on the spring-forward day in
//     Europe/Paris) fires at the transition, the first valid instant after the gap (Vixie
//     behaviour; systemd would skip it). Several skipped minutes, and a matching minute at the
//     end of the gap, map to that same instant and fire there once;
//   * a civil time repeated by a backward transition fires once, at its FIRST occurrence.
// So fire instants never repeat and there is exactly one fire per slot.
//
// Immutable after Parse(); safe to use from several threads.
class CronSchedule {
 public:
  // Parses `expr` and loads `time_zone` ("UTC" or an IANA name such as "Europe/Paris", from
  // /usr/share/zoneinfo; "localtime", paths and "Fixed/..." names are refused). Errors are
  // INVALID_ARGUMENT and name the field, the value and the accepted forms. Expressions that can
  // never fire (e.g. "0 0 30 2 *": February 30th) are rejected here, so Next() and Previous()
  // always find a fire time.
  static absl::StatusOr<CronSchedule> Parse(absl::string_view expr,
                                            absl::string_view time_zone = "UTC");

  // The first fire time strictly after `after`. Walks month, day, hour and minute skipping
  // non-matching units, and is bounded: any schedule Parse() accepts fires within a 400-year
  // Gregorian cycle. Infinite inputs are returned unchanged.
  absl::Time Next(absl::Time after) const;

  // The latest fire time <= `at_or_before` (the start of the current slot). Infinite inputs
  // are returned unchanged. For finite t: Previous(Next(t)) == Next(t) and
  // Next(Previous(t)) > t.
  absl::Time Previous(absl::Time at_or_before) const;

  // The expression as given (surrounding whitespace removed; macros not expanded).
  const std::string& expression() const { return expression_; }
  // The time zone name as given.
  const std::string& time_zone() const { return time_zone_name_; }

  // A short English description, e.g. "at 02:00 every day (Europe/Paris)".
  std::string Describe() const;

 private:
  CronSchedule() = default;

  bool MatchesDay(absl::CivilDay day) const;
  // The first matching civil minute >= `from`, or nullopt past the end of `last_year`.
  std::optional<absl::CivilMinute> NextMatch(absl::CivilMinute from,
                                             absl::civil_year_t last_year) const;
  // The last matching civil minute <= `from`, or nullopt before the start of `first_year`.
  std::optional<absl::CivilMinute> PrevMatch(absl::CivilMinute from,
                                             absl::civil_year_t first_year) const;
  // The instant a matching civil minute fires at (see the DST rules above).
  absl::Time FireTime(absl::CivilMinute minute) const;

  // All constant after Parse().
  std::string expression_;
  std::string time_zone_name_;
  absl::TimeZone zone_;
  std::array<std::string, 5> fields_;  // the five field texts, macros expanded
  uint64_t minutes_ = 0;               // bit m: minute m
  uint32_t hours_ = 0;                 // bit h: hour h
  uint32_t days_of_month_ = 0;         // bit d: day d (1-31)
  uint32_t months_ = 0;                // bit m: month m (1-12)
  uint32_t days_of_week_ = 0;          // bit w: weekday w (0 = Sunday .. 6)
  bool dom_unrestricted_ = false;      // day-of-month text starts with '*'
  bool dow_unrestricted_ = false;      // day-of-week text starts with '*'
};

}  // namespace forge

#endif  // FORGE_COMMON_CRON_H_
