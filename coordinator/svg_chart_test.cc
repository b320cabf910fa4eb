#include "coordinator/svg_chart.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace forge::coordinator {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using Points = std::vector<std::pair<double, double>>;

// A small XML checker, enough for what RenderLineChart emits: one root element; tags balance;
// attributes are double-quoted and unique; no raw '<' in text or attribute values; every '&'
// starts one of the five entities the renderer writes.
::testing::AssertionResult WellFormed(const std::string& xml) {
  auto fail = [&](size_t pos, const std::string& why) {
    return ::testing::AssertionFailure()
           << why << " at " << pos << ": ..." << xml.substr(pos > 40 ? pos - 40 : 0, 80) << "...";
  };
  auto entity_at = [&](size_t pos) {
    for (const char* e : {"&amp;", "&lt;", "&gt;", "&quot;", "&#39;"}) {
      if (xml.compare(pos, std::strlen(e), e) == 0) return true;
    }
    return false;
  };
  auto name_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == ':' || c == '_';
  };
  std::vector<std::string> open;
  bool root_closed = false;
  size_t i = 0;
  while (i < xml.size()) {
    const char c = xml[i];
    if (c == '&') {
      if (!entity_at(i)) return fail(i, "bare '&'");
      ++i;
    } else if (c != '<') {
      if (open.empty() && !std::isspace(static_cast<unsigned char>(c))) {
        return fail(i, "text outside the root element");
      }
      ++i;
    } else if (xml.compare(i, 2, "</") == 0) {
      const size_t end = xml.find('>', i);
      if (end == std::string::npos) return fail(i, "unterminated end tag");
      const std::string name = xml.substr(i + 2, end - i - 2);
      if (open.empty() || open.back() != name) return fail(i, "mismatched </" + name + ">");
      open.pop_back();
      root_closed = open.empty();
      i = end + 1;
    } else {
      if (root_closed) return fail(i, "second root element");
      size_t j = i + 1;
      while (j < xml.size() && name_char(xml[j])) ++j;
      const std::string name = xml.substr(i + 1, j - i - 1);
      if (name.empty()) return fail(i, "'<' without a tag name");
      std::set<std::string> attrs;
      while (true) {
        while (j < xml.size() && xml[j] == ' ') ++j;
        if (j >= xml.size()) return fail(i, "unterminated tag");
        if (xml.compare(j, 2, "/>") == 0) {
          j += 2;
          root_closed = open.empty();
          break;
        }
        if (xml[j] == '>') {
          open.push_back(name);
          ++j;
          break;
        }
        const size_t a = j;
        while (j < xml.size() && name_char(xml[j])) ++j;
        const std::string attr = xml.substr(a, j - a);
        if (attr.empty() || xml.compare(j, 2, "=\"") != 0) return fail(j, "bad attribute");
        if (!attrs.insert(attr).second) return fail(a, "duplicate attribute " + attr);
        const size_t close = xml.find('"', j + 2);
        if (close == std::string::npos) return fail(j, "unterminated attribute value");
        for (size_t k = j + 2; k < close; ++k) {
          if (xml[k] == '<') return fail(k, "'<' in attribute value");
          if (xml[k] == '&' && !entity_at(k)) return fail(k, "bare '&' in attribute value");
        }
        j = close + 1;
      }
      i = j;
    }
  }
  if (!open.empty()) return fail(xml.size(), "unclosed <" + open.back() + ">");
  if (!root_closed) return fail(0, "no root element");
  return ::testing::AssertionSuccess();
}

struct Polyline {
  std::string series;
  int data_points = 0;
  std::vector<std::pair<double, double>> vertices;
  std::string tag;
};

