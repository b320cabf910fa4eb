#include "coordinator/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "coordinator/html.h"

namespace forge::coordinator {
namespace {

using Point = std::pair<double, double>;

// Okabe & Ito's colour-blind-safe palette, ordered for contrast on white; their yellow is left
// out (too faint on a white card).
constexpr const char* kPalette[] = {"#0072B2", "#E69F00", "#009E73", "#D55E00",
                                    "#CC79A7", "#56B4E9", "#000000"};
constexpr const char* kMarkerColor = "#6b7280";
constexpr size_t kMaxVerticesWithPoints = 80;
constexpr double kPad = 10;               // outer padding of the chart
constexpr double kTickCharWidth = 6.3;    // 11px system-ui, a digit or average letter
constexpr double kTitleCharWidth = 7.4;   // 13px semibold
constexpr double kMarkerCharWidth = 5.8;  // 10px

constexpr absl::string_view kStyle =
    ".forge-chart{font-family:system-ui,sans-serif;width:100%;height:auto;display:block}"
    ".forge-chart .title{font-size:13px;font-weight:600;fill:#1f2937}"
    ".forge-chart .tick{font-size:11px;fill:#6b7280}"
    ".forge-chart .axis-label{font-size:11px;fill:#4b5563}"
    ".forge-chart .axis{stroke:#9ca3af;fill:none}"
    ".forge-chart .grid{stroke:#e5e7eb;fill:none}"
    ".forge-chart .series{fill:none;stroke-width:1.75;stroke-linejoin:round;stroke-linecap:round}"
    ".forge-chart .point{stroke:#fff;stroke-width:1}"
    ".forge-chart .point:hover{r:4}"
    ".forge-chart .point.quiet{opacity:0}"  // dashed series: dots on hover only
    ".forge-chart .point.quiet:hover{opacity:1}"
    ".forge-chart .legend{font-size:11px;fill:#374151}"
    ".forge-chart .legend line{stroke-width:2.5;stroke-linecap:round}"
    ".forge-chart .marker line{stroke-width:1;stroke-dasharray:3 3}"
    ".forge-chart .marker text{font-size:10px;paint-order:stroke;stroke:#fff;stroke-width:3px;"
    "stroke-linejoin:round}"
    ".forge-chart .empty{font-size:13px;fill:#9ca3af}";

using html::Escape;

// A user-supplied CSS colour, or `fallback` when it could break out of an attribute or a
// style declaration.
std::string SafeColor(absl::string_view color, absl::string_view fallback) {
  if (color.empty() || color.size() > 64) return std::string(fallback);
  for (const char c : color) {
    if (!absl::ascii_isalnum(c) && !absl::StrContains("#(),.% -", c)) {
      return std::string(fallback);
    }
  }
  return std::string(color);
}

// A coordinate with at most one decimal ("12.5", "40", never "-0").
std::string Num(double v) {
  std::string s = absl::StrFormat("%.1f", v);
  if (s.size() >= 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  if (s == "-0") s = "0";
  return s;
}

// Display width estimate: counts UTF-8 code points, not bytes.
double TextWidth(absl::string_view s, double char_width) {
  size_t chars = 0;
  for (const char c : s) chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return static_cast<double>(chars) * char_width;
}

// m * 10^e, exact for the decimal values tick marks use (2 * 10^-1 == 0.2).
double Pow10Times(double m, int e) {
  return e >= 0 ? m * std::pow(10.0, e) : m / std::pow(10.0, -e);
}

// A tick step of factor * 10^power, factor in {1, 2, 5}.
struct Step {
  int factor;
  int power;
  double ToUnits(double v) const {
    return power >= 0 ? v / Pow10Times(factor, power) : v * std::pow(10.0, -power) / factor;
  }
  double FromUnits(double i) const { return Pow10Times(i * factor, power); }
};

std::optional<Step> NiceStep(double lo, double hi, int target) {
  const double raw = (hi - lo) / target;
  if (!(raw > 0) || !std::isfinite(raw)) return std::nullopt;
  int power = static_cast<int>(std::floor(std::log10(raw)));
  if (power < -300 || power > 300) return std::nullopt;
  const double error = raw / std::pow(10.0, power);
  // Same thresholds as d3's tickIncrement: pick the factor nearest in log space.
  int factor = error >= std::sqrt(50.0)   ? 10
               : error >= std::sqrt(10.0) ? 5
               : error >= std::sqrt(2.0)  ? 2
                                          : 1;
  if (factor == 10) factor = 1, ++power;
  return Step{factor, power};
}

// Widens [lo, hi] to multiples of its tick step, leaving fixed ends alone.
void NiceDomain(double& lo, double& hi, int target, bool fix_lo, bool fix_hi) {
  for (int round = 0; round < 3; ++round) {  // a wider domain can pick a coarser step
    const std::optional<Step> step = NiceStep(lo, hi, target);
    if (!step) return;
    const double nlo = fix_lo ? lo : step->FromUnits(std::floor(step->ToUnits(lo) + 1e-6));
    const double nhi = fix_hi ? hi : step->FromUnits(std::ceil(step->ToUnits(hi) - 1e-6));
    if (nlo == lo && nhi == hi) return;
    lo = nlo;
    hi = nhi;
  }
}

// Widens a positive [lo, hi] so that it starts and ends on ticks LogTicks would draw.
void NiceLogDomain(double& lo, double& hi, bool fix_lo, bool fix_hi) {
  if (lo == hi) {
    if (!fix_lo) lo /= 2;
    if (!fix_hi) hi *= 2;
  }
  const double decades = std::log10(hi) - std::log10(lo);
  if (decades < 1) {
    double nlo = lo, nhi = hi;
    NiceDomain(nlo, nhi, 4, fix_lo, fix_hi);
    if (nlo > 0) {
      lo = nlo;
      hi = nhi;
      return;
    }
  }
  const std::vector<int> mantissas = decades < 2 ? std::vector<int>{1, 2, 5} : std::vector<int>{1};
  if (!fix_lo) {
    const int e = static_cast<int>(std::floor(std::log10(lo)));
    double best = Pow10Times(1, e);
    for (const int m : mantissas) {
      if (Pow10Times(m, e) <= lo * (1 + 1e-9)) best = Pow10Times(m, e);
    }
    lo = best;
  }
  if (!fix_hi) {
    const int e = static_cast<int>(std::floor(std::log10(hi)));
    double best = Pow10Times(1, e + 1);
    for (auto m = mantissas.rbegin(); m != mantissas.rend(); ++m) {
      if (Pow10Times(*m, e) >= hi * (1 - 1e-9)) best = Pow10Times(*m, e);
    }
    hi = best;
  }
}

std::string TrimZeros(std::string s) {
  if (s.find('.') == std::string::npos) return s;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

// An x value in a tooltip: integers in full ("step 12000"), others like a tick label.
std::string FormatX(double x) {
  if (x == std::floor(x) && std::fabs(x) < 1e15) return absl::StrFormat("%.0f", x);
  return FormatTickLabel(x);
}

std::string FormatY(double y, bool percent) {
  return percent ? FormatTickLabel(y * 100) + "%" : FormatTickLabel(y);
}

// Maps a domain interval onto a pixel interval, linearly or in log10.
struct Scale {
  double d0, d1, r0, r1;
  bool log = false;
  double operator()(double v) const {
    const double a = log ? std::log10(v) : v;
    const double b0 = log ? std::log10(d0) : d0, b1 = log ? std::log10(d1) : d1;
    return r0 + (a - b0) / (b1 - b0) * (r1 - r0);
  }
};

// FNV-1a, for a deterministic clipPath id.
uint64_t Fnv(uint64_t h, absl::string_view s) {
  for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  return h;
}

struct Prepared {
  const ChartSeries* series;
  std::vector<Point> points;  // finite, sorted by x, downsampled
  std::string color;
};

std::vector<Prepared> Prepare(const std::vector<ChartSeries>& series, const ChartOptions& o) {
  std::vector<Prepared> out;
  size_t next_color = 0;
  for (const ChartSeries& s : series) {
    Prepared p{&s, {}, ""};
    const std::string auto_color = kPalette[next_color % std::size(kPalette)];
    p.color = SafeColor(s.color, auto_color);
    if (s.color.empty()) ++next_color;
    for (const Point& pt : s.points) {
      if (!std::isfinite(pt.first) || !std::isfinite(pt.second)) continue;
      if (o.log_y && !(pt.second > 0)) continue;
      p.points.push_back(pt);
    }
    std::stable_sort(p.points.begin(), p.points.end());
    p.points = DownsampleMinMax(p.points, o.max_points);
    if (!p.points.empty()) out.push_back(std::move(p));
  }
  return out;
}

std::string OpenSvg(const ChartOptions& o) {
  const std::string label = Escape(o.title.empty() ? "chart" : o.title);
  std::string id = o.id.empty() ? "" : absl::StrCat(" id=\"", Escape(o.id), "\"");
  return absl::StrCat("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"forge-chart\"", id,
                      " viewBox=\"0 0 ", o.width, " ", o.height, "\" role=\"img\" aria-label=\"",
                      label, "\">\n<title>", label, "</title>\n<style>", kStyle, "</style>\n");
}

void AppendTitle(const ChartOptions& o, std::string& svg) {
  if (o.title.empty()) return;
  absl::StrAppend(&svg, "<text class=\"title\" x=\"", Num(kPad), "\" y=\"17\">", Escape(o.title),
                  "</text>\n");
}

}  // namespace

std::vector<double> NiceTicks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || target < 1) return {};
  if (lo > hi) std::swap(lo, hi);
  if (lo == hi) return {lo};
  const std::optional<Step> step = NiceStep(lo, hi, target);
  if (!step) return {};
  const double i0 = std::ceil(step->ToUnits(lo) - 1e-6);
  const double i1 = std::floor(step->ToUnits(hi) + 1e-6);
  std::vector<double> ticks;
  if (i1 - i0 > 10000) return ticks;
  for (double i = i0; i <= i1; ++i) ticks.push_back(step->FromUnits(i) + 0.0);  // no -0
  return ticks;
}

std::vector<double> LogTicks(double lo, double hi) {
  if (!(lo > 0) || !(hi >= lo) || !std::isfinite(hi)) return {};
  const double decades = std::log10(hi) - std::log10(lo);
  const int e0 = static_cast<int>(std::floor(std::log10(lo)));
  const int e1 = static_cast<int>(std::ceil(std::log10(hi)));
  // Over many decades, label every k-th one so that at most about 8 labels remain.
  const int every = std::max(1, (e1 - e0 + 7) / 8);
  const std::vector<int> mantissas = decades < 2 ? std::vector<int>{1, 2, 5} : std::vector<int>{1};
  std::vector<double> ticks;
  for (int e = e0; e <= e1; ++e) {
    if (e % every != 0) continue;
    for (const int m : mantissas) {
      const double v = Pow10Times(m, e);
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) ticks.push_back(v);
    }
  }
  if (ticks.size() < 3) {
    std::vector<double> linear = NiceTicks(lo, hi, 4);
    if (linear.size() > ticks.size()) return linear;
  }
  return ticks;
}

