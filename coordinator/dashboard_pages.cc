#include "coordinator/dashboard_pages.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/guard_spec.h"
#include "common/proto_time.h"
#include "common/spec_names.h"
#include "coordinator/job_state.h"
#include "coordinator/svg_chart.h"

namespace forge::coordinator {
namespace {

using forge::v1::Job;
using forge::v1::JobState;
using html::Escape;

std::string StateText(JobState s) { return absl::AsciiStrToLower(JobStateName(s)); }

std::string StateBadge(JobState s) {
  const char* kind = "muted";
  switch (s) {
    case forge::v1::JOB_STATE_RUNNING:
      kind = "run";
      break;
    case forge::v1::JOB_STATE_RESTARTING:
      kind = "warn";
      break;
    case forge::v1::JOB_STATE_SUCCEEDED:
      kind = "ok";
      break;
    case forge::v1::JOB_STATE_FAILED:
      kind = "bad";
      break;
    default:
      break;
  }
  return html::Badge(kind, StateText(s));
}

absl::Time T(const google::protobuf::Timestamp& ts) {
  return ts.seconds() == 0 && ts.nanos() == 0 ? absl::UnixEpoch() : FromProtoTime(ts);
}

std::string JobLink(const Job& j) {
  return absl::StrCat("<a class=\"mono\" href=\"/jobs/", html::UrlEncode(j.id()), "\">",
                      Escape(j.id()), "</a>");
}

std::string Resources(const Job& j) {
  return absl::StrCat(j.spec().resources().ranks(), " × ",
                      DeviceKindName(j.spec().resources().device()));
}

double Fraction(const Job& j) {
  const int64_t total =
      j.progress().total_steps() > 0 ? j.progress().total_steps() : j.spec().train().steps();
  if (j.state() == forge::v1::JOB_STATE_SUCCEEDED) return 1.0;
  return total > 0 ? std::clamp(static_cast<double>(j.progress().step()) / total, 0.0, 1.0) : 0;
}

std::string ProgressCell(const Job& j) {
  const int64_t total =
      j.progress().total_steps() > 0 ? j.progress().total_steps() : j.spec().train().steps();
  return absl::StrCat("<div class=\"bar\" title=\"step ", j.progress().step(), " of ", total,
                      "\"><span style=\"width:", absl::StrFormat("%.1f", 100 * Fraction(j)),
                      "%\"></span></div><span class=\"sub\">", j.progress().step(), " / ", total,
                      "</span>");
}

std::string Eta(const Job& j) {
  if (j.state() != forge::v1::JOB_STATE_RUNNING || j.progress().eta_seconds() <= 0) return "—";
  return html::Duration(absl::Seconds(j.progress().eta_seconds()));
}

// The newest committed checkpoint and how many steps a failure now would lose.
std::string CheckpointRisk(const Job& j) {
  const int64_t last = j.progress().last_checkpoint_step();
  const int64_t at_risk = j.progress().step() - last;
  if (last <= 0) {
    return j.progress().step() > 0
               ? absl::StrCat("none yet (", j.progress().step(), " steps at risk)")
               : "none yet";
  }
  if (IsTerminal(j.state()) || at_risk <= 0) return absl::StrCat("step ", last);
  return absl::StrCat("step ", last, " (", at_risk, " steps at risk)");
}

std::string LossText(const Job& j) {
  return j.progress().step() > 0 ? html::Num(j.progress().loss()) : "—";
}

std::string JobsTable(const std::vector<Job>& jobs, bool show_tenant, absl::Time now) {
  if (jobs.empty()) return "<p class=\"msg\">No jobs.</p>";
  std::string out = absl::StrCat(
      "<table class=\"jobs\"><thead><tr><th>Job</th>", show_tenant ? "<th>Tenant</th>" : "",
      "<th>Name</th><th>State</th><th>Progress</th><th class=\"num\">Loss</th>"
      "<th class=\"num\">Tokens/s</th><th>ETA</th><th>Resources</th><th>Updated</th>"
      "</tr></thead><tbody>");
  for (const Job& j : jobs) {
    absl::StrAppend(
        &out, "<tr data-job=\"", Escape(j.id()), "\" data-state=\"", StateText(j.state()),
        "\"><td>", JobLink(j), "</td>",
        show_tenant ? absl::StrCat("<td>", Escape(j.tenant()), "</td>") : "", "<td>",
        Escape(j.spec().name()), "</td><td>", StateBadge(j.state()),
        j.restarts() > 0 ? absl::StrCat(" <span class=\"sub\">", j.restarts(), " restart",
                                        j.restarts() == 1 ? "" : "s", "</span>")
                         : "",
        "</td><td>", ProgressCell(j), "</td><td class=\"num\">", LossText(j),
        "</td><td class=\"num\">",
        j.progress().tokens_per_second() > 0 ? html::Count(j.progress().tokens_per_second()) : "—",
        "</td><td>", Eta(j), "</td><td>", Resources(j), "</td><td>",
        html::Ago(T(j.update_time()), now), "</td></tr>");
  }
  absl::StrAppend(&out, "</tbody></table>");
  return out;
}

std::string Stat(absl::string_view key, absl::string_view value, absl::string_view id = "") {
  return absl::StrCat("<div class=\"stat\"", id.empty() ? "" : absl::StrCat(" id=\"", id, "\""),
                      "><div class=\"v\">", value, "</div><div class=\"k\">", key, "</div></div>");
}

std::string Card(absl::string_view title, absl::string_view body, absl::string_view id = "") {
  return absl::StrCat("<section class=\"card\"", id.empty() ? "" : absl::StrCat(" id=\"", id, "\""),
                      "><h2>", title, "</h2>", body, "</section>");
}

bool WorkerDead(const forge::v1::Worker& w) { return w.state() == forge::v1::WORKER_STATE_DEAD; }

}  // namespace

std::string RenderOverview(const html::PageOptions& page, const OverviewData& d) {
  std::string stats;
  for (JobState s : {forge::v1::JOB_STATE_RUNNING, forge::v1::JOB_STATE_QUEUED,
                     forge::v1::JOB_STATE_RESTARTING, forge::v1::JOB_STATE_SUCCEEDED,
                     forge::v1::JOB_STATE_FAILED, forge::v1::JOB_STATE_CANCELLED}) {
    auto it = d.counts.find(s);
    absl::StrAppend(&stats, Stat(absl::StrCat(StateText(s), " jobs"),
                                 absl::StrCat(it == d.counts.end() ? 0 : it->second),
                                 absl::StrCat("count-", StateText(s))));
  }
  if (d.fleet) {
    int alive = 0, dead = 0, devices = 0, busy = 0;
    for (const auto& w : d.workers) {
      (WorkerDead(w) ? dead : alive)++;
      if (!WorkerDead(w)) {
        devices += w.devices_size();
        busy += w.ranks_size();
      }
    }
    absl::StrAppend(
        &stats, Stat("workers alive", absl::StrCat(alive), "count-alive"),
        Stat("workers dead", dead > 0 ? absl::StrCat("<span class=\"err\">", dead, "</span>") : "0",
             "count-dead"),
        Stat("devices busy", absl::StrCat(busy, " / ", devices)));
  }
  std::string body = absl::StrCat("<h1>Overview</h1><div class=\"cards\">", stats, "</div>");

  // The queue, longest-waiting first, with why each job waits.
  std::vector<Job> queue = d.pending;
  std::sort(queue.begin(), queue.end(),
            [](const Job& a, const Job& b) { return T(a.update_time()) < T(b.update_time()); });
  std::string q;
  if (queue.empty()) {
    q = "<p class=\"msg\">Nothing waits for devices.</p>";
  } else {
    q = absl::StrCat("<table id=\"queue\"><thead><tr><th>Job</th>",
                     d.fleet ? "<th>Tenant</th>" : "",
                     "<th>Name</th><th>State</th><th class=\"num\">Priority</th><th>Needs</th>"
                     "<th>Waiting</th><th>Why</th></tr></thead><tbody>");
    for (const Job& j : queue) {
      absl::StrAppend(
          &q, "<tr data-job=\"", Escape(j.id()), "\" data-state=\"", StateText(j.state()),
          "\"><td>", JobLink(j), "</td>",
          d.fleet ? absl::StrCat("<td>", Escape(j.tenant()), "</td>") : "", "<td>",
          Escape(j.spec().name()), "</td><td>", StateBadge(j.state()),
          j.unschedulable() ? " " + html::Badge("bad", "does not fit the fleet") : "",
          "</td><td class=\"num\">", j.spec().priority(), "</td><td>", Resources(j), "</td><td>",
          html::Duration(d.now - T(j.update_time())), "</td><td class=\"msg\">",
          Escape(j.message().empty() ? "waiting for the next scheduling pass" : j.message()),
          "</td></tr>");
    }
    absl::StrAppend(&q, "</tbody></table>");
  }
  absl::StrAppend(&body, Card(absl::StrCat("Queue (", queue.size(), ")"), q, "queue-card"));

  std::vector<Job> recent = d.finished;
  std::sort(recent.begin(), recent.end(),
            [](const Job& a, const Job& b) { return T(a.end_time()) > T(b.end_time()); });
  if (recent.size() > 10) recent.resize(10);
  absl::StrAppend(&body, Card("Running", JobsTable(d.running, d.fleet, d.now), "running-card"),
                  Card("Recently finished", JobsTable(recent, d.fleet, d.now), "recent-card"));
  if (d.fleet) {
    std::vector<forge::v1::Worker> dead;
    for (const auto& w : d.workers) {
      if (WorkerDead(w)) dead.push_back(w);
    }
    if (!dead.empty()) {
      std::string t =
          "<p class=\"err\">These workers stopped heartbeating: their devices are not "
          "scheduled, and the ranks they ran were stopped (each job restarts elsewhere or, with "
          "no restarts left, fails).</p><ul>";
      for (const auto& w : dead) {
        absl::StrAppend(&t, "<li><a href=\"/workers\">", Escape(w.id()), "</a> (",
                        Escape(w.hostname()), "), last heartbeat ",
                        html::Ago(T(w.last_heartbeat()), d.now), "</li>");
      }
      absl::StrAppend(&body, Card("Dead workers", absl::StrCat(t, "</ul>"), "dead-card"));
    }
  }
  return html::Page(page, body);
}

std::string RenderJobList(const html::PageOptions& page, const std::vector<Job>& jobs,
                          const std::string& state_filter, bool show_tenant, absl::Time now) {
  std::string filters = "<p class=\"filters\">";
  auto link = [&](const std::string& key, const std::string& label) {
    absl::StrAppend(&filters, "<a href=\"/jobs", key.empty() ? "" : "?state=" + key, "\"",
                    key == state_filter ? " class=\"on\"" : "", ">", label, "</a>");
  };
  link("", "all");
  for (const char* s : {"queued", "running", "restarting", "succeeded", "failed", "cancelled"}) {
    link(s, s);
  }
  absl::StrAppend(&filters, "</p>");
  std::vector<Job> shown;
  for (const Job& j : jobs) {
    if (state_filter.empty() || StateText(j.state()) == state_filter) shown.push_back(j);
  }
  std::sort(shown.begin(), shown.end(),
            [](const Job& a, const Job& b) { return T(a.create_time()) > T(b.create_time()); });
  return html::Page(page, absl::StrCat("<h1>Jobs</h1>", filters,
                                       Card(absl::StrCat(shown.size(), " jobs"),
                                            JobsTable(shown, show_tenant, now))));
}

std::vector<double> RequestedWeights(const forge::v1::JobSpec& spec, int64_t step,
                                     int64_t total_steps) {
  const auto& mix = spec.data().mixture();
  std::vector<double> w(mix.size(), 0.0);
  if (spec.data().schedule().empty()) {
    for (int i = 0; i < mix.size(); ++i) w[i] = mix[i].weight();
  } else {
    const auto& pts = spec.data().schedule();
    const double at = total_steps > 0 ? static_cast<double>(step) / total_steps : 0;
    auto weights_of = [&](const forge::v1::SchedulePoint& p) {
      std::vector<double> v(mix.size(), 0.0);
      for (int i = 0; i < mix.size(); ++i) {
        auto it = p.weights().find(mix[i].dataset());
        if (it != p.weights().end()) v[i] = it->second;
      }
      double sum = 0;
      for (double x : v) sum += x;
      for (double& x : v) x = sum > 0 ? x / sum : 0;
      return v;
    };
    if (at <= pts[0].at()) {
      w = weights_of(pts[0]);
    } else if (at >= pts[pts.size() - 1].at()) {
      w = weights_of(pts[pts.size() - 1]);
    } else {
      for (int k = 0; k + 1 < pts.size(); ++k) {
        if (at >= pts[k].at() && at <= pts[k + 1].at()) {
          const double t = (at - pts[k].at()) / (pts[k + 1].at() - pts[k].at());
          std::vector<double> a = weights_of(pts[k]), b = weights_of(pts[k + 1]);
          for (size_t i = 0; i < w.size(); ++i) w[i] = a[i] + t * (b[i] - a[i]);
          break;
        }
      }
    }
  }
  double sum = 0;
  for (double x : w) sum += x;
  for (double& x : w) x = sum > 0 ? x / sum : 0;
  return w;
}

std::vector<std::pair<int64_t, std::vector<double>>> RealisedMixture(
    const forge::v1::JobSpec& spec, const std::vector<forge::v1::MetricPoint>& metrics,
    size_t max_points) {
  std::vector<std::pair<int64_t, std::vector<double>>> out;
  if (metrics.size() < 2 || max_points == 0) return out;
  const auto& mix = spec.data().mixture();
  const size_t stride = std::max<size_t>(1, (metrics.size() - 1 + max_points - 1) / max_points);
  auto tokens = [&](const forge::v1::MetricPoint& p, int i) -> double {
    auto it = p.tokens_per_source().find(mix[i].dataset());
    return it == p.tokens_per_source().end() ? 0.0 : static_cast<double>(it->second);
  };
  size_t prev = 0;
  for (size_t k = stride; k < metrics.size(); k += stride) {
    std::vector<double> delta(mix.size());
    double sum = 0;
    for (int i = 0; i < mix.size(); ++i) {
      // A restart rewinds the cumulative counts; such a window says nothing.
      delta[i] = std::max(0.0, tokens(metrics[k], i) - tokens(metrics[prev], i));
      sum += delta[i];
    }
    if (sum > 0) {
      for (double& x : delta) x /= sum;
      out.emplace_back(metrics[k].step(), std::move(delta));
    }
    prev = k;
  }
  return out;
}

namespace {

std::string Charts(const JobPageData& d) {
  const Job& j = d.job;
  // Latest attempt wins for a step replayed after a restart (points come ordered by (step,
  // attempt), so the last of each run of equal steps).
  const std::vector<forge::v1::MetricPoint>& series = *d.metrics;
  std::vector<std::pair<int64_t, const forge::v1::MetricPoint*>> by_step;
  by_step.reserve(series.size());
  for (const auto& p : series) {
    if (!by_step.empty() && by_step.back().first == p.step()) {
      by_step.back().second = &p;
    } else {
      by_step.emplace_back(p.step(), &p);
    }
  }
  ChartSeries loss{"training loss", {}, "", false};
  ChartSeries lr{"learning rate", {}, "", false};
  ChartSeries tps{"tokens/s", {}, "", false};
  ChartSeries gn{"gradient norm", {}, "", false};
  std::vector<ChartSeries> per_source(j.spec().data().mixture_size());
  for (int i = 0; i < j.spec().data().mixture_size(); ++i) {
    per_source[i].name = j.spec().data().mixture(i).dataset();
  }
  for (const auto& [step, p] : by_step) {
    const double x = static_cast<double>(step);
    loss.points.emplace_back(x, p->loss());
    lr.points.emplace_back(x, p->lr());
    if (p->tokens_per_second() > 0) tps.points.emplace_back(x, p->tokens_per_second());
    if (p->grad_norm() > 0) gn.points.emplace_back(x, p->grad_norm());
    for (int i = 0; i < j.spec().data().mixture_size(); ++i) {
      auto it = p->tokens_per_source().find(per_source[i].name);
      if (it != p->tokens_per_source().end()) {
        per_source[i].points.emplace_back(x, static_cast<double>(it->second));
      }
    }
  }
  std::vector<ChartMarker> markers;
  for (const auto& a : j.attempts()) {
    if (a.attempt() > 1) {
      markers.push_back({static_cast<double>(a.resumed_from_step()),
                         absl::StrCat("restart → a", a.attempt()), "#b45309"});
    }
  }
  // A chart over steps, with the restarts marked, in its own card ("<name>-card", svg
  // "chart-<name>").
  auto step_chart = [&](const std::string& name, const std::string& title,
                        const std::string& y_label) {
    ChartOptions o;
    o.id = "chart-" + name;
    o.title = title;
    o.x_label = "step";
    o.y_label = y_label;
    o.markers = markers;
    return o;
  };
  auto card = [](const std::string& heading, const std::string& name,
                 const std::vector<ChartSeries>& series, const ChartOptions& o) {
    return Card(heading, RenderLineChart(series, o), name + "-card");
  };
  ChartOptions o = step_chart("loss", "Training loss", "nats / token");
  o.log_y = true;
  std::string out =
      absl::StrCat("<div class=\"grid\">", card("Loss", "loss", {loss}, o),
                   card("Learning rate", "lr", {lr}, step_chart("lr", "Learning rate", "")));

  // Realised mixture (solid) against the requested one (dashed), per source.
  const int64_t total = j.spec().train().steps();
  std::vector<ChartSeries> mix;
  auto realised = RealisedMixture(j.spec(), series);
  for (int i = 0; i < j.spec().data().mixture_size(); ++i) {
    ChartSeries got{per_source[i].name + " (realised)", {}, "", false};
    for (const auto& [step, f] : realised) got.points.emplace_back(step, f[i]);
    mix.push_back(std::move(got));
  }
  const size_t n_sources = mix.size();
  for (int i = 0; i < j.spec().data().mixture_size(); ++i) {
    ChartSeries want{per_source[i].name + " (requested)", {}, "", true};
    const int kSamples = j.spec().data().schedule().empty() ? 2 : 41;
    for (int s = 0; s < kSamples; ++s) {
      const int64_t step = total * s / (kSamples - 1);
      want.points.emplace_back(step, RequestedWeights(j.spec(), step, total)[i]);
    }
    mix.push_back(std::move(want));
  }
  // The same colour for a source's realised and requested lines.
  static const char* kPalette[] = {"#0072B2", "#E69F00", "#009E73", "#CC79A7",
                                   "#56B4E9", "#D55E00", "#F0E442", "#000000"};
  for (size_t i = 0; i < mix.size(); ++i) mix[i].color = kPalette[(i % n_sources) % 8];
  o = step_chart("mixture", "Data mixture: realised vs requested", "share of tokens");
  o.markers.clear();
  o.y_min = 0;
  o.y_max = 1;
  o.y_percent = true;
  o.show_points = false;
  absl::StrAppend(&out, card("Data mixture", "mixture", mix, o));
  o = step_chart("tokens", "Tokens per source (cumulative)", "tokens");
  o.show_points = false;
  absl::StrAppend(&out, card("Tokens per source", "tokens", per_source, o),
                  card("Throughput", "throughput", {tps},
                       step_chart("throughput", "Throughput", "tokens / s")));
  o = step_chart("grad-norm", "Gradient norm", "");
  o.log_y = true;
  absl::StrAppend(&out, card("Gradient norm", "grad-norm", {gn}, o), "</div>");
  return out;
}

std::string EvalSection(const Job& j) {
  if (j.evals().empty() && j.base_evals().empty()) {
    return j.spec().eval().suites().empty() ? "<p class=\"msg\">No eval suites in the spec.</p>"
                                            : "<p class=\"msg\">No held-out results yet.</p>";
  }
  std::map<std::string, std::pair<const forge::v1::EvalResult*, const forge::v1::EvalResult*>>
      suites;
  for (const auto& e : j.base_evals()) suites[e.suite()].first = &e;
  for (const auto& e : j.evals()) suites[e.suite()].second = &e;
  std::string out =
      "<table id=\"evals\"><thead><tr><th>Suite (held-out)</th><th class=\"num\">Base loss</th>"
      "<th class=\"num\">Loss</th><th class=\"num\">Change</th><th class=\"num\">Bits/byte</th>"
      "<th class=\"num\">At step</th><th class=\"num\">Tokens</th></tr></thead><tbody>";
  for (const auto& [suite, pair] : suites) {
    const auto* base = pair.first;
    const auto* now = pair.second;
    std::string change = "—";
    if (base != nullptr && now != nullptr && base->loss() > 0) {
      const double r = (now->loss() - base->loss()) / base->loss();
      change = absl::StrCat("<span class=\"", r > 0 ? "err" : "", "\">", r > 0 ? "+" : "",
                            absl::StrFormat("%.1f", 100 * r), " %</span>");
    }
    absl::StrAppend(&out, "<tr><td>", Escape(suite), "</td><td class=\"num\">",
                    base ? html::Num(base->loss()) : "—", "</td><td class=\"num\">",
                    now ? html::Num(now->loss()) : "—", "</td><td class=\"num\">", change,
                    "</td><td class=\"num\">", now ? html::Num(now->bits_per_byte()) : "—",
                    "</td><td class=\"num\">", now ? absl::StrCat(now->step()) : "—",
                    "</td><td class=\"num\">", now ? html::Count(now->tokens()) : "—",
                    "</td></tr>");
  }
  absl::StrAppend(&out, "</tbody></table>");
  if (j.spec().has_guard()) {
    const auto& g = j.guard();
    if (!g.suite().empty()) {
      absl::StrAppend(
          &out, "<div id=\"guard\" class=\"verdict ", g.passed() ? "pass" : "block", "\">",
          g.passed() ? html::Badge("ok", "guard passed") : html::Badge("bad", "guard blocked"), " ",
          Escape(g.message()),
          g.promoted_to().empty()
              ? ""
              : absl::StrCat(" — promoted to <b>", Escape(g.promoted_to()), "</b>"),
          "</div>");
    } else {
      absl::StrAppend(&out, "<div id=\"guard\" class=\"msg\">Guard on ",
                      Escape(GuardedSuitesText(j.spec().guard())), ": at most +",
                      absl::StrFormat("%.1f", 100 * j.spec().guard().max_regression()),
                      " % against the base; the verdict comes when the job ends.</div>");
    }
  }
  if (!j.contamination().empty()) {
    absl::StrAppend(
        &out, "<p class=\"sub\">Held-out check at submission: ", Escape(j.contamination()), "</p>");
  }
  return out;
}

std::string AttemptsTable(const Job& j, absl::Time now) {
  if (j.attempts().empty()) return "<p class=\"msg\">Not placed yet.</p>";
  std::string out =
      "<table id=\"attempts\"><thead><tr><th class=\"num\">#</th><th>Started</th>"
      "<th>Ran for</th><th>Resumed from</th><th class=\"num\">Last step</th>"
      "<th class=\"num\">Lost steps</th><th class=\"num\">Recovery</th><th>Placement</th>"
      "<th>Ended</th></tr></thead><tbody>";
  for (const auto& a : j.attempts()) {
    const absl::Time start = T(a.start_time());
    const absl::Time end = T(a.end_time());
    std::vector<std::string> where;
    for (const auto& r : a.placement()) {
      where.push_back(
          absl::StrCat("r", r.rank(), "@", Escape(r.worker_id()), ":", Escape(r.device())));
    }
    absl::StrAppend(
        &out, "<tr><td class=\"num\">", a.attempt(), "</td><td>", html::Ago(start, now),
        "</td><td>", html::Duration((end == absl::UnixEpoch() ? now : end) - start), "</td><td>",
        a.resumed_from_step() > 0 ? absl::StrCat("step ", a.resumed_from_step()) : "scratch",
        "</td><td class=\"num\">", a.last_step(), "</td><td class=\"num\">",
        a.lost_steps() > 0 ? absl::StrCat("<span class=\"err\">", a.lost_steps(), "</span>") : "0",
        "</td><td class=\"num\">",
        a.recover_seconds() > 0 ? absl::StrFormat("%.1f s", a.recover_seconds()) : "—",
        "</td><td class=\"mono\">", absl::StrJoin(where, " "), "</td><td>",
        a.end_reason().empty() ? html::Badge("run", "running") : Escape(a.end_reason()),
        "</td></tr>");
  }
  absl::StrAppend(&out, "</tbody></table>");
  return out;
}

std::string CheckpointsTable(const std::vector<forge::v1::CheckpointInfo>& cps, absl::Time now) {
  if (cps.empty()) return "<p class=\"msg\">No committed checkpoints.</p>";
  std::string out =
      "<table id=\"checkpoints\"><thead><tr><th>Checkpoint</th><th class=\"num\">Step</th>"
      "<th class=\"num\">Attempt</th><th class=\"num\">Size</th><th>Stage</th>"
      "<th>Committed</th></tr></thead><tbody>";
  for (const auto& c : cps) {
    absl::StrAppend(&out, "<tr><td class=\"mono\">", Escape(c.id()), "</td><td class=\"num\">",
                    c.step(), "</td><td class=\"num\">", c.attempt(), "</td><td class=\"num\">",
                    html::Bytes(c.bytes()), "</td><td>", StageName(c.stage()), "</td><td>",
                    html::Ago(T(c.create_time()), now), "</td></tr>");
  }
  absl::StrAppend(&out, "</tbody></table>");
  return out;
}

}  // namespace

std::string RenderJobPage(const html::PageOptions& page, const JobPageData& d) {
  const Job& j = d.job;
  std::string head = absl::StrCat("<h1><span class=\"mono\">", Escape(j.id()), "</span> · ",
                                  Escape(j.spec().name()), " ", StateBadge(j.state()), "</h1>");
  if (!j.message().empty()) {
    absl::StrAppend(&head, "<p id=\"job-message\" class=\"",
                    j.state() == forge::v1::JOB_STATE_FAILED ? "err" : "msg", "\">",
                    Escape(j.message()), "</p>");
  }
  const int64_t total = j.spec().train().steps();
  std::string facts = absl::StrCat(
      "<dl class=\"kv\"><dt>Progress</dt><dd>", ProgressCell(j), "</dd><dt>ETA</dt><dd>", Eta(j),
      "</dd><dt>Phase</dt><dd>", Escape(j.progress().phase().empty() ? "—" : j.progress().phase()),
      "</dd><dt>Loss</dt><dd>", LossText(j), "</dd><dt>Last checkpoint</dt><dd id=\"at-risk\">",
      CheckpointRisk(j), "</dd><dt>Tokens/s</dt><dd>",
      j.progress().tokens_per_second() > 0 ? html::Count(j.progress().tokens_per_second()) : "—",
      "</dd><dt>MFU</dt><dd>",
      j.progress().mfu() > 0 ? absl::StrFormat("%.1f %%", 100 * j.progress().mfu()) : "—",
      "</dd><dt>Tenant</dt><dd>", Escape(j.tenant()), "</dd><dt>Resources</dt><dd>", Resources(j),
      "</dd><dt>Stage</dt><dd>", StageName(j.spec().stage()), "</dd><dt>Base</dt><dd>",
      j.base_checkpoint().empty()
          ? "from scratch"
          : absl::StrCat("<span class=\"mono\">", Escape(j.base_checkpoint()), "</span>"),
      "</dd><dt>Attempt</dt><dd>", j.attempt(), " (", j.restarts(), " restarts of ",
      j.spec().max_restarts(), " allowed)</dd><dt>Submitted</dt><dd>",
      html::Ago(T(j.create_time()), d.now), "</dd><dt>Steps</dt><dd>", total, "</dd></dl>");
  std::string mixture =
      "<table id=\"mixture\"><thead><tr><th>Source</th><th class=\"num\">"
      "Requested now</th><th class=\"num\">Tokens so far</th>"
      "<th class=\"num\">Share</th></tr></thead><tbody>";
  const auto want = RequestedWeights(j.spec(), j.progress().step(), total);
  double all = 0;
  for (const auto& [k, v] : j.progress().tokens_per_source()) all += static_cast<double>(v);
  for (int i = 0; i < j.spec().data().mixture_size(); ++i) {
    const std::string& name = j.spec().data().mixture(i).dataset();
    auto it = j.progress().tokens_per_source().find(name);
    const double got = it == j.progress().tokens_per_source().end() ? 0 : it->second;
    absl::StrAppend(&mixture, "<tr><td>", Escape(name), "</td><td class=\"num\">",
                    absl::StrFormat("%.1f %%", 100 * want[i]), "</td><td class=\"num\">",
                    html::Count(got), "</td><td class=\"num\">",
                    all > 0 ? absl::StrFormat("%.1f %%", 100 * got / all) : "—", "</td></tr>");
  }
  absl::StrAppend(&mixture, "</tbody></table>");

  std::string logs = absl::StrCat(
      "<p class=\"sub\">", d.log_truncated ? "The last lines; " : "", "<a href=\"/jobs/",
      html::UrlEncode(j.id()), "/logs\">the whole log</a> (every attempt and rank).</p>",
      "<pre class=\"log\" id=\"log\">", d.log_tail.empty() ? "(no output yet)" : Escape(d.log_tail),
      "</pre>");

  std::string body = absl::StrCat(
      head, "<div class=\"grid\">", Card("Run", facts, "run-card"),
      Card("Held-out evals", EvalSection(j), "eval-card"), "</div>", Charts(d),
      "<div class=\"grid\">", Card("Mixture", mixture, "mixture-table-card"),
      Card("Checkpoints", CheckpointsTable(d.checkpoints, d.now), "checkpoints-card"), "</div>",
      Card("Attempts", AttemptsTable(j, d.now), "attempts-card"), Card("Logs", logs, "logs-card"));
  return html::Page(page, body);
}

std::string RenderWorkers(const html::PageOptions& page,
                          const std::vector<forge::v1::Worker>& workers, absl::Time now) {
  std::string t;
  if (workers.empty()) {
    t = "<p class=\"msg\">No worker has registered. Start one with <code>forge-worker "
        "--coordinator=HOST:PORT --token-file=F --devices=cpu:N</code>.</p>";
  } else {
    t = "<table id=\"workers\"><thead><tr><th>Worker</th><th>Host</th><th>State</th>"
        "<th>Devices</th><th>Running ranks</th><th>Last heartbeat</th><th>Connected</th>"
        "<th>Version</th></tr></thead><tbody>";
    for (const auto& w : workers) {
      std::vector<std::string> devices;
      for (const auto& dev : w.devices()) {
        devices.push_back(absl::StrCat(
            "<span class=\"mono\">", Escape(dev.id()), "</span>",
            dev.memory_bytes() > 0 ? absl::StrCat(" <span class=\"sub\">", Escape(dev.name()), ", ",
                                                  html::Bytes(dev.memory_bytes()), "</span>")
                                   : ""));
      }
      std::vector<std::string> ranks;
      for (const auto& r : w.ranks()) {
        ranks.push_back(absl::StrCat("<a class=\"mono\" href=\"/jobs/", html::UrlEncode(r.job_id()),
                                     "\">", Escape(r.job_id()), "</a> r", r.rank(), " on ",
                                     Escape(r.device()),
                                     r.phase().empty() ? "" : " · " + Escape(r.phase())));
      }
      const bool dead = WorkerDead(w);
      absl::StrAppend(
          &t, "<tr data-worker=\"", Escape(w.id()), "\" data-state=\"", dead ? "dead" : "alive",
          "\"><td class=\"mono\">", Escape(w.id()), "</td><td>", Escape(w.hostname()), "</td><td>",
          dead ? html::Badge("bad", "dead") : html::Badge("ok", "alive"), "</td><td>",
          devices.size(), " · ", absl::StrJoin(devices, ", "), "</td><td>",
          ranks.empty() ? "<span class=\"msg\">idle</span>" : absl::StrJoin(ranks, "<br>"),
          "</td><td", dead ? " class=\"err\"" : "", ">", html::Ago(T(w.last_heartbeat()), now),
          "</td><td>", html::Ago(T(w.registered_time()), now), "</td><td class=\"mono\">",
          Escape(w.version()), "</td></tr>");
    }
    absl::StrAppend(&t, "</tbody></table>");
  }
  return html::Page(
      page, absl::StrCat("<h1>Workers</h1>", Card(absl::StrCat(workers.size(), " workers"), t)));
}

std::string RenderSchedules(const html::PageOptions& page, const std::vector<ScheduleView>& list,
                            bool show_tenant, absl::Time now) {
  if (list.empty()) {
    return html::Page(page, absl::StrCat("<h1>Schedules</h1>",
                                         Card("No schedules",
                                              "<p class=\"msg\">Create one with <code>forge "
                                              "schedule create --cron ... --spec job.yaml</code>."
                                              "</p>")));
  }
  auto outcome = [](const forge::v1::ScheduleRun& r) {
    switch (r.outcome()) {
      case forge::v1::SCHEDULE_RUN_SUBMITTED:
        return html::Badge("ok", "submitted");
      case forge::v1::SCHEDULE_RUN_SKIPPED_NO_NEW_DATA:
        return html::Badge("muted", "skipped");
      case forge::v1::SCHEDULE_RUN_FAILED:
        return html::Badge("bad", "refused");
      default:
        return html::Badge("muted", "?");
    }
  };
  auto job_link = [](const forge::v1::ScheduleRun& r) {
    return r.job_id().empty()
               ? std::string()
               : absl::StrCat(" <a class=\"mono\" href=\"/jobs/", html::UrlEncode(r.job_id()),
                              "\">", Escape(r.job_id()), "</a>");
  };
  std::string body = "<h1>Schedules</h1>";
  for (const ScheduleView& v : list) {
    const forge::v1::Schedule& s = v.schedule;
    std::string runs;
    if (v.runs.empty()) {
      runs = "<p class=\"msg\">No slot has come yet.</p>";
    } else {
      runs =
          "<table class=\"runs\"><thead><tr><th>Slot</th><th>Outcome</th><th>Job</th>"
          "<th>Why</th></tr></thead><tbody>";
      for (const auto& r : v.runs) {
        absl::StrAppend(&runs, "<tr data-outcome=\"", r.outcome(), "\"><td>",
                        html::Ago(T(r.slot_time()), now), "</td><td>", outcome(r), "</td><td>",
                        job_link(r), "</td><td class=\"msg\">", Escape(r.message()), "</td></tr>");
      }
      absl::StrAppend(&runs, "</tbody></table>");
    }
    const absl::Time next = T(s.next_run_time());
    absl::StrAppend(
        &body,
        Card(
            absl::StrCat(Escape(s.name()), " <span class=\"sub mono\">", Escape(s.id()), "</span>"),
            absl::StrCat(
                "<dl class=\"kv\">", show_tenant ? "<dt>Tenant</dt><dd>" : "",
                show_tenant ? absl::StrCat(Escape(s.tenant()), "</dd>") : "", "<dt>When</dt><dd>",
                Escape(s.description()), " <code>", Escape(s.cron()),
                "</code></dd><dt>Next run</dt><dd>",
                next == absl::UnixEpoch()
                    ? "—"
                    : absl::StrCat(
                          "in ", html::Duration(next - now), " (",
                          absl::FormatTime("%Y-%m-%d %H:%M UTC", next, absl::UTCTimeZone()), ")"),
                "</dd><dt>Promotes to</dt><dd>",
                s.spec().promote().channel().empty() ? "—" : Escape(s.spec().promote().channel()),
                "</dd></dl><h2 style=\"margin-top:12px\">Recent slots</h2>", runs),
            absl::StrCat("schedule-", s.id())));
  }
  return html::Page(page, body);
}

std::string RenderLogin(const std::string& error, const std::string& next) {
  html::PageOptions page;
  page.title = "Sign in";
  page.live = false;
  return html::Page(
      page,
      absl::StrCat(
          "<form class=\"login card\" method=\"post\" action=\"/login\"><h1>Sign in to "
          "Forge</h1><p class=\"sub\">Paste an admin token (STATE_DIR/admin.token) to see the "
          "fleet, or a tenant token to see your jobs.</p>",
          error.empty()
              ? ""
              : absl::StrCat("<p class=\"err\" id=\"login-error\">", Escape(error), "</p>"),
          "<input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" "
          "placeholder=\"forge_…\" autofocus><input type=\"hidden\" name=\"next\" value=\"",
          Escape(next), "\"><button type=\"submit\" id=\"signin\">Sign in</button></form>"));
}

std::string RenderError(const html::PageOptions& page, int code, const std::string& message) {
  html::PageOptions p = page;
  p.live = false;
  return html::Page(p, absl::StrCat("<h1>", code, "</h1><p class=\"err\">", Escape(message),
                                    "</p><p><a href=\"/\">Back to the overview</a></p>"));
}

}  // namespace forge::coordinator