std::vector<Polyline> Polylines(const std::string& svg) {
  static const std::regex kTag(R"(<polyline [^>]*>)");
  static const std::regex kAttrs(
      R"re(data-series="([^"]*)" data-points="(\d+)" points="([^"]*)")re");
  std::vector<Polyline> out;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), kTag); it != std::sregex_iterator();
       ++it) {
    Polyline p;
    p.tag = it->str();
    std::smatch m;
    EXPECT_TRUE(std::regex_search(p.tag, m, kAttrs)) << p.tag;
    p.series = m[1];
    p.data_points = std::stoi(m[2]);
    for (absl::string_view v : absl::StrSplit(std::string(m[3]), ' ')) {
      std::pair<absl::string_view, absl::string_view> xy = absl::StrSplit(v, ',');
      std::pair<double, double> vertex;
      EXPECT_TRUE(absl::SimpleAtod(xy.first, &vertex.first)) << v;
      EXPECT_TRUE(absl::SimpleAtod(xy.second, &vertex.second)) << v;
      p.vertices.push_back(vertex);
    }
    out.push_back(std::move(p));
  }
  return out;
}

int Count(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

Points Line(int n, double (*f)(int)) {
  Points p;
  for (int i = 0; i < n; ++i) p.emplace_back(i, f(i));
  return p;
}

TEST(RenderLineChartTest, IsOneWellFormedSvgWithTitleAndLabel) {
  ChartOptions options;
  options.id = "loss";
  options.title = "Training loss";
  options.x_label = "step";
  options.y_label = "loss";
  const std::string svg = RenderLineChart(
      {{"train", Line(50, [](int i) { return 3.0 / (1 + 0.1 * i); }), "", false}}, options);
  EXPECT_TRUE(WellFormed(svg));
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u) << svg.substr(0, 80);
  EXPECT_THAT(svg, AllOf(HasSubstr(" id=\"loss\""), HasSubstr("viewBox=\"0 0 640 260\""),
                         HasSubstr("role=\"img\""), HasSubstr("aria-label=\"Training loss\""),
                         HasSubstr("<title>Training loss</title>"), HasSubstr("<style>"),
                         HasSubstr(">step</text>"), HasSubstr(">loss</text>")));
  EXPECT_THAT(svg, Not(HasSubstr("class=\"legend\"")));  // one series: no legend
}

TEST(RenderLineChartTest, EscapesEveryUserString) {
  const std::string evil = "<script>alert(\"x&y\")</script>'";
  ChartOptions options;
  options.id = evil;
  options.title = evil;
  options.x_label = evil;
  options.y_label = evil;
  options.markers = {{5, evil, "red\" onload=\"alert(1)"}};
  const std::string svg = RenderLineChart(
      {{evil, {{0, 1}, {10, 2}}, "blue\" onmouseover=\"x", false}, {"b&b", {{0, 3}}, "", true}},
      options);
  EXPECT_TRUE(WellFormed(svg));
  EXPECT_THAT(svg, Not(HasSubstr("<script")));
  EXPECT_THAT(svg, Not(HasSubstr("onload")));
  EXPECT_THAT(svg, Not(HasSubstr("onmouseover")));
  EXPECT_THAT(svg, HasSubstr("&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"));
  EXPECT_THAT(svg, HasSubstr("data-series=\"b&amp;b\""));
  EXPECT_TRUE(WellFormed(RenderLineChart({}, options)));  // the empty chart too
}

TEST(RenderLineChartTest, ControlCharactersDoNotBreakXml) {
  ChartOptions options;
  options.title = std::string(
      "a\x01"
      "b\x1f",
      4);
  const std::string svg = RenderLineChart({{"s\x02", {{1, 1}, {2, 2}}, "", false}}, options);
  EXPECT_TRUE(WellFormed(svg));
  EXPECT_THAT(svg, HasSubstr("<title>a b </title>"));
}

