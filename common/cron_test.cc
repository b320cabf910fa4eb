#include "common/cron.h"

#include <chrono>
#include <functional>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::TimeZone Zone(const std::string& name) {
  absl::TimeZone zone;
  EXPECT_TRUE(absl::LoadTimeZone(name, &zone)) << name;
  return zone;
}

CronSchedule MustParse(absl::string_view expr, absl::string_view zone = "UTC") {
  absl::StatusOr<CronSchedule> s = CronSchedule::Parse(expr, zone);
  EXPECT_TRUE(s.ok()) << expr << ": " << s.status();
  if (!s.ok()) abort();
  return *std::move(s);
}

absl::Time At(absl::CivilSecond cs, const std::string& zone = "UTC") {
  return absl::FromCivil(cs, Zone(zone));
}

std::string Format(absl::Time t, const std::string& zone = "UTC") {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S %a %Ez", t, Zone(zone));
}

std::string Short(absl::Time t, const std::string& zone = "UTC") {
  return absl::FormatTime("%Y-%m-%d %H:%M", t, Zone(zone));
}

// The next `n` fire times after `from`, formatted in `zone`.
std::vector<std::string> NextN(const CronSchedule& s, absl::Time from, int n,
                               const std::string& zone = "UTC") {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    from = s.Next(from);
    out.push_back(Short(from, zone));
  }
  return out;
}

const absl::Time kJan1 = At(absl::CivilSecond(2024, 1, 1, 0, 0, 0));  // a Monday

std::string ParseError(absl::string_view expr, absl::string_view zone = "UTC") {
  absl::StatusOr<CronSchedule> s = CronSchedule::Parse(expr, zone);
  if (s.ok()) return "OK";
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << s.status();
  return std::string(s.status().message());
}

TEST(CronTest, EverySyntaxForm) {
  EXPECT_THAT(NextN(MustParse("* * * * *"), kJan1, 3),
              ElementsAre("2024-01-01 00:01", "2024-01-01 00:02", "2024-01-01 00:03"));
  EXPECT_THAT(NextN(MustParse("5 * * * *"), kJan1, 2),
              ElementsAre("2024-01-01 00:05", "2024-01-01 01:05"));
  EXPECT_THAT(
      NextN(MustParse("10-12 * * * *"), kJan1, 4),
      ElementsAre("2024-01-01 00:10", "2024-01-01 00:11", "2024-01-01 00:12", "2024-01-01 01:10"));
  EXPECT_THAT(NextN(MustParse("1,3,5-6 * * * *"), kJan1, 5),
              ElementsAre("2024-01-01 00:01", "2024-01-01 00:03", "2024-01-01 00:05",
                          "2024-01-01 00:06", "2024-01-01 01:01"));
  EXPECT_THAT(NextN(MustParse("*/20 * * * *"), kJan1, 3),
              ElementsAre("2024-01-01 00:20", "2024-01-01 00:40", "2024-01-01 01:00"));
  EXPECT_THAT(
      NextN(MustParse("10-30/10 * * * *"), kJan1, 4),
      ElementsAre("2024-01-01 00:10", "2024-01-01 00:20", "2024-01-01 00:30", "2024-01-01 01:10"));
  // N/S is N-max/S.
  EXPECT_THAT(NextN(MustParse("50/5 * * * *"), kJan1, 3),
              ElementsAre("2024-01-01 00:50", "2024-01-01 00:55", "2024-01-01 01:50"));
  EXPECT_THAT(
      NextN(MustParse("0,30/15 * * * *"), kJan1, 4),
      ElementsAre("2024-01-01 00:30", "2024-01-01 00:45", "2024-01-01 01:00", "2024-01-01 01:30"));
  EXPECT_THAT(NextN(MustParse("0 */6 * * *"), kJan1, 3),
              ElementsAre("2024-01-01 06:00", "2024-01-01 12:00", "2024-01-01 18:00"));
  EXPECT_THAT(
      NextN(MustParse("0 0 1-31/10 * *"), kJan1, 4),
      ElementsAre("2024-01-11 00:00", "2024-01-21 00:00", "2024-01-31 00:00", "2024-02-01 00:00"));
  EXPECT_THAT(NextN(MustParse("0 0 1 */4 *"), kJan1, 3),
              ElementsAre("2024-05-01 00:00", "2024-09-01 00:00", "2025-01-01 00:00"));
  // Surrounding and repeated whitespace, tabs.
  EXPECT_THAT(NextN(MustParse("  0\t2   * *  * \n"), kJan1, 1), ElementsAre("2024-01-01 02:00"));
}

