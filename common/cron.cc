#include "common/cron.h"

#include <bit>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace forge {
namespace {

// Every (month, day) that exists at all, Feb 29 included, falls on every weekday within one
// 400-year Gregorian cycle, so a schedule Parse() accepts fires within any 401 years.
constexpr absl::civil_year_t kSearchYears = 401;

constexpr absl::string_view kForms =
    "use *, N, A-B, */S, A-B/S, N/S or a comma-separated list of these";

constexpr const char* kMonthNames[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                       "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr const char* kDayNames[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};
constexpr const char* kMonthLongNames[] = {"January",   "February", "March",    "April",
                                           "May",       "June",     "July",     "August",
                                           "September", "October",  "November", "December"};
constexpr const char* kDayLongNames[] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                         "Thursday", "Friday", "Saturday"};
// The longest each month can be (February in a leap year), index 1-12.
constexpr int kMaxDaysInMonth[] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

constexpr uint64_t kAllMinutes = (uint64_t{1} << 60) - 1;
constexpr uint32_t kAllHours = (uint32_t{1} << 24) - 1;
constexpr uint32_t kAllDaysOfMonth = ~uint32_t{1};  // bits 1-31
constexpr uint32_t kAllMonths = ((uint32_t{1} << 13) - 1) & ~uint32_t{1};
constexpr uint32_t kAllDaysOfWeek = (uint32_t{1} << 7) - 1;

struct Field {
  const char* name;
  int min;
  int max;
  const char* const* names;  // nullptr, or the names of min..min+num_names-1
  int num_names;
  const char* name_forms;  // appended to syntax errors when names are accepted
};

constexpr Field kMinuteField = {"minute", 0, 59, nullptr, 0, ""};
constexpr Field kHourField = {"hour", 0, 23, nullptr, 0, ""};
constexpr Field kDomField = {"day-of-month", 1, 31, nullptr, 0, ""};
constexpr Field kMonthField = {"month", 1, 12, kMonthNames, 12, "; names JAN-DEC"};
constexpr Field kDowField = {"day-of-week", 0, 7,
                             kDayNames,     7, " (0 and 7 are Sunday); names SUN-SAT"};

struct Macro {
  const char* name;
  const char* expansion;
};
constexpr Macro kMacros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

// User text echoed in errors: escaped and bounded.
std::string Quote(absl::string_view text) {
  constexpr size_t kMax = 64;
  if (text.size() <= kMax) return absl::StrCat("'", absl::CHexEscape(text), "'");
  return absl::StrCat("'", absl::CHexEscape(text.substr(0, kMax - 3)), "...'");
}

absl::Status SyntaxError(const Field& field, absl::string_view text) {
  return absl::InvalidArgumentError(absl::StrCat("cron: ", field.name, " field ", Quote(text),
                                                 " is not valid; ", kForms, field.name_forms));
}

bool AllDigits(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// One value of a field: a number in range, or a name where the field has names.
absl::StatusOr<int> ParseValue(const Field& field, absl::string_view field_text,
                               absl::string_view token) {
  if (AllDigits(token)) {
    int value = 0;
    if (token.size() > 4 || !absl::SimpleAtoi(token, &value) || value < field.min ||
        value > field.max) {
      return absl::InvalidArgumentError(absl::StrFormat("cron: %s field %s is out of range %d-%d",
                                                        field.name, Quote(token), field.min,
                                                        field.max));
    }
    return value;
  }
  for (int i = 0; i < field.num_names; ++i) {
    if (absl::EqualsIgnoreCase(token, field.names[i])) return field.min == 0 ? i : i + 1;
  }
  return SyntaxError(field, field_text);
}

// A field as a bit set (bit v set when value v matches).
absl::StatusOr<uint64_t> ParseField(const Field& field, absl::string_view text) {
  uint64_t bits = 0;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    absl::string_view range = item;
    absl::string_view step_text;
    bool has_step = false;
    if (size_t slash = item.find('/'); slash != absl::string_view::npos) {
      range = item.substr(0, slash);
      step_text = item.substr(slash + 1);
      has_step = true;
    }
    int lo = 0;
    int hi = 0;
    if (range == "*") {
      lo = field.min;
      hi = field.max;
    } else if (size_t dash = range.find('-'); dash != absl::string_view::npos) {
      absl::StatusOr<int> first = ParseValue(field, text, range.substr(0, dash));
      if (!first.ok()) return first.status();
      absl::StatusOr<int> last = ParseValue(field, text, range.substr(dash + 1));
      if (!last.ok()) return last.status();
      lo = *first;
      hi = *last;
      if (lo > hi) {
        return absl::InvalidArgumentError(absl::StrCat(
            "cron: ", field.name, " field ", Quote(item),
            " runs backwards; wrap-around ranges are not supported, split it into two ranges"));
      }
    } else {
      absl::StatusOr<int> value = ParseValue(field, text, range);
      if (!value.ok()) return value.status();
      lo = *value;
      hi = has_step ? field.max : lo;  // N/S means N-max/S, as in Vixie cron
    }
    int step = 1;
    if (has_step) {
      const int max_step = field.max - field.min + 1;
      if (!AllDigits(step_text)) return SyntaxError(field, text);
      if (step_text.size() > 4 || !absl::SimpleAtoi(step_text, &step) || step < 1 ||
          step > max_step) {
        return absl::InvalidArgumentError(
            absl::StrFormat("cron: %s field %s has step %s; the step must be 1-%d", field.name,
                            Quote(item), step_text, max_step));
      }
    }
    for (int v = lo; v <= hi; v += step) bits |= uint64_t{1} << v;
  }
  return bits;
}

int CronWeekday(absl::Weekday weekday) {
  switch (weekday) {
    case absl::Weekday::sunday:
      return 0;
    case absl::Weekday::monday:
      return 1;
    case absl::Weekday::tuesday:
      return 2;
    case absl::Weekday::wednesday:
      return 3;
    case absl::Weekday::thursday:
      return 4;
    case absl::Weekday::friday:
      return 5;
    case absl::Weekday::saturday:
      return 6;
  }
  return 0;
}

bool IsPlausibleZoneName(absl::string_view name) {
  // Only "UTC" and IANA names: no paths, no "localtime" (the host's zone is not a statement
  // of intent), no "file:" or fixed-offset forms that the loader would also accept.
  if (name.empty() || name.front() == '/' || name == "localtime") return false;
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  for (char c : name) {
    unsigned char u = static_cast<unsigned char>(c);
    if (!absl::ascii_isalnum(u) && c != '/' && c != '_' && c != '-' && c != '+') return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<CronSchedule> CronSchedule::Parse(absl::string_view expr,
                                                 absl::string_view time_zone) {
  CronSchedule s;
  s.expression_ = std::string(absl::StripAsciiWhitespace(expr));
  if (s.expression_.empty()) {
    return absl::InvalidArgumentError(
        "cron: expression is empty; use 5 fields 'minute hour day-of-month month day-of-week' "
        "(e.g. '0 2 * * *') or @yearly, @monthly, @weekly, @daily or @hourly");
  }
  absl::string_view fields_text = s.expression_;
  if (s.expression_.front() == '@') {
    fields_text = "";
    for (const Macro& macro : kMacros) {
      if (absl::EqualsIgnoreCase(s.expression_, macro.name)) fields_text = macro.expansion;
    }
    if (fields_text.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cron: unknown macro ", Quote(s.expression_),
                       "; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or "
                       "@hourly"));
    }
  }
  std::vector<absl::string_view> fields =
      absl::StrSplit(fields_text, absl::ByAnyChar(" \t\n\r\v\f"), absl::SkipEmpty());
  if (fields.size() != 5) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cron: expected 5 fields (minute hour day-of-month month day-of-week), got %d in %s; "
        "seconds and years are not supported",
        fields.size(), Quote(s.expression_)));
  }
  const Field* specs[] = {&kMinuteField, &kHourField, &kDomField, &kMonthField, &kDowField};
  uint64_t bits[5];
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<uint64_t> parsed = ParseField(*specs[i], fields[i]);
    if (!parsed.ok()) return parsed.status();
    bits[i] = *parsed;
    s.fields_[i] = std::string(fields[i]);
  }
  s.minutes_ = bits[0];
  s.hours_ = static_cast<uint32_t>(bits[1]);
  s.days_of_month_ = static_cast<uint32_t>(bits[2]);
  s.months_ = static_cast<uint32_t>(bits[3]);
  // Day-of-week 7 is Sunday.
  s.days_of_week_ = static_cast<uint32_t>((bits[4] | (bits[4] >> 7)) & kAllDaysOfWeek);
  s.dom_unrestricted_ = fields[2].front() == '*';
  s.dow_unrestricted_ = fields[4].front() == '*';

  // With the OR rule the day-of-week alone fires every month (each has all seven weekdays).
  // With the AND rule some selected day must exist in some selected month; whether it then
  // falls on a selected weekday only decides which years fire, never whether any does.
  if (s.dom_unrestricted_ || s.dow_unrestricted_) {
    bool possible = false;
    for (int month = 1; month <= 12; ++month) {
      if ((s.months_ >> month & 1) == 0) continue;
      uint32_t days_in_month = (uint32_t{2} << kMaxDaysInMonth[month]) - 2;  // bits 1..max
      if ((s.days_of_month_ & days_in_month) != 0) possible = true;
    }
    if (!possible) {
      return absl::InvalidArgumentError(
          absl::StrCat("cron: ", Quote(s.expression_), " can never fire: day-of-month ",
                       Quote(fields[2]), " does not occur in month ", Quote(fields[3])));
    }
  }

  if (!IsPlausibleZoneName(time_zone) || !absl::LoadTimeZone(std::string(time_zone), &s.zone_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cron: unknown time zone ", Quote(time_zone),
                     "; use 'UTC' or an IANA name such as 'Europe/Paris'"));
  }
  s.time_zone_name_ = std::string(time_zone);
  return s;
}