std::string FormatTickLabel(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == 0) return "0";
  const std::string sign = v < 0 ? "-" : "";
  const double a = std::fabs(v);
  // Round to 4 significant digits first, so that 999999 is "1M" and 0.30000000000000004 "0.3".
  const std::string sci = absl::StrFormat("%.3e", a);  // "1.235e+03"
  const size_t e_pos = sci.find('e');
  int exponent = 0;
  if (!absl::SimpleAtoi(absl::string_view(sci).substr(e_pos + 1), &exponent)) return sci;
  if (exponent >= 3 && exponent < 15) {
    static constexpr const char* kSuffix[] = {"", "k", "M", "B", "T"};
    const int group = exponent / 3;
    const int decimals = std::max(0, 3 - (exponent - 3 * group));
    return absl::StrCat(sign,
                        TrimZeros(absl::StrFormat("%.*f", decimals, a / std::pow(10.0, 3 * group))),
                        kSuffix[group]);
  }
  if (exponent >= -3 && exponent < 3) {
    return sign + TrimZeros(absl::StrFormat("%.*f", 3 - exponent, a));
  }
  return absl::StrCat(sign, TrimZeros(sci.substr(0, e_pos)), "e", exponent);
}

std::vector<Point> DownsampleMinMax(const std::vector<Point>& points, size_t max_points) {
  max_points = std::max<size_t>(max_points, 4);
  const size_t n = points.size();
  if (n <= max_points) return points;
  const size_t buckets = (max_points - 2) / 2;
  const size_t interior = n - 2;
  std::vector<Point> out;
  out.reserve(max_points);
  out.push_back(points.front());
  for (size_t b = 0; b < buckets; ++b) {
    const size_t begin = 1 + b * interior / buckets;
    const size_t end = 1 + (b + 1) * interior / buckets;
    size_t lo = begin, hi = begin;
    for (size_t i = begin + 1; i < end; ++i) {
      if (points[i].second < points[lo].second) lo = i;
      if (points[i].second > points[hi].second) hi = i;
    }
    out.push_back(points[std::min(lo, hi)]);
    if (lo != hi) out.push_back(points[std::max(lo, hi)]);
  }
  out.push_back(points.back());
  return out;
}