TEST(RenderLineChartTest, DataPointsCountDrawnVerticesAndPointsHaveTooltips) {
  ChartOptions options;
  options.x_label = "step";
  options.max_points = 200;
  const std::string svg =
      RenderLineChart({{"few", {{2, 1.5}, {0, 2.345}, {1, 2}}, "", false},  // unsorted on purpose
                       {"hundred", Line(100, [](int i) { return std::sin(i * 0.1); }), "", false},
                       {"many", Line(1000, [](int i) { return std::cos(i * 0.01); }), "", false}},
                      options);
  ASSERT_TRUE(WellFormed(svg));
  const std::vector<Polyline> lines = Polylines(svg);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].series, "few");
  EXPECT_EQ(lines[0].data_points, 3);
  EXPECT_EQ(lines[1].data_points, 100);
  EXPECT_EQ(lines[2].data_points, 200);
  for (const Polyline& line : lines) {
    EXPECT_EQ(line.data_points, static_cast<int>(line.vertices.size())) << line.series;
    for (size_t i = 1; i < line.vertices.size(); ++i) {
      EXPECT_LE(line.vertices[i - 1].first, line.vertices[i].first) << line.series;
    }
  }
  // Circles only for the series with at most 80 vertices; legend tooltips name the series.
  EXPECT_EQ(Count(svg, "<circle class=\"point\""), 3);
  EXPECT_THAT(svg, HasSubstr("<title>step 0: 2.345 (few)</title>"));
  EXPECT_THAT(svg, HasSubstr("<title>step 2: 1.5 (few)</title>"));
  options.show_points = false;
  EXPECT_EQ(Count(RenderLineChart({{"few", {{0, 1}, {1, 2}}, "", false}}, options), "<circle"), 0);
}

TEST(RenderLineChartTest, SinglePointIsACircle) {
  ChartOptions options;
  options.x_label = "step";
  options.show_points = false;  // a lone vertex is drawn anyway
  const std::string svg = RenderLineChart({{"loss", {{120, 2.345}}, "", false}}, options);
  ASSERT_TRUE(WellFormed(svg));
  ASSERT_EQ(Polylines(svg).size(), 1u);
  EXPECT_EQ(Polylines(svg)[0].data_points, 1);
  EXPECT_EQ(Count(svg, "<circle class=\"point\""), 1);
  EXPECT_THAT(svg, HasSubstr("<title>step 120: 2.345</title>"));
  EXPECT_THAT(svg, AllOf(Not(HasSubstr("nan")), Not(HasSubstr("inf"))));
}

TEST(RenderLineChartTest, EqualYValuesArePaddedIntoTheMiddle) {
  const std::string svg =
      RenderLineChart({{"flat", Line(10, [](int) { return 5.0; }), "", false}}, ChartOptions());
  ASSERT_TRUE(WellFormed(svg));
  const std::vector<Polyline> lines = Polylines(svg);
  ASSERT_EQ(lines.size(), 1u);
  const double y = lines[0].vertices[0].second;
  for (const auto& v : lines[0].vertices) EXPECT_EQ(v.second, y);
  // 5 +- 10% niced to 4.4..5.6: the line sits halfway down the plot area.
  EXPECT_THAT(svg,
              AllOf(HasSubstr(">4.4</text>"), HasSubstr(">5</text>"), HasSubstr(">5.6</text>")));
  EXPECT_GT(y, 60);
  EXPECT_LT(y, 200);
}

TEST(RenderLineChartTest, SkipsNonFinitePoints) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::string svg = RenderLineChart(
      {{"s", {{0, 1}, {1, nan}, {2, 3}, {inf, 4}, {3, -inf}, {nan, 0}, {4, 2}}, "", false}},
      ChartOptions());
  ASSERT_TRUE(WellFormed(svg));
  ASSERT_EQ(Polylines(svg).size(), 1u);
  EXPECT_EQ(Polylines(svg)[0].data_points, 3);
  EXPECT_THAT(svg, AllOf(Not(HasSubstr("nan")), Not(HasSubstr("inf"))));
}

