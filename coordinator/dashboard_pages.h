// The dashboard's pages, rendered from plain data (protos) to HTML. No I/O here: the router
// (dashboard.h) gathers the data a caller may see and calls these.
#ifndef FORGE_COORDINATOR_DASHBOARD_PAGES_H_
#define FORGE_COORDINATOR_DASHBOARD_PAGES_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "coordinator/html.h"
#include "forge/v1/coordinator.pb.h"
#include "forge/v1/job.pb.h"
#include "forge/v1/training.pb.h"

namespace forge::coordinator {

struct OverviewData {
  // Of the jobs the caller may see: how many are in each state, the pending ones (queued or
  // restarting), the running ones and some recently finished ones.
  std::map<forge::v1::JobState, int64_t> counts;
  std::vector<forge::v1::Job> pending, running, finished;
  std::vector<forge::v1::Worker> workers;  // admins only (empty for tenants)
  bool fleet = false;                      // the caller is an admin
  absl::Time now;
};
std::string RenderOverview(const html::PageOptions& page, const OverviewData& data);

// `state_filter`: "" for every job, or a lower-case state name ("running").
std::string RenderJobList(const html::PageOptions& page, const std::vector<forge::v1::Job>& jobs,
                          const std::string& state_filter, bool show_tenant, absl::Time now);

struct JobPageData {
  forge::v1::Job job;
  // Every report, ordered by (step, attempt); never null.
  std::shared_ptr<const std::vector<forge::v1::MetricPoint>> metrics;
  std::vector<forge::v1::CheckpointInfo> checkpoints;  // newest first
  std::string log_tail;                                // the last lines of the job's log
  bool log_truncated = false;                          // older lines exist
  absl::Time now;
};
std::string RenderJobPage(const html::PageOptions& page, const JobPageData& data);

std::string RenderWorkers(const html::PageOptions& page,
                          const std::vector<forge::v1::Worker>& workers, absl::Time now);

struct ScheduleView {
  forge::v1::Schedule schedule;
  std::vector<forge::v1::ScheduleRun> runs;  // newest first (a few)
};
std::string RenderSchedules(const html::PageOptions& page, const std::vector<ScheduleView>& list,
                            bool show_tenant, absl::Time now);

// The sign-in form; `error` (may be empty) is shown above it; `next` is where to go after.
std::string RenderLogin(const std::string& error, const std::string& next);
// A small page for 403/404 and friends.
std::string RenderError(const html::PageOptions& page, int code, const std::string& message);

// --- Pieces, exposed for tests ------------------------------------------------------------

// The mixture weights (normalised) the spec asks for at `step` of `total_steps`: the mixture,
// or the schedule interpolated linearly. Ordered as spec.data.mixture.
std::vector<double> RequestedWeights(const forge::v1::JobSpec& spec, int64_t step,
                                     int64_t total_steps);
// Per metric point index >= 1, the fraction of tokens each source contributed since the
// previous sampled point: (step, fractions in mixture order). Points are sampled so the
// result has at most `max_points` entries.
std::vector<std::pair<int64_t, std::vector<double>>> RealisedMixture(
    const forge::v1::JobSpec& spec, const std::vector<forge::v1::MetricPoint>& metrics,
    size_t max_points = 60);

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_DASHBOARD_PAGES_H_