TEST(CronTest, MonthAndWeekdayNames) {
  EXPECT_THAT(NextN(MustParse("0 0 1 jan,Jul *"), kJan1, 3),
              ElementsAre("2024-07-01 00:00", "2025-01-01 00:00", "2025-07-01 00:00"));
  EXPECT_THAT(
      NextN(MustParse("0 0 1 FEB-apr *"), kJan1, 4),
      ElementsAre("2024-02-01 00:00", "2024-03-01 00:00", "2024-04-01 00:00", "2025-02-01 00:00"));
  // 2024-01-01 is a Monday.
  EXPECT_THAT(NextN(MustParse("0 9 * * MON-FRI"), kJan1, 6),
              ElementsAre("2024-01-01 09:00", "2024-01-02 09:00", "2024-01-03 09:00",
                          "2024-01-04 09:00", "2024-01-05 09:00", "2024-01-08 09:00"));
  // 0 and 7 are both Sunday; 5-7 is Friday through Sunday.
  EXPECT_THAT(NextN(MustParse("0 0 * * 7"), kJan1, 2),
              ElementsAre("2024-01-07 00:00", "2024-01-14 00:00"));
  EXPECT_EQ(NextN(MustParse("0 0 * * 0"), kJan1, 5), NextN(MustParse("0 0 * * 7"), kJan1, 5));
  EXPECT_EQ(NextN(MustParse("0 0 * * sun"), kJan1, 5), NextN(MustParse("0 0 * * 7"), kJan1, 5));
  EXPECT_THAT(
      NextN(MustParse("0 0 * * 5-7"), kJan1, 4),
      ElementsAre("2024-01-05 00:00", "2024-01-06 00:00", "2024-01-07 00:00", "2024-01-12 00:00"));
  EXPECT_THAT(NextN(MustParse("0 0 * * */7"), kJan1, 2),  // 0 and 7: Sundays
              ElementsAre("2024-01-07 00:00", "2024-01-14 00:00"));
}