TEST(RenderLineChartTest, LogAxisDropsNonPositiveValuesAndTicksDecades) {
  ChartOptions options;
  options.log_y = true;
  const std::string svg =
      RenderLineChart({{"loss", {{0, -1}, {1, 0}, {2, 0.5}, {3, 1}, {4, 10}}, "", false}}, options);
  ASSERT_TRUE(WellFormed(svg));
  const std::vector<Polyline> lines = Polylines(svg);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].data_points, 3);
  // 0.5..10 spans under two decades: 1-2-5 ticks.
  for (const char* tick : {">0.5<", ">1<", ">2<", ">5<", ">10<"}) EXPECT_THAT(svg, HasSubstr(tick));
  // Distances are proportional to log ratios: 1 -> 10 is log2(10) times 0.5 -> 1.
  const double y05 = lines[0].vertices[0].second, y1 = lines[0].vertices[1].second,
               y10 = lines[0].vertices[2].second;
  EXPECT_NEAR((y1 - y10) / (y05 - y1), std::log10(10.0) / std::log10(2.0), 0.05);

  EXPECT_THAT(RenderLineChart({{"loss", {{0, -1}, {1, 0}}, "", false}}, options),
              HasSubstr("no data yet"));
}

TEST(RenderLineChartTest, NoDrawablePointsShowsNoDataYet) {
  ChartOptions options;
  options.title = "Throughput";
  const std::vector<std::vector<ChartSeries>> inputs = {
      {},
      {{"a", {}, "", false}, {"b", {}, "", false}},
      {{"a", {{std::nan(""), 1}}, "", false}},
  };
  for (const std::vector<ChartSeries>& input : inputs) {
    const std::string svg = RenderLineChart(input, options);
    EXPECT_TRUE(WellFormed(svg));
    EXPECT_THAT(svg, AllOf(HasSubstr(">no data yet</text>"), HasSubstr("<title>Throughput</title>"),
                           Not(HasSubstr("<polyline"))));
  }
}

TEST(RenderLineChartTest, LegendColoursAndDashes) {
  const std::string svg = RenderLineChart({{"realised", {{0, 1}, {1, 2}}, "", false},
                                           {"requested", {{0, 1.5}, {1, 1.5}}, "", true},
                                           {"custom", {{0, 0}, {1, 3}}, "rgb(1, 2, 3)", false},
                                           {"third", {{0, 2}, {1, 0}}, "", false}},
                                          ChartOptions());
  ASSERT_TRUE(WellFormed(svg));
  const std::vector<Polyline> lines = Polylines(svg);
  ASSERT_EQ(lines.size(), 4u);
  // The palette advances only for series without a colour of their own.
  EXPECT_THAT(lines[0].tag, HasSubstr("stroke=\"#0072B2\""));
  EXPECT_THAT(lines[1].tag, AllOf(HasSubstr("stroke=\"#E69F00\""), HasSubstr("stroke-dasharray")));
  EXPECT_THAT(lines[2].tag, HasSubstr("stroke=\"rgb(1, 2, 3)\""));
  EXPECT_THAT(lines[3].tag, AllOf(HasSubstr("stroke=\"#009E73\""), Not(HasSubstr("dasharray"))));
  EXPECT_THAT(svg, AllOf(HasSubstr("class=\"legend\""), HasSubstr(">realised</text>"),
                         HasSubstr(">requested</text>"), HasSubstr(">third</text>")));
}

TEST(RenderLineChartTest, MarkersArePlacedOnTheXScale) {
  ChartOptions options;
  options.markers = {{50, "restart", ""}, {100, "ckpt", "#D55E00"}};
  const std::string svg =
      RenderLineChart({{"loss", Line(101, [](int i) { return 1.0 * i; }), "", false}}, options);
  ASSERT_TRUE(WellFormed(svg));
  EXPECT_EQ(Count(svg, "<g class=\"marker\">"), 2);
  EXPECT_THAT(svg, AllOf(HasSubstr(">restart</text>"), HasSubstr(">ckpt</text>")));
  // The marker at x=50 is halfway between the first and last vertices.
  const std::vector<Polyline> lines = Polylines(svg);
  ASSERT_EQ(lines.size(), 1u);
  const double mid = (lines[0].vertices.front().first + lines[0].vertices.back().first) / 2;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(svg, m, std::regex(R"re(<line x1="([\d.]+)")re")));
  EXPECT_NEAR(std::stod(m[1]), mid, 0.1);
}