namespace {

// The data's extent, widened by markers and by the fixed y bounds; y not yet "niced".
struct Extent {
  double x_lo, x_hi, y_lo, y_hi;
  bool fix_lo = false, fix_hi = false;  // y bounds given by the caller
};

Extent DataExtent(const std::vector<Prepared>& drawn, const ChartOptions& o) {
  Extent e{drawn[0].points.front().first, drawn[0].points.front().first,
           drawn[0].points.front().second, drawn[0].points.front().second};
  for (const Prepared& p : drawn) {
    e.x_lo = std::min(e.x_lo, p.points.front().first);
    e.x_hi = std::max(e.x_hi, p.points.back().first);
    for (const Point& pt : p.points) {
      e.y_lo = std::min(e.y_lo, pt.second);
      e.y_hi = std::max(e.y_hi, pt.second);
    }
  }
  for (const ChartMarker& m : o.markers) {
    if (std::isfinite(m.x)) e.x_lo = std::min(e.x_lo, m.x), e.x_hi = std::max(e.x_hi, m.x);
  }
  if (e.x_lo == e.x_hi) {
    const double pad = e.x_lo == 0 ? 1 : std::fabs(e.x_lo) * 0.1;
    e.x_lo -= pad;
    e.x_hi += pad;
  }
  auto usable = [&](const std::optional<double>& b) {
    return b.has_value() && std::isfinite(*b) && (!o.log_y || *b > 0);
  };
  e.fix_lo = usable(o.y_min);
  e.fix_hi = usable(o.y_max);
  if (e.fix_lo && e.fix_hi && !(*o.y_min < *o.y_max)) e.fix_lo = e.fix_hi = false;
  if (e.fix_lo) e.y_lo = *o.y_min;
  if (e.fix_hi) e.y_hi = *o.y_max;
  if (e.fix_lo && !e.fix_hi && e.y_hi <= e.y_lo) e.y_hi = o.log_y ? e.y_lo * 10 : e.y_lo + 1;
  if (e.fix_hi && !e.fix_lo && e.y_lo >= e.y_hi) e.y_lo = o.log_y ? e.y_hi / 10 : e.y_hi - 1;
  return e;
}

// Widens the unfixed y ends of `e` to ticks and returns the ticks.
std::vector<double> YTicks(Extent& e, bool log_y, int target) {
  if (log_y) {
    NiceLogDomain(e.y_lo, e.y_hi, e.fix_lo, e.fix_hi);
    return LogTicks(e.y_lo, e.y_hi);
  }
  if (e.y_lo == e.y_hi) {  // all values equal: centre them
    const double pad = e.y_lo == 0 ? 1 : std::fabs(e.y_lo) * 0.1;
    e.y_lo -= pad;
    e.y_hi += pad;
  }
  NiceDomain(e.y_lo, e.y_hi, target, e.fix_lo, e.fix_hi);
  return NiceTicks(e.y_lo, e.y_hi, target);
}

struct LegendItem {
  const Prepared* p;
  double x, y;  // swatch start, text baseline
};

// Places the legend beside the title when it fits there, else in rows under it. Returns the
// bottom edge of the header (title and legend).
double LayoutLegend(const std::vector<Prepared>& drawn, const ChartOptions& o,
                    std::vector<LegendItem>& items) {
  constexpr double kGap = 14;
  const double width = o.width;
  double header_bottom = o.title.empty() ? kPad : 22;
  std::vector<double> widths;
  double total = 0;
  for (const Prepared& p : drawn) {
    widths.push_back(18 + TextWidth(p.series->name, kTickCharWidth));
    total += widths.back() + (widths.size() > 1 ? kGap : 0);
  }
  const double title_end = o.title.empty() ? kPad : kPad + TextWidth(o.title, kTitleCharWidth) + 24;
  if (title_end + total <= width - kPad) {  // one row, right-aligned
    double x = width - kPad - total;
    for (size_t i = 0; i < drawn.size(); ++i) {
      items.push_back({&drawn[i], x, 16});
      x += widths[i] + kGap;
    }
    return 22;
  }
  double x = kPad, y = header_bottom + 14;
  for (size_t i = 0; i < drawn.size(); ++i) {
    if (x > kPad && x + widths[i] > width - kPad) x = kPad, y += 16;
    items.push_back({&drawn[i], x, y});
    x += widths[i] + kGap;
  }
  return y + 6;
}

struct Plot {
  double left, right, top, bottom;
  Scale sx, sy;
};

void AppendAxes(const ChartOptions& o, const Plot& p, const std::vector<double>& x_ticks,
                const std::vector<double>& y_ticks, const std::vector<std::string>& y_labels,
                std::string& svg) {
  std::string grid;
  for (const double t : y_ticks) {
    absl::StrAppend(&grid, "M", Num(p.left), " ", Num(p.sy(t)), "H", Num(p.right));
  }
  for (const double t : x_ticks) {
    absl::StrAppend(&grid, "M", Num(p.sx(t)), " ", Num(p.top), "V", Num(p.bottom));
  }
  absl::StrAppend(&svg, "<path class=\"grid\" d=\"", grid, "\"/>\n<path class=\"axis\" d=\"M",
                  Num(p.left), " ", Num(p.bottom), "H", Num(p.right), "\"/>\n<g class=\"tick\">");
  for (size_t i = 0; i < y_ticks.size(); ++i) {
    absl::StrAppend(&svg, "<text x=\"", Num(p.left - 8), "\" y=\"", Num(p.sy(y_ticks[i]) + 3.5),
                    "\" text-anchor=\"end\">", Escape(y_labels[i]), "</text>");
  }
  for (const double t : x_ticks) {
    const std::string label = FormatTickLabel(t);
    const double half = TextWidth(label, kTickCharWidth) / 2;
    const double x = std::clamp(p.sx(t), kPad + half, o.width - kPad - half);
    absl::StrAppend(&svg, "<text x=\"", Num(x), "\" y=\"", Num(p.bottom + 15),
                    "\" text-anchor=\"middle\">", Escape(label), "</text>");
  }
  svg += "</g>\n";
  if (!o.x_label.empty()) {
    absl::StrAppend(&svg, "<text class=\"axis-label\" x=\"", Num((p.left + p.right) / 2), "\" y=\"",
                    Num(p.bottom + 31), "\" text-anchor=\"middle\">", Escape(o.x_label),
                    "</text>\n");
  }
  if (!o.y_label.empty()) {
    absl::StrAppend(&svg, "<text class=\"axis-label\" transform=\"translate(", Num(kPad + 10), " ",
                    Num((p.top + p.bottom) / 2), ") rotate(-90)\" text-anchor=\"middle\">",
                    Escape(o.y_label), "</text>\n");
  }
}

// Vertical rules; labels at the top, staggered over up to three rows where they would overlap.
void AppendMarkers(const ChartOptions& o, const Plot& p, std::string& svg) {
  std::vector<double> row_end(3, -1e9);
  for (const ChartMarker& m : o.markers) {
    if (!std::isfinite(m.x)) continue;
    const std::string color = SafeColor(m.color, kMarkerColor);
    const double x = p.sx(m.x);
    absl::StrAppend(&svg, "<g class=\"marker\"><title>", Escape(m.label), " (",
                    Escape(FormatX(m.x)), ")</title><line x1=\"", Num(x), "\" y1=\"", Num(p.top),
                    "\" x2=\"", Num(x), "\" y2=\"", Num(p.bottom), "\" stroke=\"", color, "\"/>");
    if (!m.label.empty()) {
      const double w = TextWidth(m.label, kMarkerCharWidth);
      const bool flip = x + 4 + w > p.right;  // label left of the rule
      const double x0 = flip ? x - 4 - w : x + 4;
      size_t row = 0;
      while (row + 1 < row_end.size() && x0 < row_end[row] + 4) ++row;
      row_end[row] = x0 + w;
      absl::StrAppend(&svg, "<text x=\"", Num(flip ? x - 4 : x + 4), "\" y=\"",
                      Num(p.top + 9 + 12 * static_cast<double>(row)), "\" fill=\"", color, "\"",
                      flip ? " text-anchor=\"end\"" : "", ">", Escape(m.label), "</text>");
    }
    svg += "</g>\n";
  }
}

// Polylines, then their points (so no line covers another series' dots), clipped to the plot
// area, which a fixed y range can cut.
void AppendSeries(const std::vector<Prepared>& drawn, const ChartOptions& o, const Plot& p,
                  bool name_in_tooltip, std::string& svg) {
  std::vector<std::string> vertices;  // "x,y x,y ..." per series
  for (const Prepared& s : drawn) {
    std::string& pts = vertices.emplace_back();
    for (const Point& pt : s.points) {
      absl::StrAppend(&pts, pts.empty() ? "" : " ", Num(p.sx(pt.first)), ",", Num(p.sy(pt.second)));
    }
  }
  // The clipPath needs an id that is unique on the page: the caller's, or a hash of everything
  // drawn (so only identical charts share one, harmlessly).
  std::string clip = absl::StrCat(o.id, "-clip");
  if (o.id.empty() || !std::all_of(o.id.begin(), o.id.end(), [](char c) {
        return absl::ascii_isalnum(c) || c == '-' || c == '_';
      })) {
    uint64_t hash = Fnv(1469598103934665603ULL, svg);
    for (size_t i = 0; i < drawn.size(); ++i) {
      hash = Fnv(Fnv(hash, drawn[i].series->name), vertices[i]);
    }
    clip = absl::StrFormat("forge-chart-%016x", hash);
  }
  absl::StrAppend(&svg, "<clipPath id=\"", clip, "\"><rect x=\"", Num(p.left - 4), "\" y=\"",
                  Num(p.top - 4), "\" width=\"", Num(p.right - p.left + 8), "\" height=\"",
                  Num(p.bottom - p.top + 8), "\"/></clipPath>\n<g clip-path=\"url(#", clip,
                  ")\">\n");
  for (size_t i = 0; i < drawn.size(); ++i) {
    const Prepared& s = drawn[i];
    absl::StrAppend(&svg, "<polyline class=\"series\" data-series=\"", Escape(s.series->name),
                    "\" data-points=\"", s.points.size(), "\" points=\"", vertices[i],
                    "\" stroke=\"", s.color, "\"",
                    s.series->dashed ? " stroke-dasharray=\"6 4\"" : "", "/>\n");
  }
  const std::string x_name = o.x_label.empty() ? "x" : o.x_label;
  for (const Prepared& s : drawn) {
    const size_t n = s.points.size();
    if (!(n == 1 || (o.show_points && n <= kMaxVerticesWithPoints))) continue;
    // Dots would break up a dashed line; its tooltips stay, with a dot on hover.
    const bool quiet = s.series->dashed && n > 1;
    const std::string suffix = name_in_tooltip ? absl::StrCat(" (", s.series->name, ")") : "";
    for (const Point& pt : s.points) {
      absl::StrAppend(&svg, "<circle class=\"point", quiet ? " quiet" : "", "\" cx=\"",
                      Num(p.sx(pt.first)), "\" cy=\"", Num(p.sy(pt.second)), "\" r=\"",
                      n == 1 ? "3.5" : "2.5", "\" fill=\"", s.color, "\"><title>",
                      Escape(absl::StrCat(x_name, " ", FormatX(pt.first), ": ",
                                          FormatY(pt.second, o.y_percent), suffix)),
                      "</title></circle>\n");
    }
  }
  svg += "</g>\n";
}

void AppendLegend(const std::vector<LegendItem>& items, std::string& svg) {
  if (items.empty()) return;
  svg += "<g class=\"legend\">";
  for (const LegendItem& item : items) {
    absl::StrAppend(&svg, "<line x1=\"", Num(item.x), "\" y1=\"", Num(item.y - 4), "\" x2=\"",
                    Num(item.x + 13), "\" y2=\"", Num(item.y - 4), "\" stroke=\"", item.p->color,
                    "\"", item.p->series->dashed ? " stroke-dasharray=\"4 3\"" : "", "/><text x=\"",
                    Num(item.x + 18), "\" y=\"", Num(item.y), "\">", Escape(item.p->series->name),
                    "</text>");
  }
  svg += "</g>\n";
}

void AppendNoData(const ChartOptions& o, std::string& svg) {
  const double top = o.title.empty() ? kPad : 28;
  absl::StrAppend(&svg, "<rect class=\"grid\" x=\"", Num(kPad), "\" y=\"", Num(top), "\" width=\"",
                  Num(o.width - 2 * kPad), "\" height=\"", Num(o.height - top - kPad),
                  "\" rx=\"4\" stroke-dasharray=\"4 4\"/>\n", "<text class=\"empty\" x=\"",
                  Num(o.width / 2.0), "\" y=\"", Num((top + o.height - kPad) / 2 + 4),
                  "\" text-anchor=\"middle\">", "no data yet</text>\n");
}

}  // namespace

