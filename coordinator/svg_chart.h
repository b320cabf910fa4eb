// Server-side SVG line charts for the coordinator's dashboard: no JavaScript, one
// self-contained <svg> per chart that the page inlines. The output is deterministic (same input,
// same bytes) and compact (coordinates to one decimal), and every piece of text in it, which may
// come from users (job names, series names), is XML-escaped.
//
// Structure of the output, which the dashboard's browser tests rely on:
//   <svg class="forge-chart" role="img" aria-label=TITLE ...> <title>TITLE</title> <style>...
//   one <polyline class="series" data-series=NAME data-points=N points="x,y ..."> per series
//     with at least one drawable point (N = vertices drawn, after downsampling);
//   when ChartOptions::show_points applies, one <circle class="point"> per vertex, each with a
//     <title> tooltip such as "step 120: 2.345".
// CSS classes (axis, grid, tick, legend, marker, series, point, title, empty) are scoped under
// `.forge-chart` by a small inline <style>, so the page can theme them with its own rules.
//
// Pure functions of their arguments; thread-safe.
#ifndef FORGE_COORDINATOR_SVG_CHART_H_
#define FORGE_COORDINATOR_SVG_CHART_H_

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace forge::coordinator {

struct ChartSeries {
  std::string name;  // legend text and data-series attribute
  // (x, y) in any order (sorted by x before drawing). Points with a NaN or infinite coordinate
  // are skipped, and so are points with y <= 0 on a log axis.
  std::vector<std::pair<double, double>> points;
  // CSS colour ("#0072B2", "rgb(0, 114, 178)", "teal"); empty = the next colour of the
  // Okabe-Ito palette (colour-blind safe), counting only series that left this empty. A value
  // with characters other than [A-Za-z0-9#(),.% -] is ignored like an empty one.
  std::string color;
  bool dashed = false;  // e.g. a requested/target value drawn against the realised one
};

// A vertical dashed rule at `x` (a restart, a checkpoint) with a small label at its top.
struct ChartMarker {
  double x = 0;
  std::string label;
  std::string color;  // as ChartSeries::color; empty = muted grey
};

struct ChartOptions {
  // DOM id of the <svg>; empty = no id attribute. Also names the chart's clipPath ("ID-clip");
  // without a usable id ([A-Za-z0-9_-]) the clipPath id is a hash of the chart.
  std::string id;
  std::string title;  // drawn at top-left, and as <title> and aria-label
  std::string x_label, y_label;
  // viewBox units, at least 160 x 100; the svg scales to its container's width.
  int width = 640, height = 260;
  bool log_y = false;  // log10 y axis (loss curves)
  // Fixed y range (e.g. 0..1 for mixture fractions); unset ends fit the data. On a log axis a
  // non-positive bound is ignored. Points outside the range are clipped.
  std::optional<double> y_min, y_max;
  bool y_percent = false;  // y tick labels and tooltips as percentages (0.25 -> "25%")
  // Markers outside the data's x range widen it.
  std::vector<ChartMarker> markers;
  // Vertices per series after downsampling; values below 4 count as 4.
  size_t max_points = 500;
  // Draw a circle with a tooltip at each vertex of a series with at most 80 vertices after
  // downsampling. A series with one vertex always gets its circle (a lone vertex has no line).
  bool show_points = true;
};

// The chart as one <svg> element. No drawable point at all draws the frame with centred text
// "no data yet".
std::string RenderLineChart(const std::vector<ChartSeries>& series, const ChartOptions& options);

// "Nice" tick values covering [lo, hi]: multiples of 1, 2 or 5 times a power of ten, spaced so
// that there are about `target` of them, all within [lo, hi] (both ends included when they are
// multiples). Exact decimal values: NiceTicks(0, 1, 5) = {0, 0.2, 0.4, 0.6, 0.8, 1}.
// lo == hi gives {lo}; a non-finite bound or target < 1 gives {}. lo > hi is swapped.
std::vector<double> NiceTicks(double lo, double hi, int target);

// Ticks for a log10 axis over [lo, hi], 0 < lo <= hi: every power of ten within the range,
// and also 2x and 5x a power of ten when the range spans under two decades; when that still
// gives fewer than three ticks, NiceTicks(lo, hi, 4) instead. Over many decades only every
// k-th power is kept (exponents divisible by k), about 8 at most. Invalid input gives {}.
std::vector<double> LogTicks(double lo, double hi);

// Compact tick label: 0 -> "0", 1200 -> "1.2k", 2.5e6 -> "2.5M", 3e9 -> "3B", 3e-4 -> "3e-4",
// 0.0123 -> "0.0123", 2.5 -> "2.5"; at most 4 significant digits; negative values with '-'.
std::string FormatTickLabel(double v);

// Downsamples `points`, REQUIRES: sorted by x, to at most max(max_points, 4) points: the first
// and last points, and the minimum-y and maximum-y point of each of (max_points - 2) / 2
// equal-count buckets of the rest, in x order, so spikes survive. Fewer points than the limit
// are returned unchanged.
std::vector<std::pair<double, double>> DownsampleMinMax(
    const std::vector<std::pair<double, double>>& points, size_t max_points);

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_SVG_CHART_H_