bool CronSchedule::MatchesDay(absl::CivilDay day) const {
  const bool dom = (days_of_month_ >> day.day() & 1) != 0;
  const bool dow =
      (days_of_week_ >> CronWeekday(absl::GetWeekday(absl::CivilSecond(day))) & 1) != 0;
  if (dom_unrestricted_ || dow_unrestricted_) return dom && dow;
  return dom || dow;
}

std::optional<absl::CivilMinute> CronSchedule::NextMatch(absl::CivilMinute c,
                                                         absl::civil_year_t last_year) const {
  while (c.year() <= last_year) {
    if ((months_ >> c.month() & 1) == 0) {
      c = absl::CivilMinute(absl::CivilMonth(c) + 1);
      continue;
    }
    const absl::CivilDay day(c);
    if (!MatchesDay(day)) {
      c = absl::CivilMinute(day + 1);
      continue;
    }
    const uint32_t hours = hours_ & (~uint32_t{0} << c.hour());
    if (hours == 0) {
      c = absl::CivilMinute(day + 1);
      continue;
    }
    const int hour = std::countr_zero(hours);
    if (hour != c.hour()) c = absl::CivilMinute(c.year(), c.month(), c.day(), hour, 0);
    const uint64_t minutes = minutes_ & (~uint64_t{0} << c.minute());
    if (minutes == 0) {
      c = absl::CivilMinute(absl::CivilHour(c) + 1);
      continue;
    }
    return absl::CivilMinute(c.year(), c.month(), c.day(), hour, std::countr_zero(minutes));
  }
  return std::nullopt;
}

