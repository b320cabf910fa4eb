// Small HTML building blocks for the dashboard: escaping, the page frame and its stylesheet,
// and formatting of numbers, sizes and durations for people.
#ifndef FORGE_COORDINATOR_HTML_H_
#define FORGE_COORDINATOR_HTML_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace forge::coordinator::html {

// Escapes &, <, >, " and ' (safe in HTML and SVG/XML text and in quoted attributes); control
// characters other than tab, newline and carriage return become spaces.
std::string Escape(absl::string_view text);
// Percent-encodes for a URL query value or path segment.
std::string UrlEncode(absl::string_view text);

struct PageOptions {
  std::string title;
  std::string active;       // nav entry to highlight: "overview", "jobs", "workers",
                            // "schedules"
  std::string who;          // "admin" or "tenant acme"; empty on the sign-in page
  bool show_fleet = false;  // nav shows Workers (admins)
  bool live = true;         // the page refreshes its <main> every few seconds
};
// A whole document: head, nav, <main> with `body`. Styles are inline (no external assets).
std::string Page(const PageOptions& options, absl::string_view body);

// The script that keeps a page live (served as /static/live.js; pages work without it).
absl::string_view LiveScript();

// "1.2k", "3.4M" for counts; "12.3 MiB" for bytes; "2h 05m", "45 s" for durations.
std::string Count(double v);
std::string Bytes(int64_t bytes);
std::string Duration(absl::Duration d);
// "3 s ago" (as a <time> element whose title is the UTC time), or "—" for the zero time.
std::string Ago(absl::Time then, absl::Time now);
// A number with `digits` significant digits ("2.345", "3e-4").
std::string Num(double v, int digits = 4);
// A coloured pill: <span class="badge badge-KIND">text</span>; kind is "ok", "run", "warn",
// "bad", "muted".
std::string Badge(absl::string_view kind, absl::string_view text);

}  // namespace forge::coordinator::html

#endif  // FORGE_COORDINATOR_HTML_H_