std::string RenderLineChart(const std::vector<ChartSeries>& series, const ChartOptions& options) {
  ChartOptions o = options;
  o.width = std::max(o.width, 160);
  o.height = std::max(o.height, 100);
  const std::vector<Prepared> drawn = Prepare(series, o);
  std::string svg = OpenSvg(o);
  AppendTitle(o, svg);
  if (drawn.empty()) {
    AppendNoData(o, svg);
    return svg + "</svg>\n";
  }

  std::vector<LegendItem> legend;
  const double header_bottom =
      series.size() > 1 ? LayoutLegend(drawn, o, legend) : (o.title.empty() ? kPad : 22);
  const double top = header_bottom + 12;
  const double bottom = o.height - kPad - (o.x_label.empty() ? 14 : 30);
  Extent e = DataExtent(drawn, o);
  // About one y tick per 32 px (5 on the default 260 px height), 80 px per x tick.
  const std::vector<double> y_ticks =
      YTicks(e, o.log_y, std::clamp(static_cast<int>((bottom - top) / 32), 2, 5));
  std::vector<std::string> y_labels;
  double y_label_width = 0;
  for (const double t : y_ticks) {
    y_labels.push_back(FormatY(t, o.y_percent));
    y_label_width = std::max(y_label_width, TextWidth(y_labels.back(), kTickCharWidth));
  }
  const double left = kPad + (o.y_label.empty() ? 0 : 18) + y_label_width + 8;
  const double right = o.width - kPad - 8;
  const Plot plot{left,
                  right,
                  top,
                  bottom,
                  Scale{e.x_lo, e.x_hi, left, right},
                  Scale{e.y_lo, e.y_hi, bottom, top, o.log_y}};
  const std::vector<double> x_ticks =
      NiceTicks(e.x_lo, e.x_hi, std::clamp(static_cast<int>((right - left) / 80), 2, 6));

  AppendAxes(o, plot, x_ticks, y_ticks, y_labels, svg);
  AppendMarkers(o, plot, svg);
  AppendSeries(drawn, o, plot, /*name_in_tooltip=*/series.size() > 1, svg);
  AppendLegend(legend, svg);
  return svg + "</svg>\n";
}

}  // namespace forge::coordinator