std::optional<absl::CivilMinute> CronSchedule::PrevMatch(absl::CivilMinute c,
                                                         absl::civil_year_t first_year) const {
  while (c.year() >= first_year) {
    if ((months_ >> c.month() & 1) == 0) {
      c = absl::CivilMinute(absl::CivilMonth(c)) - 1;
      continue;
    }
    const absl::CivilDay day(c);
    if (!MatchesDay(day)) {
      c = absl::CivilMinute(day) - 1;
      continue;
    }
    const uint32_t hours = hours_ & ((uint32_t{2} << c.hour()) - 1);
    if (hours == 0) {
      c = absl::CivilMinute(day) - 1;
      continue;
    }
    const int hour = std::bit_width(hours) - 1;
    if (hour != c.hour()) c = absl::CivilMinute(c.year(), c.month(), c.day(), hour, 59);
    const uint64_t minutes = minutes_ & ((uint64_t{2} << c.minute()) - 1);
    if (minutes == 0) {
      c = absl::CivilMinute(absl::CivilHour(c)) - 1;
      continue;
    }
    return absl::CivilMinute(c.year(), c.month(), c.day(), hour, std::bit_width(minutes) - 1);
  }
  return std::nullopt;
}

absl::Time CronSchedule::FireTime(absl::CivilMinute minute) const {
  const absl::TimeZone::TimeInfo info = zone_.At(absl::CivilSecond(minute));
  // Skipped: the first valid instant after the gap. Repeated: the first occurrence.
  return info.kind == absl::TimeZone::TimeInfo::SKIPPED ? info.trans : info.pre;
}

