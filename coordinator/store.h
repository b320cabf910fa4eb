// Durable coordinator state in SQLite (WAL mode), with group commit.
//
// The coordinator keeps its working state in memory (managers) and writes through to the
// Store; the Store is read back at start-up (Load*), except job metrics, which stay only
// here and are read on demand (LoadMetrics, on a separate read-only connection: WAL lets it
// run alongside the writer). A write is a WriteBatch: all of its
// rows commit together or none do. Batches submitted concurrently share one SQLite transaction
// and one fsync (group commit), so durability does not cap throughput: a writer thread takes
// every batch queued while the previous transaction was committing, runs each inside its own
// SAVEPOINT (a failing batch is rolled back alone and its callback gets the error), commits
// once, and then runs the callbacks.
//
// Thread safety: all methods are thread-safe. Callbacks run on the writer thread, after the
// commit is durable (synchronous=FULL by default); they must not block for long and must not
// call CommitSync.
#ifndef FORGE_COORDINATOR_STORE_H_
#define FORGE_COORDINATOR_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "forge/v1/coordinator.pb.h"
#include "forge/v1/job.pb.h"
#include "forge/v1/training.pb.h"

namespace forge::coordinator {

struct TenantRecord {
  std::string name;
  absl::Time create_time;
};

struct TokenRecord {
  std::string id;    // public id ("t-" + hex), shown in listings
  std::string hash;  // hex sha256 of the secret; the secret itself is never stored
  forge::v1::TokenKind kind = forge::v1::TOKEN_KIND_UNSPECIFIED;
  std::string tenant;  // set for tenant tokens only
  std::string note;
  absl::Time create_time;
  bool revoked = false;
};

// One training metric point of a job (coordinator.proto MetricPoint). Keyed by
// (job_id, point.attempt, point.step): a resumed attempt that repeats a step adds its own row.
struct MetricRecord {
  std::string job_id;
  forge::v1::MetricPoint point;
};

// A catalog binding (model, stage) -> checkpoint, and a promotion channel, of one tenant.
struct ModelRecord {
  std::string tenant;
  forge::v1::ModelEntry entry;
};
struct ChannelRecord {
  std::string tenant;
  forge::v1::ChannelEntry entry;
};

// A webhook alert not yet delivered (or given up on): the outbox row that lets a restarted
// coordinator send it again.
struct AlertRecord {
  std::string id;    // unique; the alert's id in its payload
  std::string body;  // the event as JSON (coordinator/alert_events.h)
};

// One atomic unit of writes. Upserts replace the row with the same primary key.
struct WriteBatch {
  std::vector<forge::v1::Job> put_jobs;       // upsert by job.id()
  std::vector<TenantRecord> insert_tenants;   // ALREADY_EXISTS if the name exists
  std::vector<TokenRecord> put_tokens;        // upsert by id
  std::vector<forge::v1::Worker> put_workers; // upsert by worker.id() (the known fleet)
  // Storage catalog (coordinator/storage_gateway.h).
  std::vector<forge::v1::DatasetInfo> put_datasets;        // upsert by (tenant, name)
  std::vector<forge::v1::CheckpointInfo> put_checkpoints;  // upsert by id
  std::vector<std::string> delete_checkpoints;  // ids; applied after put_checkpoints; an
                                                // unknown id is not an error
  std::vector<MetricRecord> put_metrics;        // upsert by (job_id, attempt, step)
  std::vector<ModelRecord> put_models;          // upsert by (tenant, name, stage)
  std::vector<ChannelRecord> put_channels;      // upsert by (tenant, channel)
  std::vector<forge::v1::Schedule> put_schedules;  // upsert by id
  std::vector<std::string> delete_schedules;  // ids, with their runs; after put_schedules
  // INSERT by (schedule_id, slot_time): a row for a slot that has one fails the whole batch
  // with ALREADY_EXISTS (one run per slot, whoever commits first).
  std::vector<forge::v1::ScheduleRun> insert_schedule_runs;
  std::vector<AlertRecord> put_alerts;      // insert by id (a known id is left as it is)
  std::vector<std::string> delete_alerts;   // ids; after put_alerts; unknown ids are no error

  bool empty() const {
    return put_jobs.empty() && insert_tenants.empty() && put_tokens.empty() &&
           put_workers.empty() && put_datasets.empty() && put_checkpoints.empty() &&
           delete_checkpoints.empty() && put_metrics.empty() && put_models.empty() &&
           put_channels.empty() && put_schedules.empty() && delete_schedules.empty() &&
           insert_schedule_runs.empty() && put_alerts.empty() && delete_alerts.empty();
  }
};

struct StoreOptions {
  std::string path;  // SQLite database file; created if missing
  // FULL: every commit is durable on return (fsync of the WAL). NORMAL is faster but a power
  // loss may drop the last commits; only for tests and benchmarks that say so.
  bool synchronous_full = true;
  // Upper bound on batches folded into one transaction.
  int max_batches_per_transaction = 4096;
};

struct StoreStats {
  uint64_t batches = 0;       // WriteBatches committed or failed
  uint64_t transactions = 0;  // SQLite transactions (fsyncs) that carried them
};

class Store {
 public:
  // Opens (creating if needed) the database, sets WAL and the synchronous level, creates or
  // migrates the schema (a `meta` table holds the schema version; a newer version than this
  // binary knows is FAILED_PRECONDITION), and starts the writer thread.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const StoreOptions& options);

  // Drains every queued batch (their callbacks run), then stops the writer and closes.
  ~Store();

  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Queues `batch`; `done` runs exactly once, on the writer thread, with OK after the batch is
  // durable or with the error that kept it out (the batch then changed nothing).
  void Commit(WriteBatch batch, std::function<void(absl::Status)> done);

  // Commit and wait. Must not be called from a Commit callback.
  absl::Status CommitSync(WriteBatch batch);

  // Start-up reads of everything committed. Jobs come in insertion order (first commit of
  // each id first).
  absl::StatusOr<std::vector<forge::v1::Job>> LoadJobs();
  absl::StatusOr<std::vector<TenantRecord>> LoadTenants();
  absl::StatusOr<std::vector<TokenRecord>> LoadTokens();
  absl::StatusOr<std::vector<forge::v1::Worker>> LoadWorkers();
  // Datasets ordered by (tenant, name); checkpoints by (job_id, step).
  absl::StatusOr<std::vector<forge::v1::DatasetInfo>> LoadDatasets();
  absl::StatusOr<std::vector<forge::v1::CheckpointInfo>> LoadCheckpoints();
  // Ordered by (tenant, name, stage) and (tenant, channel).
  absl::StatusOr<std::vector<ModelRecord>> LoadModels();
  absl::StatusOr<std::vector<ChannelRecord>> LoadChannels();
  // Schedules by id; the runs of one schedule by slot time (oldest first): all of them, or
  // with limit > 0 the newest `limit`.
  absl::StatusOr<std::vector<forge::v1::Schedule>> LoadSchedules();
  absl::StatusOr<std::vector<forge::v1::ScheduleRun>> LoadScheduleRuns(
      const std::string& schedule_id, int limit = 0);

  // The committed metric points of `job_id` with step > after_step, ordered by (step,
  // attempt). Callable at any time from any thread: it reads on its own connection and never
  // waits for the writer's transaction.
  absl::StatusOr<std::vector<forge::v1::MetricPoint>> LoadMetrics(const std::string& job_id,
                                                                  int64_t after_step);

  // Alerts still in the outbox, oldest first.
  absl::StatusOr<std::vector<AlertRecord>> LoadAlerts();

  StoreStats stats() const;

 private:
  class Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_STORE_H_