TEST(CronTest, Macros) {
  const struct {
    const char* macro;
    const char* expansion;
  } kCases[] = {{"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
                {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
                {"@hourly", "0 * * * *"}};
  for (const auto& c : kCases) {
    CronSchedule macro = MustParse(c.macro, "Europe/Paris");
    EXPECT_EQ(macro.expression(), c.macro);
    EXPECT_EQ(NextN(macro, kJan1, 5, "Europe/Paris"),
              NextN(MustParse(c.expansion, "Europe/Paris"), kJan1, 5, "Europe/Paris"))
        << c.macro;
  }
  EXPECT_THAT(NextN(MustParse("@weekly"), kJan1, 2),
              ElementsAre("2024-01-07 00:00", "2024-01-14 00:00"));
  EXPECT_EQ(MustParse(" @DAILY ").expression(), "@DAILY");
}

TEST(CronTest, RejectsOutOfRangeValuesNamingFieldAndRange) {
  EXPECT_EQ(ParseError("0 25 * * *"), "cron: hour field '25' is out of range 0-23");
  EXPECT_EQ(ParseError("60 * * * *"), "cron: minute field '60' is out of range 0-59");
  EXPECT_EQ(ParseError("0-60 * * * *"), "cron: minute field '60' is out of range 0-59");
  EXPECT_EQ(ParseError("0 0 0 * *"), "cron: day-of-month field '0' is out of range 1-31");
  EXPECT_EQ(ParseError("0 0 32 * *"), "cron: day-of-month field '32' is out of range 1-31");
  EXPECT_EQ(ParseError("0 0 * 13 *"), "cron: month field '13' is out of range 1-12");
  EXPECT_EQ(ParseError("0 0 * 0 *"), "cron: month field '0' is out of range 1-12");
  EXPECT_EQ(ParseError("0 0 * * 8"), "cron: day-of-week field '8' is out of range 0-7");
  EXPECT_EQ(ParseError("0 1,99999999999 * * *"),
            "cron: hour field '99999999999' is out of range 0-23");
  EXPECT_EQ(ParseError("*/0 * * * *"),
            "cron: minute field '*/0' has step 0; the step must be 1-60");
  EXPECT_EQ(ParseError("0 */25 * * *"),
            "cron: hour field '*/25' has step 25; the step must be 1-24");
  EXPECT_EQ(ParseError("5-2 * * * *"),
            "cron: minute field '5-2' runs backwards; wrap-around ranges are not supported, "
            "split it into two ranges");
  EXPECT_EQ(ParseError("0 0 * * FRI-MON"),
            "cron: day-of-week field 'FRI-MON' runs backwards; wrap-around ranges are not "
            "supported, split it into two ranges");
}

TEST(CronTest, RejectsUnsupportedSyntaxListingAcceptedForms) {
  const std::string kForms = "use *, N, A-B, */S, A-B/S, N/S or a comma-separated list of these";
  EXPECT_EQ(ParseError("0 0 L * *"), "cron: day-of-month field 'L' is not valid; " + kForms);
  EXPECT_EQ(ParseError("0 0 15W * *"), "cron: day-of-month field '15W' is not valid; " + kForms);
  EXPECT_EQ(ParseError("0 0 ? * *"), "cron: day-of-month field '?' is not valid; " + kForms);
  EXPECT_EQ(ParseError("0 0 * * 5#3"), "cron: day-of-week field '5#3' is not valid; " + kForms +
                                           " (0 and 7 are Sunday); names SUN-SAT");
  EXPECT_EQ(ParseError("0 0 * * 5L"), "cron: day-of-week field '5L' is not valid; " + kForms +
                                          " (0 and 7 are Sunday); names SUN-SAT");
  EXPECT_EQ(ParseError("0 0 * JANUARY *"),
            "cron: month field 'JANUARY' is not valid; " + kForms + "; names JAN-DEC");
  EXPECT_EQ(ParseError("0 0 * * FRIDAY"), "cron: day-of-week field 'FRIDAY' is not valid; " +
                                              kForms + " (0 and 7 are Sunday); names SUN-SAT");
  EXPECT_EQ(ParseError("JAN * * * *"), "cron: minute field 'JAN' is not valid; " + kForms);
  EXPECT_EQ(ParseError("1,,2 * * * *"), "cron: minute field '1,,2' is not valid; " + kForms);
  EXPECT_EQ(ParseError("1, * * * *"), "cron: minute field '1,' is not valid; " + kForms);
  EXPECT_EQ(ParseError("-1 * * * *"), "cron: minute field '-1' is not valid; " + kForms);
  EXPECT_EQ(ParseError("1- * * * *"), "cron: minute field '1-' is not valid; " + kForms);
  EXPECT_EQ(ParseError("1-2-3 * * * *"), "cron: minute field '1-2-3' is not valid; " + kForms);
  EXPECT_EQ(ParseError("*/ * * * *"), "cron: minute field '*/' is not valid; " + kForms);
  EXPECT_EQ(ParseError("*/5/2 * * * *"), "cron: minute field '*/5/2' is not valid; " + kForms);
  EXPECT_EQ(ParseError("** * * * *"), "cron: minute field '**' is not valid; " + kForms);
  EXPECT_EQ(ParseError("+5 * * * *"), "cron: minute field '+5' is not valid; " + kForms);
  EXPECT_EQ(ParseError("0 0 * * ${DOW}"), "cron: day-of-week field '${DOW}' is not valid; " +
                                              kForms + " (0 and 7 are Sunday); names SUN-SAT");
}

TEST(CronTest, RejectsWrongFieldCountsAndMacros) {
  EXPECT_EQ(ParseError("0 0 2 * * *"),
            "cron: expected 5 fields (minute hour day-of-month month day-of-week), got 6 in "
            "'0 0 2 * * *'; seconds and years are not supported");
  EXPECT_THAT(ParseError("0 2 * *"), HasSubstr("got 4 in '0 2 * *'"));
  EXPECT_THAT(ParseError("0 0 1 1 * 2030"), HasSubstr("got 6"));
  EXPECT_THAT(ParseError("   "), HasSubstr("cron: expression is empty"));
  EXPECT_THAT(ParseError(""), HasSubstr("cron: expression is empty"));
  EXPECT_EQ(ParseError("@reboot"),
            "cron: unknown macro '@reboot'; use @yearly, @annually, @monthly, @weekly, @daily, "
            "@midnight or @hourly");
  EXPECT_THAT(ParseError("@daily 0"), HasSubstr("unknown macro '@daily 0'"));
  EXPECT_THAT(ParseError("@"), HasSubstr("unknown macro '@'"));
  // Echoed text is bounded.
  const std::string long_expr = "0 0 " + std::string(1000, '1') + " * *";
  std::string error = ParseError(long_expr);
  EXPECT_LT(error.size(), 300u) << error;
  EXPECT_THAT(error, HasSubstr("...'"));
}

TEST(CronTest, RejectsExpressionsThatCanNeverFire) {
  EXPECT_EQ(ParseError("0 0 30 2 *"),
            "cron: '0 0 30 2 *' can never fire: day-of-month '30' does not occur in month '2'");
  EXPECT_THAT(ParseError("0 0 30,31 FEB *"), HasSubstr("can never fire"));
  EXPECT_THAT(ParseError("0 0 31 4,6,9,11 *"), HasSubstr("can never fire"));
  EXPECT_THAT(ParseError("0 0 31 2 */2"), HasSubstr("can never fire"));  // '*' first: AND rule
  // Possible in some selected month, some year, or through the day-of-week.
  EXPECT_EQ(ParseError("0 0 31 2,3 *"), "OK");
  EXPECT_EQ(ParseError("0 0 29 2 *"), "OK");
  EXPECT_EQ(ParseError("0 0 30 2 1"), "OK");  // OR rule: Mondays in February
  EXPECT_THAT(NextN(MustParse("0 0 30 2 1"), kJan1, 2),
              ElementsAre("2024-02-05 00:00", "2024-02-12 00:00"));
}

TEST(CronTest, RejectsUnknownTimeZones) {
  const std::string kHint = "; use 'UTC' or an IANA name such as 'Europe/Paris'";
  EXPECT_EQ(ParseError("0 2 * * *", "Mars/Olympus_Mons"),
            "cron: unknown time zone 'Mars/Olympus_Mons'" + kHint);
  EXPECT_EQ(ParseError("0 2 * * *", ""), "cron: unknown time zone ''" + kHint);
  EXPECT_EQ(ParseError("0 2 * * *", "localtime"), "cron: unknown time zone 'localtime'" + kHint);
  EXPECT_THAT(ParseError("0 2 * * *", "../../etc/passwd"), HasSubstr("unknown time zone"));
  EXPECT_THAT(ParseError("0 2 * * *", "/usr/share/zoneinfo/UTC"), HasSubstr("unknown time zone"));
  EXPECT_THAT(ParseError("0 2 * * *", "Fixed/UTC+05:00"), HasSubstr("unknown time zone"));
  EXPECT_EQ(ParseError("0 2 * * *", "UTC"), "OK");
  EXPECT_EQ(ParseError("0 2 * * *", "Etc/GMT+5"), "OK");
  CronSchedule s = MustParse("0 2 * * *", "Europe/Paris");
  EXPECT_EQ(s.expression(), "0 2 * * *");
  EXPECT_EQ(s.time_zone(), "Europe/Paris");
  EXPECT_EQ(MustParse("0 2 * * *").time_zone(), "UTC");
}

TEST(CronTest, DayOfMonthOrDayOfWeekWhenBothRestricted) {
  // Fridays, plus the 13th (2024-09-13 is itself a Friday, 2024-10-13 a Sunday).
  EXPECT_THAT(NextN(MustParse("0 0 13 * 5"), At(absl::CivilSecond(2024, 9, 1, 0, 0, 0)), 9),
              ElementsAre("2024-09-06 00:00", "2024-09-13 00:00", "2024-09-20 00:00",
                          "2024-09-27 00:00", "2024-10-04 00:00", "2024-10-11 00:00",
                          "2024-10-13 00:00", "2024-10-18 00:00", "2024-10-25 00:00"));
  EXPECT_THAT(NextN(MustParse("0 0 13 * FRI"), At(absl::CivilSecond(2024, 9, 14, 0, 0, 0)), 1),
              ElementsAre("2024-09-20 00:00"));
  // One side unrestricted: both must match.
  EXPECT_THAT(NextN(MustParse("0 0 13 * *"), At(absl::CivilSecond(2024, 9, 1, 0, 0, 0)), 2),
              ElementsAre("2024-09-13 00:00", "2024-10-13 00:00"));
  EXPECT_THAT(NextN(MustParse("0 0 * * 5"), At(absl::CivilSecond(2024, 9, 1, 0, 0, 0)), 2),
              ElementsAre("2024-09-06 00:00", "2024-09-13 00:00"));
  // As in Vixie cron, a field starting with '*' counts as unrestricted: odd days AND Mondays.
  EXPECT_THAT(NextN(MustParse("0 0 */2 * 1"), kJan1 - absl::Seconds(1), 6),
              ElementsAre("2024-01-01 00:00", "2024-01-15 00:00", "2024-01-29 00:00",
                          "2024-02-05 00:00", "2024-02-19 00:00", "2024-03-11 00:00"));
  // ...and a restricted-looking full range is restricted: 1-31 OR Monday is every day.
  EXPECT_THAT(NextN(MustParse("0 0 1-31 * 1"), kJan1, 2),
              ElementsAre("2024-01-02 00:00", "2024-01-03 00:00"));
}

TEST(CronTest, MonthAndYearRollover) {
  CronSchedule new_year_eve = MustParse("59 23 31 12 *");
  EXPECT_THAT(NextN(new_year_eve, At(absl::CivilSecond(2023, 12, 31, 23, 59, 0)), 2),
              ElementsAre("2024-12-31 23:59", "2025-12-31 23:59"));
  EXPECT_EQ(Short(new_year_eve.Previous(At(absl::CivilSecond(2024, 12, 31, 23, 58, 59)))),
            "2023-12-31 23:59");
  CronSchedule monthly = MustParse("0 0 1 * *");
  EXPECT_THAT(NextN(monthly, At(absl::CivilSecond(2023, 11, 30, 12, 0, 0)), 3),
              ElementsAre("2023-12-01 00:00", "2024-01-01 00:00", "2024-02-01 00:00"));
  EXPECT_EQ(Short(monthly.Previous(kJan1 - absl::Seconds(1))), "2023-12-01 00:00");
  CronSchedule last_day = MustParse("0 12 31 * *");  // only months with 31 days
  EXPECT_THAT(NextN(last_day, At(absl::CivilSecond(2024, 1, 31, 12, 0, 0)), 3),
              ElementsAre("2024-03-31 12:00", "2024-05-31 12:00", "2024-07-31 12:00"));
  EXPECT_EQ(Short(last_day.Previous(At(absl::CivilSecond(2024, 3, 31, 11, 0, 0)))),
            "2024-01-31 12:00");
  // The end of an hour, a day and a year at once.
  EXPECT_THAT(NextN(MustParse("*/30 * * * *"), At(absl::CivilSecond(2024, 12, 31, 23, 45, 0)), 2),
              ElementsAre("2025-01-01 00:00", "2025-01-01 00:30"));
}

TEST(CronTest, LeapYears) {
  CronSchedule leap_day = MustParse("0 0 29 2 *");
  EXPECT_THAT(NextN(leap_day, At(absl::CivilSecond(2023, 3, 1, 0, 0, 0)), 2),
              ElementsAre("2024-02-29 00:00", "2028-02-29 00:00"));
  // 2100 is not a leap year.
  EXPECT_THAT(NextN(leap_day, At(absl::CivilSecond(2096, 3, 1, 0, 0, 0)), 1),
              ElementsAre("2104-02-29 00:00"));
  EXPECT_EQ(Short(leap_day.Previous(At(absl::CivilSecond(2104, 2, 28, 0, 0, 0)))),
            "2096-02-29 00:00");
  // 2000 is.
  EXPECT_EQ(Short(leap_day.Previous(At(absl::CivilSecond(2003, 1, 1, 0, 0, 0)))),
            "2000-02-29 00:00");
  // Feb 29 on a Sunday (AND rule): 40 years between 2088 and 2128.
  CronSchedule sunday_leap_day = MustParse("0 0 29 2 */7");
  EXPECT_THAT(NextN(sunday_leap_day, At(absl::CivilSecond(2000, 1, 1, 0, 0, 0)), 6),
              ElementsAre("2004-02-29 00:00", "2032-02-29 00:00", "2060-02-29 00:00",
                          "2088-02-29 00:00", "2128-02-29 00:00", "2156-02-29 00:00"));
  EXPECT_EQ(Short(sunday_leap_day.Previous(At(absl::CivilSecond(2128, 2, 28, 0, 0, 0)))),
            "2088-02-29 00:00");
}

TEST(CronTest, EvaluatesInTheScheduleTimeZone) {
  CronSchedule s = MustParse("0 2 * * *", "America/New_York");
  // EST (UTC-5) in winter, EDT (UTC-4) in summer.
  EXPECT_EQ(Format(s.Next(At(absl::CivilSecond(2024, 1, 15, 0, 0, 0)))),
            "2024-01-15 07:00:00 Mon +00:00");
  EXPECT_EQ(Format(s.Next(At(absl::CivilSecond(2024, 7, 15, 0, 0, 0)))),
            "2024-07-15 06:00:00 Mon +00:00");
  // Just after 02:00 New York time the next slot is tomorrow's.
  EXPECT_EQ(Format(s.Next(At(absl::CivilSecond(2024, 1, 15, 7, 0, 0)))),
            "2024-01-16 07:00:00 Tue +00:00");
  EXPECT_EQ(Format(s.Previous(At(absl::CivilSecond(2024, 1, 15, 6, 59, 59)))),
            "2024-01-14 07:00:00 Sun +00:00");
  // The day and weekday are New York's, not UTC's: 22:00 Friday in New York is Saturday UTC.
  CronSchedule friday_night = MustParse("0 22 * * FRI", "America/New_York");
  EXPECT_EQ(Format(friday_night.Next(kJan1)), "2024-01-06 03:00:00 Sat +00:00");
  EXPECT_EQ(Format(friday_night.Next(kJan1), "America/New_York"), "2024-01-05 22:00:00 Fri -05:00");
  CronSchedule tokyo = MustParse("30 8 1 * *", "Asia/Tokyo");
  EXPECT_EQ(Format(tokyo.Next(kJan1)), "2024-01-31 23:30:00 Wed +00:00");
}

// Europe/Paris springs forward on 2024-03-31: 02:00 CET becomes 03:00 CEST (01:00 UTC), so
// civil 02:00-02:59 does not exist.
TEST(CronTest, SkippedLocalTimeFiresOnceAtTheTransition) {
  const std::string kParis = "Europe/Paris";
  const absl::Time transition = At(absl::CivilSecond(2024, 3, 31, 1, 0, 0));
  CronSchedule s = MustParse("30 2 * * *", kParis);
  EXPECT_THAT(NextN(s, At(absl::CivilSecond(2024, 3, 30, 12, 0, 0)), 3, kParis),
              ElementsAre("2024-03-31 03:00", "2024-04-01 02:30", "2024-04-02 02:30"));
  EXPECT_EQ(s.Next(At(absl::CivilSecond(2024, 3, 30, 12, 0, 0))), transition);
  EXPECT_EQ(s.Previous(transition), transition);
  EXPECT_EQ(s.Previous(transition - absl::Seconds(1)),
            At(absl::CivilSecond(2024, 3, 30, 2, 30, 0), kParis));
  // Several skipped minutes, and a real matching minute at the end of the gap, share one
  // instant and fire there once.
  CronSchedule many = MustParse("0,30 2,3 * * *", kParis);
  EXPECT_THAT(NextN(many, At(absl::CivilSecond(2024, 3, 31, 0, 0, 0)), 3, kParis),
              ElementsAre("2024-03-31 03:00", "2024-03-31 03:30", "2024-04-01 02:00"));
  CronSchedule every_minute = MustParse("* * * * *", kParis);
  EXPECT_EQ(every_minute.Next(transition - absl::Minutes(1)), transition);
  EXPECT_EQ(every_minute.Next(transition), transition + absl::Minutes(1));
}

// Europe/Paris falls back on 2024-10-27: 03:00 CEST becomes 02:00 CET (01:00 UTC), so civil
// 02:00-02:59 happens twice: 00:00-00:59 UTC and 01:00-01:59 UTC.
TEST(CronTest, RepeatedLocalTimeFiresOnceAtItsFirstOccurrence) {
  const std::string kParis = "Europe/Paris";
  CronSchedule s = MustParse("30 2 * * *", kParis);
  const absl::Time first = At(absl::CivilSecond(2024, 10, 27, 0, 30, 0));
  EXPECT_EQ(s.Next(At(absl::CivilSecond(2024, 10, 26, 12, 0, 0))), first);
  EXPECT_EQ(Format(s.Next(first)), "2024-10-28 01:30:00 Mon +00:00");
  // During the second 02:30 the current slot is still the first one.
  const absl::Time second = At(absl::CivilSecond(2024, 10, 27, 1, 30, 0));
  EXPECT_EQ(s.Previous(second), first);
  EXPECT_EQ(Format(s.Next(second)), "2024-10-28 01:30:00 Mon +00:00");

  // Every 20 minutes: nothing fires during the second pass through 02:xx.
  CronSchedule every20 = MustParse("*/20 * * * *", kParis);
  EXPECT_THAT(NextN(every20, At(absl::CivilSecond(2024, 10, 26, 23, 50, 0)), 5),
              ElementsAre("2024-10-27 00:00", "2024-10-27 00:20", "2024-10-27 00:40",
                          "2024-10-27 02:00", "2024-10-27 02:20"));
  // 01:10 UTC is 02:10 CET (second pass): 02:20 and 02:40 already fired in the first pass.
  const absl::Time second_pass = At(absl::CivilSecond(2024, 10, 27, 1, 10, 0));
  EXPECT_EQ(Short(every20.Previous(second_pass)), "2024-10-27 00:40");
  EXPECT_EQ(Short(every20.Next(second_pass)), "2024-10-27 02:00");
}

// Fire times by definition: each matching civil minute of `zone` fires at its first
// occurrence, or at the transition when skipped. Next/Previous must agree with this list for
// every instant, seconds included.
void CheckAgainstReference(absl::string_view expr, const std::string& zone_name, absl::CivilDay day,
                           std::function<bool(absl::CivilMinute)> matches) {
  SCOPED_TRACE(absl::StrCat(expr, " in ", zone_name, " around ", absl::FormatCivilTime(day)));
  const absl::TimeZone zone = Zone(zone_name);
  CronSchedule s = MustParse(expr, zone_name);
  std::set<absl::Time> fires;
  for (absl::CivilMinute m(day - 2); m < absl::CivilMinute(day + 3); ++m) {
    if (!matches(m)) continue;
    absl::TimeZone::TimeInfo info = zone.At(absl::CivilSecond(m));
    fires.insert(info.kind == absl::TimeZone::TimeInfo::SKIPPED ? info.trans : info.pre);
  }
  const absl::Time begin = absl::FromCivil(day - 1, zone);
  const absl::Time end = absl::FromCivil(day + 2, zone);
  std::vector<absl::Time> probes;
  for (absl::Time t = begin; t < end; t += absl::Seconds(7 * 60 + 13)) probes.push_back(t);
  for (absl::Time f : fires) {
    if (f < begin || f >= end) continue;
    for (absl::Duration d :
         {absl::Seconds(-1), absl::ZeroDuration(), absl::Nanoseconds(1), absl::Seconds(59)}) {
      probes.push_back(f + d);
    }
  }
  int checked = 0;
  for (absl::Time t : probes) {
    auto next = fires.upper_bound(t);
    auto prev = fires.upper_bound(t);
    ASSERT_NE(next, fires.end());
    ASSERT_NE(prev, fires.begin());
    --prev;
    ASSERT_EQ(s.Next(t), *next) << "Next(" << Format(t, zone_name)
                                << ") = " << Format(s.Next(t), zone_name);
    ASSERT_EQ(s.Previous(t), *prev)
        << "Previous(" << Format(t, zone_name) << ") = " << Format(s.Previous(t), zone_name);
    ++checked;
  }
  EXPECT_GT(checked, 500);
}

TEST(CronTest, MatchesReferenceAcrossTransitions) {
  struct Case {
    const char* name;
    absl::CivilDay spring;
    absl::CivilDay fall;
  };
  const Case kCases[] = {
      {"Europe/Paris", absl::CivilDay(2024, 3, 31), absl::CivilDay(2024, 10, 27)},
      {"America/New_York", absl::CivilDay(2024, 3, 10), absl::CivilDay(2024, 11, 3)},
      // 30-minute DST: 02:00 -> 02:30 in October, 02:00 -> 01:30 in April.
      {"Australia/Lord_Howe", absl::CivilDay(2024, 10, 6), absl::CivilDay(2024, 4, 7)},
      {"UTC", absl::CivilDay(2024, 2, 29), absl::CivilDay(2024, 12, 31)},
  };
  for (const Case& z : kCases) {
    for (absl::CivilDay day : {z.spring, z.fall}) {
      CheckAgainstReference("* * * * *", z.name, day, [](absl::CivilMinute) { return true; });
      CheckAgainstReference("*/15 * * * *", z.name, day,
                            [](absl::CivilMinute m) { return m.minute() % 15 == 0; });
      CheckAgainstReference("30 2 * * *", z.name, day,
                            [](absl::CivilMinute m) { return m.hour() == 2 && m.minute() == 30; });
      CheckAgainstReference("0,45 1-3 * * *", z.name, day, [](absl::CivilMinute m) {
        return m.hour() >= 1 && m.hour() <= 3 && (m.minute() == 0 || m.minute() == 45);
      });
      CheckAgainstReference("59 1 * * *", z.name, day,
                            [](absl::CivilMinute m) { return m.hour() == 1 && m.minute() == 59; });
    }
  }
}

TEST(CronTest, NextAndPreviousAreConsistent) {
  const char* kExprs[] = {"0 2 * * *",    "*/7 * * * *", "0 0 13 * 5",  "0 0 29 2 *",
                          "15 3 * * MON", "@hourly",     "0 0 */2 * 1", "30 2 * * *"};
  const char* kZones[] = {"UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe"};
  int checked = 0;
  for (const char* zone : kZones) {
    for (const char* expr : kExprs) {
      CronSchedule s = MustParse(expr, zone);
      // Pseudo-random instants over 2020-2030, seconds and sub-seconds included.
      absl::Time t = At(absl::CivilSecond(2020, 1, 1, 0, 0, 0));
      for (int i = 0; i < 200; ++i) {
        t += absl::Seconds(1'657'381 + 977 * i) + absl::Milliseconds(i % 3 == 0 ? 0 : 123);
        SCOPED_TRACE(absl::StrCat(expr, " in ", zone, " at ", Format(t, zone)));
        const absl::Time next = s.Next(t);
        const absl::Time prev = s.Previous(t);
        ASSERT_GT(next, t);
        ASSERT_LE(prev, t);
        ASSERT_EQ(s.Previous(next), next);
        ASSERT_GT(s.Next(prev), t);
        ASSERT_EQ(s.Next(prev), next);
        ASSERT_EQ(s.Previous(next - absl::Nanoseconds(1)), prev);
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 4 * 8 * 200);
}

TEST(CronTest, InfiniteInputsAreReturnedUnchanged) {
  CronSchedule s = MustParse("0 2 * * *", "Europe/Paris");
  EXPECT_EQ(s.Next(absl::InfiniteFuture()), absl::InfiniteFuture());
  EXPECT_EQ(s.Next(absl::InfinitePast()), absl::InfinitePast());
  EXPECT_EQ(s.Previous(absl::InfiniteFuture()), absl::InfiniteFuture());
  EXPECT_EQ(s.Previous(absl::InfinitePast()), absl::InfinitePast());
}

TEST(CronTest, Describe) {
  EXPECT_EQ(MustParse("0 2 * * *", "Europe/Paris").Describe(), "at 02:00 every day (Europe/Paris)");
  EXPECT_EQ(MustParse("0 0 13 * 5").Describe(), "at 00:00 on day 13 or Friday (UTC)");
  EXPECT_EQ(MustParse("30 4 * * 1-5").Describe(), "at 04:30 on day-of-week 1-5 (UTC)");
  EXPECT_EQ(MustParse("@yearly").Describe(), "at 00:00 on day 1 in January (UTC)");
  EXPECT_EQ(MustParse("@hourly").Describe(), "at minute 0 of every hour every day (UTC)");
  EXPECT_EQ(MustParse("*/15 9-17 * * *").Describe(),
            "at minutes */15 of hours 9-17 every day (UTC)");
  EXPECT_EQ(MustParse("* * 1,15 3-5 *").Describe(),
            "every minute of every hour on day-of-month 1,15 in month 3-5 (UTC)");
  EXPECT_EQ(MustParse("0 0 */2 * 1").Describe(),
            "at 00:00 on day-of-month */2 when it is Monday (UTC)");
  EXPECT_EQ(MustParse("0 0 1-31 * 1").Describe(), "at 00:00 every day (UTC)");
}

TEST(CronTest, SparseScheduleIsFast) {
  CronSchedule s = MustParse("0 0 29 2 *", "America/New_York");
  const absl::TimeZone zone = Zone("America/New_York");
  absl::Time t = kJan1;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) {
    t = s.Next(t);
    const absl::CivilSecond cs = absl::ToCivilSecond(t, zone);
    ASSERT_EQ(cs, absl::CivilSecond(cs.year(), 2, 29, 0, 0, 0));
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  // 1000 leap days from 2024 on, century years not divisible by 400 excluded.
  EXPECT_EQ(absl::ToCivilSecond(t, zone).year(), 6144);
  std::cout << "1000 Next() calls on '0 0 29 2 *' took " << ms << " ms\n";
}

}  // namespace
}  // namespace forge