absl::Time CronSchedule::Next(absl::Time after) const {
  if (after == absl::InfiniteFuture() || after == absl::InfinitePast()) return after;
  // Fire times are non-decreasing in civil time, and no matching minute before civil(after)
  // fires after `after`; minutes from there on may still fire at or before it (later seconds
  // of the same minute, or the second pass through a repeated hour), so skip those.
  absl::CivilMinute from(absl::ToCivilSecond(after, zone_));
  const absl::civil_year_t last_year = from.year() + kSearchYears;
  while (std::optional<absl::CivilMinute> match = NextMatch(from, last_year)) {
    const absl::Time fire = FireTime(*match);
    if (fire > after) return fire;
    from = *match + 1;
  }
  return absl::InfiniteFuture();  // unreachable for schedules Parse() accepts
}

absl::Time CronSchedule::Previous(absl::Time at_or_before) const {
  if (at_or_before == absl::InfiniteFuture() || at_or_before == absl::InfinitePast()) {
    return at_or_before;
  }
  const absl::CivilSecond now = absl::ToCivilSecond(at_or_before, zone_);
  absl::CivilMinute from(now);
  // During the second pass through a repeated hour, every minute of that hour has already
  // fired (at its first occurrence), including those later on the wall clock than now.
  const absl::TimeZone::TimeInfo info = zone_.At(now);
  if (info.kind == absl::TimeZone::TimeInfo::REPEATED && at_or_before >= info.trans) {
    from = absl::CivilMinute(absl::ToCivilSecond(info.trans - absl::Nanoseconds(1), zone_));
  }
  const absl::civil_year_t first_year = from.year() - kSearchYears;
  while (std::optional<absl::CivilMinute> match = PrevMatch(from, first_year)) {
    const absl::Time fire = FireTime(*match);
    if (fire <= at_or_before) return fire;
    from = *match - 1;
  }
  return absl::InfinitePast();  // unreachable for schedules Parse() accepts
}

std::string CronSchedule::Describe() const {
  const bool single_minute = std::popcount(minutes_) == 1;
  const bool single_hour = std::popcount(hours_) == 1;
  std::string when;
  if (single_minute && single_hour) {
    when = absl::StrFormat("at %02d:%02d", std::countr_zero(hours_), std::countr_zero(minutes_));
  } else {
    when = minutes_ == kAllMinutes ? "every minute"
           : single_minute         ? absl::StrCat("at minute ", std::countr_zero(minutes_))
                                   : absl::StrCat("at minutes ", fields_[0]);
    when += hours_ == kAllHours ? " of every hour"
            : single_hour       ? absl::StrCat(" of hour ", std::countr_zero(hours_))
                                : absl::StrCat(" of hours ", fields_[1]);
  }

  const std::string dom = std::popcount(days_of_month_) == 1
                              ? absl::StrCat("day ", std::countr_zero(days_of_month_))
                              : absl::StrCat("day-of-month ", fields_[2]);
  const std::string dow = std::popcount(days_of_week_) == 1
                              ? kDayLongNames[std::countr_zero(days_of_week_)]
                              : absl::StrCat("day-of-week ", fields_[4]);
  const bool dom_all = days_of_month_ == kAllDaysOfMonth;
  const bool dow_all = days_of_week_ == kAllDaysOfWeek;
  std::string days;
  if (dom_unrestricted_ || dow_unrestricted_) {  // both must match
    days = dom_all && dow_all ? "every day"
           : dom_all          ? absl::StrCat("on ", dow)
           : dow_all          ? absl::StrCat("on ", dom)
                              : absl::StrCat("on ", dom, " when it is ", dow);
  } else {  // either may match
    days = dom_all || dow_all ? "every day" : absl::StrCat("on ", dom, " or ", dow);
  }

  std::string months;
  if (months_ != kAllMonths) {
    months = std::popcount(months_) == 1
                 ? absl::StrCat(" in ", kMonthLongNames[std::countr_zero(months_) - 1])
                 : absl::StrCat(" in month ", fields_[3]);
  }
  return absl::StrCat(when, " ", days, months, " (", time_zone_name_, ")");
}

}  // namespace forge