TEST(RenderLineChartTest, FixedPercentRange) {
  ChartOptions options;
  options.y_min = 0;
  options.y_max = 1;
  options.y_percent = true;
  options.x_label = "step";
  const std::string svg = RenderLineChart({{"code", {{0, 0.25}, {10, 0.3}}, "", false}}, options);
  ASSERT_TRUE(WellFormed(svg));
  for (const char* tick : {">0%<", ">20%<", ">60%<", ">100%<"}) EXPECT_THAT(svg, HasSubstr(tick));
  EXPECT_THAT(svg, HasSubstr("<title>step 0: 25%</title>"));
}

TEST(RenderLineChartTest, DownsamplesHugeSeriesToMaxPoints) {
  ChartOptions options;
  options.max_points = 300;
  Points points = Line(100000, [](int i) { return std::sin(i * 0.001); });
  points[54321].second = 50;  // a spike must survive
  const std::string svg = RenderLineChart({{"loss", points, "", false}}, options);
  const std::vector<Polyline> lines = Polylines(svg);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].data_points, 300);  // 2 ends + 149 buckets x (min, max)
  EXPECT_EQ(Count(svg, "<circle"), 0);
  // Without the spike the y axis would end at 1.
  EXPECT_THAT(svg, HasSubstr(">50</text>"));
}

TEST(RenderLineChartTest, IsDeterministic) {
  ChartOptions options;
  options.title = "Mixture";
  options.markers = {{3, "restart", ""}};
  const std::vector<ChartSeries> series = {{"a", {{3, 1}, {1, 2}, {2, 2}}, "", false},
                                           {"b", {{1, 0.5}, {3, 0.25}}, "", true}};
  const std::string first = RenderLineChart(series, options);
  EXPECT_EQ(first, RenderLineChart(series, options));
  // Charts on one page need distinct clipPath ids: the caller's id, else a hash of the chart.
  EXPECT_THAT(first, HasSubstr("clip-path=\"url(#forge-chart-"));
  std::vector<ChartSeries> other = series;
  other[0].points[0].second = 1.5;
  const std::string second = RenderLineChart(other, options);
  auto clip_id = [](const std::string& svg) {
    std::smatch m;
    EXPECT_TRUE(std::regex_search(svg, m, std::regex(R"re(<clipPath id="([^"]+)")re")));
    return m[1].str();
  };
  EXPECT_NE(clip_id(first), clip_id(second));
  options.id = "mix";
  EXPECT_EQ(clip_id(RenderLineChart(series, options)), "mix-clip");
  options.id = "mix 1";  // not usable in url(#...)
  EXPECT_THAT(clip_id(RenderLineChart(series, options)), testing::StartsWith("forge-chart-"));
}

TEST(RenderLineChartTest, OddInputsStayWellFormedAndFinite) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> exponent(-12, 12);
  for (int round = 0; round < 200; ++round) {
    ChartOptions options;
    options.width = 100 + static_cast<int>(rng() % 700);
    options.height = 50 + static_cast<int>(rng() % 300);
    options.log_y = rng() % 2;
    options.y_percent = rng() % 3 == 0;
    if (rng() % 4 == 0) options.y_min = rng() % 2 ? 0.0 : -std::pow(10, exponent(rng));
    if (rng() % 4 == 0) options.y_max = std::pow(10, exponent(rng));
    options.max_points = rng() % 50;
    options.title = rng() % 2 ? "a rather long title for a small chart" : "";
    options.markers = {{nan, "nan", ""}, {std::pow(10, exponent(rng)), "m", ""}};
    std::vector<ChartSeries> series(1 + rng() % 4);
    for (ChartSeries& s : series) {
      s.name = "series with a long name";
      const double scale = std::pow(10, exponent(rng));
      const int n = static_cast<int>(rng() % 120);
      for (int i = 0; i < n; ++i) {
        const double sign = rng() % 5 == 0 ? -1 : 1;
        s.points.emplace_back(scale * static_cast<double>(rng() % 1000),
                              rng() % 30 == 0 ? nan : sign * scale * (1 + rng() % 100));
      }
    }
    const std::string svg = RenderLineChart(series, options);
    ASSERT_TRUE(WellFormed(svg)) << "round " << round;
    ASSERT_THAT(svg, AllOf(Not(HasSubstr("nan\"")), Not(HasSubstr("inf")), Not(HasSubstr("nan,")),
                           Not(HasSubstr(",nan"))))
        << "round " << round;
    for (const Polyline& line : Polylines(svg)) {
      ASSERT_EQ(line.data_points, static_cast<int>(line.vertices.size()));
      ASSERT_LE(line.vertices.size(), std::max<size_t>(options.max_points, 4));
    }
  }
}

TEST(DownsampleMinMaxTest, KeepsEndsExtremesAndBound) {
  Points points = Line(10000, [](int i) { return std::sin(i * 0.01); });
  points[5000].second = 100;
  points[7777].second = -100;
  const Points out = DownsampleMinMax(points, 500);
  EXPECT_LE(out.size(), 500u);
  EXPECT_GE(out.size(), 450u);
  EXPECT_EQ(out.front(), points.front());
  EXPECT_EQ(out.back(), points.back());
  EXPECT_THAT(out, Contains(points[5000]));
  EXPECT_THAT(out, Contains(points[7777]));
  for (size_t i = 1; i < out.size(); ++i) EXPECT_LT(out[i - 1].first, out[i].first);
}

TEST(DownsampleMinMaxTest, SmallInputsAndTinyLimits) {
  const Points three = {{0, 1}, {1, 5}, {2, 3}};
  EXPECT_EQ(DownsampleMinMax(three, 3), three);
  EXPECT_EQ(DownsampleMinMax({}, 10), Points{});
  const Points many = Line(100, [](int i) { return i % 7 == 0 ? 9.0 : 1.0 * (i % 3); });
  const Points four = DownsampleMinMax(many, 0);  // counts as 4: ends + one bucket's min, max
  ASSERT_EQ(four.size(), 4u);
  EXPECT_EQ(four.front(), many.front());
  EXPECT_EQ(four.back(), many.back());
  EXPECT_EQ(four[1].second, 0);
  EXPECT_EQ(four[2].second, 9);
  const Points flat = DownsampleMinMax(Line(100, [](int) { return 1.0; }), 10);
  EXPECT_EQ(flat.size(), 6u);  // ends + 4 buckets whose min and max are one point
}

TEST(NiceTicksTest, ExactValues) {
  EXPECT_THAT(NiceTicks(0, 1, 5), ElementsAre(0, 0.2, 0.4, 0.6, 0.8, 1));
  EXPECT_THAT(NiceTicks(0, 100, 5), ElementsAre(0, 20, 40, 60, 80, 100));
  EXPECT_THAT(NiceTicks(0, 1234, 6), ElementsAre(0, 200, 400, 600, 800, 1000, 1200));
  EXPECT_THAT(NiceTicks(-1, 1, 4), ElementsAre(-1, -0.5, 0, 0.5, 1));
  EXPECT_THAT(NiceTicks(0.3, 0.7, 4), ElementsAre(0.3, 0.4, 0.5, 0.6, 0.7));
  EXPECT_THAT(NiceTicks(1e-4, 5e-4, 4), ElementsAre(1e-4, 2e-4, 3e-4, 4e-4, 5e-4));
  EXPECT_THAT(NiceTicks(3, 97, 5), ElementsAre(20, 40, 60, 80));
  EXPECT_THAT(NiceTicks(1e6, 5e6, 4), ElementsAre(1e6, 2e6, 3e6, 4e6, 5e6));
  EXPECT_THAT(NiceTicks(10, 0, 2), ElementsAre(0, 5, 10));  // swapped
  EXPECT_THAT(NiceTicks(2, 2, 5), ElementsAre(2));
  EXPECT_THAT(NiceTicks(0, std::nan(""), 5), ElementsAre());
  EXPECT_THAT(NiceTicks(0, 1, 0), ElementsAre());
  // No negative zero: it would print as "-0".
  for (double t : NiceTicks(-0.5, 0.5, 2)) EXPECT_FALSE(t == 0 && std::signbit(t));
}

TEST(LogTicksTest, DecadesAndFinerSteps) {
  EXPECT_THAT(LogTicks(1, 1000), ElementsAre(1, 10, 100, 1000));
  EXPECT_THAT(LogTicks(0.5, 10), ElementsAre(0.5, 1, 2, 5, 10));
  EXPECT_THAT(LogTicks(2, 20), ElementsAre(2, 5, 10, 20));
  EXPECT_THAT(LogTicks(1e-3, 1e3), ElementsAre(1e-3, 1e-2, 1e-1, 1, 10, 100, 1e3));
  EXPECT_THAT(LogTicks(1e-10, 1e10), ElementsAre(1e-9, 1e-6, 1e-3, 1, 1e3, 1e6, 1e9));
  EXPECT_THAT(LogTicks(2, 5), ElementsAre(2, 3, 4, 5));  // 1-2-5 alone would give two
  EXPECT_THAT(LogTicks(0, 10), ElementsAre());
  EXPECT_THAT(LogTicks(10, 1), ElementsAre());
}

TEST(FormatTickLabelTest, CompactLabels) {
  EXPECT_EQ(FormatTickLabel(0), "0");
  EXPECT_EQ(FormatTickLabel(1200), "1.2k");
  EXPECT_EQ(FormatTickLabel(1000), "1k");
  EXPECT_EQ(FormatTickLabel(12500), "12.5k");
  EXPECT_EQ(FormatTickLabel(250000), "250k");
  EXPECT_EQ(FormatTickLabel(2.5e6), "2.5M");
  EXPECT_EQ(FormatTickLabel(3e9), "3B");
  EXPECT_EQ(FormatTickLabel(999999), "1M");
  EXPECT_EQ(FormatTickLabel(1.5e15), "1.5e15");
  EXPECT_EQ(FormatTickLabel(3e-4), "3e-4");
  EXPECT_EQ(FormatTickLabel(2.5e-5), "2.5e-5");
  EXPECT_EQ(FormatTickLabel(0.001), "0.001");
  EXPECT_EQ(FormatTickLabel(0.0123), "0.0123");
  EXPECT_EQ(FormatTickLabel(0.1 + 0.2), "0.3");
  EXPECT_EQ(FormatTickLabel(2.5), "2.5");
  EXPECT_EQ(FormatTickLabel(2.34567), "2.346");
  EXPECT_EQ(FormatTickLabel(123.4), "123.4");
  EXPECT_EQ(FormatTickLabel(100), "100");
  EXPECT_EQ(FormatTickLabel(-1500), "-1.5k");
  EXPECT_EQ(FormatTickLabel(-0.25), "-0.25");
}

// Writes an example page next to the test binary (build/tests/svg_chart_example.html) for a
// person to look at, e.g. with chromium --headless --screenshot.
TEST(RenderLineChartTest, WritesExamplePage) {
  std::vector<ChartSeries> loss = {{"train", {}, "", false}, {"eval", {}, "", false}};
  for (int step = 0; step <= 3000; step += 10) {
    const double base = 2.1 + 8.7 * std::exp(-step / 400.0);
    loss[0].points.emplace_back(step,
                                base + 0.15 * std::sin(step * 0.37) + (step == 1510 ? 1.5 : 0));
    if (step % 250 == 0) loss[1].points.emplace_back(step, base + 0.2);
  }
  ChartOptions loss_options;
  loss_options.id = "loss";
  loss_options.title = "Loss";
  loss_options.x_label = "step";
  loss_options.y_label = "loss";
  loss_options.log_y = true;
  loss_options.markers = {{1000, "checkpoint", ""}, {1500, "restart", "#D55E00"}};

  std::vector<ChartSeries> mixture = {{"web", {}, "", false},
                                      {"code", {}, "", false},
                                      {"web (requested)", {}, "#0072B2", true},
                                      {"code (requested)", {}, "#E69F00", true}};
  for (int step = 0; step <= 2000; step += 100) {
    const double web = 0.7 - 0.1 * step / 2000.0;
    mixture[0].points.emplace_back(step, web);
    mixture[1].points.emplace_back(step, 1 - web);
    mixture[2].points.emplace_back(step, 0.6);
    mixture[3].points.emplace_back(step, 0.4);
  }
  ChartOptions mixture_options;
  mixture_options.id = "mixture";
  mixture_options.title = "Data mixture";
  mixture_options.x_label = "step";
  mixture_options.y_min = 0;
  mixture_options.y_max = 1;
  mixture_options.y_percent = true;

  ChartSeries lr{"lr", {}, "", false};
  for (int step = 0; step <= 5000; step += 25) {
    const double peak = 3e-4, warmup = 500;
    lr.points.emplace_back(
        step, step < warmup ? peak * step / warmup
                            : 3e-5 + (peak - 3e-5) * 0.5 *
                                         (1 + std::cos(M_PI * (step - warmup) / (5000 - warmup))));
  }
  ChartOptions lr_options;
  lr_options.title = "Learning rate";
  lr_options.width = 320;
  lr_options.height = 180;

  ChartSeries tokens{
      "tokens/s", {{200, 118000}, {400, 121500}, {600, 64000}, {800, 120300}}, "", false};
  ChartOptions tokens_options;
  tokens_options.title = "Throughput";
  tokens_options.y_label = "tokens/s";
  tokens_options.x_label = "step";
  tokens_options.width = 320;
  tokens_options.height = 180;
  tokens_options.markers = {{600, "preempted", "#D55E00"}};

  std::vector<ChartSeries> evals = {{"hellaswag", {}, "", false},
                                    {"arc-easy", {}, "", false},
                                    {"support tickets (held out)", {}, "", false}};
  for (int step = 500; step <= 3000; step += 500) {
    evals[0].points.emplace_back(step, 0.30 + 0.02 * step / 500);
    evals[1].points.emplace_back(step, 0.45 + 0.03 * step / 500);
    evals[2].points.emplace_back(step, 0.20 + 0.09 * step / 500);
  }
  ChartOptions evals_options;
  evals_options.title = "Eval accuracy";
  evals_options.x_label = "step";
  evals_options.y_percent = true;
  evals_options.width = 320;
  evals_options.height = 200;

  ChartOptions empty_options;
  empty_options.title = "GPU memory";
  empty_options.width = 320;
  empty_options.height = 180;
  ChartOptions single_options;
  single_options.title = "Checkpoint size (bytes)";
  single_options.x_label = "step";
  single_options.width = 320;
  single_options.height = 180;

  const std::string charts[] = {
      RenderLineChart(loss, loss_options),
      RenderLineChart(mixture, mixture_options),
      RenderLineChart({lr}, lr_options),
      RenderLineChart({tokens}, tokens_options),
      RenderLineChart(evals, evals_options),
      RenderLineChart({}, empty_options),
      RenderLineChart({{"size", {{1000, 2.5e9}}, "", false}}, single_options)};
  std::string html =
      "<!doctype html><meta charset=utf-8><body style=\"background:#f3f4f6;margin:16px;"
      "font-family:system-ui\"><div "
      "style=\"max-width:760px;display:flex;flex-wrap:wrap;gap:12px\">";
  for (const std::string& chart : charts) {
    ASSERT_TRUE(WellFormed(chart));
    const bool small = chart.find("viewBox=\"0 0 320") != std::string::npos;
    html += std::string("<div style=\"background:#fff;border-radius:8px;padding:8px;flex:0 0 ") +
            (small ? "calc(50% - 6px)" : "100%") +
            ";box-shadow:0 1px 2px rgba(0,0,0,.08);box-sizing:border-box\">" + chart + "</div>";
  }
  html += "</div></body>";
  const std::filesystem::path path =
      std::filesystem::read_symlink("/proc/self/exe").parent_path() / "svg_chart_example.html";
  std::ofstream(path) << html;
  EXPECT_TRUE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace forge::coordinator
