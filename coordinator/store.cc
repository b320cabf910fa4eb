#include "coordinator/store.h"

#include <sqlite3.h>

#include <algorithm>
#include <deque>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/log.h"
#include "common/proto_time.h"
#include "common/status_macros.h"

namespace forge::coordinator {
namespace {

using forge::v1::Job;
using forge::v1::Worker;

// Bump when the schema changes, and add the migration from the previous version to
// MigrateSchema.
//   1: jobs, tenants, tokens, workers.
//   2: datasets, checkpoints, metrics (the storage catalog and job metrics).
//   3: models, channels (the model catalog).
//   4: schedules, schedule_runs.
constexpr int64_t kSchemaVersion = 5;
constexpr int kBusyTimeoutMs = 5000;

constexpr const char* kSchemaV1Sql = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY NOT NULL,
  seq INTEGER NOT NULL UNIQUE,  -- first-insert order; an upsert keeps it
  tenant TEXT NOT NULL,
  state INTEGER NOT NULL,
  request_id TEXT NOT NULL,
  job BLOB NOT NULL             -- serialized forge.v1.Job
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs(tenant);
CREATE TABLE IF NOT EXISTS tenants (
  name TEXT PRIMARY KEY NOT NULL,
  create_time_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
  id TEXT PRIMARY KEY NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  kind INTEGER NOT NULL,
  tenant TEXT NOT NULL,
  note TEXT NOT NULL,
  create_time_ns INTEGER NOT NULL,
  revoked INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
  id TEXT PRIMARY KEY NOT NULL,
  worker BLOB NOT NULL          -- serialized forge.v1.Worker
);
)sql";

constexpr const char* kSchemaV2Sql = R"sql(
CREATE TABLE IF NOT EXISTS datasets (
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  info BLOB NOT NULL,           -- serialized forge.v1.DatasetInfo
  PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS checkpoints (
  id TEXT PRIMARY KEY NOT NULL,
  job_id TEXT NOT NULL,
  tenant TEXT NOT NULL,
  step INTEGER NOT NULL,
  info BLOB NOT NULL            -- serialized forge.v1.CheckpointInfo
);
CREATE INDEX IF NOT EXISTS checkpoints_by_job ON checkpoints(job_id, step);
CREATE TABLE IF NOT EXISTS metrics (
  job_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  step INTEGER NOT NULL,
  point BLOB NOT NULL,          -- serialized forge.v1.MetricPoint
  PRIMARY KEY (job_id, step, attempt)
) WITHOUT ROWID;
)sql";

constexpr const char* kSchemaV3Sql = R"sql(
CREATE TABLE IF NOT EXISTS models (
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  stage INTEGER NOT NULL,
  entry BLOB NOT NULL,          -- serialized forge.v1.ModelEntry
  PRIMARY KEY (tenant, name, stage)
);
CREATE TABLE IF NOT EXISTS channels (
  tenant TEXT NOT NULL,
  channel TEXT NOT NULL,
  entry BLOB NOT NULL,          -- serialized forge.v1.ChannelEntry
  PRIMARY KEY (tenant, channel)
);
)sql";

constexpr const char* kSchemaV4Sql = R"sql(
CREATE TABLE IF NOT EXISTS schedules (
  id TEXT PRIMARY KEY NOT NULL,
  tenant TEXT NOT NULL,
  schedule BLOB NOT NULL        -- serialized forge.v1.Schedule
);
CREATE TABLE IF NOT EXISTS schedule_runs (
  schedule_id TEXT NOT NULL,
  slot_ns INTEGER NOT NULL,
  run BLOB NOT NULL,            -- serialized forge.v1.ScheduleRun
  PRIMARY KEY (schedule_id, slot_ns)  -- one run per slot: the exactly-once guarantee
) WITHOUT ROWID;
)sql";

constexpr const char* kSchemaV5Sql = R"sql(
CREATE TABLE IF NOT EXISTS alerts (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- emission order
  id TEXT NOT NULL UNIQUE,
  body TEXT NOT NULL                      -- the event as JSON
);
)sql";

constexpr const char* kInsertAlertSql = "INSERT OR IGNORE INTO alerts(id, body) VALUES(?1, ?2)";
constexpr const char* kDeleteAlertSql = "DELETE FROM alerts WHERE id = ?1";

constexpr const char* kUpsertScheduleSql =
    "INSERT INTO schedules(id, tenant, schedule) VALUES(?1, ?2, ?3) "
    "ON CONFLICT(id) DO UPDATE SET tenant = excluded.tenant, schedule = excluded.schedule";
constexpr const char* kDeleteScheduleSql = "DELETE FROM schedules WHERE id = ?1";
constexpr const char* kDeleteScheduleRunsSql = "DELETE FROM schedule_runs WHERE schedule_id = ?1";
// INSERT, not an upsert: a second row for a slot fails the batch (ALREADY_EXISTS).
constexpr const char* kInsertScheduleRunSql =
    "INSERT INTO schedule_runs(schedule_id, slot_ns, run) VALUES(?1, ?2, ?3)";

constexpr const char* kUpsertModelSql =
    "INSERT INTO models(tenant, name, stage, entry) VALUES(?1, ?2, ?3, ?4) "
    "ON CONFLICT(tenant, name, stage) DO UPDATE SET entry = excluded.entry";
constexpr const char* kUpsertChannelSql =
    "INSERT INTO channels(tenant, channel, entry) VALUES(?1, ?2, ?3) "
    "ON CONFLICT(tenant, channel) DO UPDATE SET entry = excluded.entry";

constexpr const char* kUpsertJobSql =
    "INSERT INTO jobs(id, seq, tenant, state, request_id, job) "
    "VALUES(?1, (SELECT IFNULL(MAX(seq), 0) + 1 FROM jobs), ?2, ?3, ?4, ?5) "
    "ON CONFLICT(id) DO UPDATE SET tenant = excluded.tenant, state = excluded.state, "
    "request_id = excluded.request_id, job = excluded.job";
constexpr const char* kInsertTenantSql =
    "INSERT INTO tenants(name, create_time_ns) VALUES(?1, ?2)";
constexpr const char* kUpsertTokenSql =
    "INSERT INTO tokens(id, hash, kind, tenant, note, create_time_ns, revoked) "
    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) "
    "ON CONFLICT(id) DO UPDATE SET hash = excluded.hash, kind = excluded.kind, "
    "tenant = excluded.tenant, note = excluded.note, "
    "create_time_ns = excluded.create_time_ns, revoked = excluded.revoked";
constexpr const char* kUpsertWorkerSql =
    "INSERT INTO workers(id, worker) VALUES(?1, ?2) "
    "ON CONFLICT(id) DO UPDATE SET worker = excluded.worker";

constexpr const char* kUpsertDatasetSql =
    "INSERT INTO datasets(tenant, name, info) VALUES(?1, ?2, ?3) "
    "ON CONFLICT(tenant, name) DO UPDATE SET info = excluded.info";
constexpr const char* kUpsertCheckpointSql =
    "INSERT INTO checkpoints(id, job_id, tenant, step, info) VALUES(?1, ?2, ?3, ?4, ?5) "
    "ON CONFLICT(id) DO UPDATE SET job_id = excluded.job_id, tenant = excluded.tenant, "
    "step = excluded.step, info = excluded.info";
constexpr const char* kDeleteCheckpointSql = "DELETE FROM checkpoints WHERE id = ?1";
constexpr const char* kUpsertMetricSql =
    "INSERT INTO metrics(job_id, attempt, step, point) VALUES(?1, ?2, ?3, ?4) "
    "ON CONFLICT(job_id, step, attempt) DO UPDATE SET point = excluded.point";

absl::StatusCode CodeForSqlite(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::StatusCode::kUnavailable;
    case SQLITE_FULL:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_CONSTRAINT:
      return absl::StatusCode::kAlreadyExists;
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return absl::StatusCode::kInternal;
  }
}

// One SQLite connection and its cached prepared statements.
// Thread safety: none; used by one thread at a time (the owner serializes).
class Db {
 public:
  static absl::StatusOr<std::unique_ptr<Db>> Open(const std::string& path) {
    sqlite3* db = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &db,
                                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                       SQLITE_OPEN_NOMUTEX,
                                   nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
      sqlite3_close(db);
      return absl::Status(CodeForSqlite(rc),
                          absl::StrCat("open SQLite database ", path, ": ", msg,
                                       "; check that its directory exists and is writable"));
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, kBusyTimeoutMs);
    return std::unique_ptr<Db>(new Db(db, path));
  }

  ~Db() {
    for (auto& [sql, stmt] : stmts_) sqlite3_finalize(stmt);
    sqlite3_close(db_);
  }

  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // The last error of this connection as a Status naming `op`.
  absl::Status Error(absl::string_view op) const {
    const int rc = sqlite3_extended_errcode(db_);
    return absl::Status(CodeForSqlite(rc), absl::StrCat("SQLite ", op, " on ", path_, ": ",
                                                        sqlite3_errmsg(db_), " (code ", rc,
                                                        ")"));
  }

  // Runs `sql` (one or more statements without parameters).
  absl::Status Exec(absl::string_view op, const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return Error(op);
    return absl::OkStatus();
  }

  // The prepared statement for `sql`, a string literal (cached by its address).
  absl::StatusOr<sqlite3_stmt*> Prepare(const char* sql) {
    auto it = stmts_.find(sql);
    if (it != stmts_.end()) return it->second;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) !=
        SQLITE_OK) {
      return Error(absl::StrCat("prepare \"", sql, "\""));
    }
    stmts_.emplace(sql, stmt);
    return stmt;
  }

  bool InTransaction() const { return sqlite3_get_autocommit(db_) == 0; }
  const std::string& path() const { return path_; }

 private:
  Db(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

  sqlite3* const db_;
  const std::string path_;
  absl::flat_hash_map<const char*, sqlite3_stmt*> stmts_;
};

// Binds parameters to a cached statement for one execution and resets it when destroyed.
// Bound text and blobs are not copied: they must outlive the Stmt.
class Stmt {
 public:
  explicit Stmt(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~Stmt() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  void BindText(int i, absl::string_view v) {
    Note(sqlite3_bind_text(stmt_, i, v.data() != nullptr ? v.data() : "",
                           static_cast<int>(v.size()), SQLITE_STATIC));
  }
  void BindBlob(int i, const std::string& v) {
    Note(sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC));
  }
  void BindInt(int i, int64_t v) { Note(sqlite3_bind_int64(stmt_, i, v)); }

  // SQLITE_ROW, SQLITE_DONE, or an error code (including a failed bind).
  int Step() { return bind_rc_ != SQLITE_OK ? bind_rc_ : sqlite3_step(stmt_); }

  std::string Text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p == nullptr ? std::string() : std::string(p, sqlite3_column_bytes(stmt_, col));
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  template <typename Message>
  bool Parse(int col, Message* out) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    const int n = sqlite3_column_bytes(stmt_, col);
    if (n == 0) {
      out->Clear();
      return true;
    }
    return out->ParseFromArray(p, n);
  }

 private:
  void Note(int rc) {
    if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  sqlite3_stmt* const stmt_;
  int bind_rc_ = SQLITE_OK;
};

// Runs a statement that returns no rows.
absl::Status Run(Db& db, Stmt& stmt, absl::string_view op) {
  if (stmt.Step() != SQLITE_DONE) return db.Error(op);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Serialize(const google::protobuf::MessageLite& m,
                                      absl::string_view what) {
  std::string out;
  if (!m.SerializeToString(&out)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " cannot be serialized (too large?)"));
  }
  return out;
}

absl::Status PutJob(Db& db, const Job& job) {
  if (job.id().empty()) return absl::InvalidArgumentError("store: a job without an id");
  ASSIGN_OR_RETURN(std::string blob, Serialize(job, absl::StrCat("job ", job.id())));
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kUpsertJobSql));
  Stmt stmt(raw);
  stmt.BindText(1, job.id());
  stmt.BindText(2, job.tenant());
  stmt.BindInt(3, job.state());
  stmt.BindText(4, job.request_id());
  stmt.BindBlob(5, blob);
  return Run(db, stmt, absl::StrCat("upsert job ", job.id()));
}

absl::Status InsertTenant(Db& db, const TenantRecord& tenant) {
  if (tenant.name.empty()) return absl::InvalidArgumentError("store: a tenant without a name");
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kInsertTenantSql));
  Stmt stmt(raw);
  stmt.BindText(1, tenant.name);
  stmt.BindInt(2, absl::ToUnixNanos(tenant.create_time));
  if (stmt.Step() == SQLITE_DONE) return absl::OkStatus();
  absl::Status error = db.Error(absl::StrCat("insert tenant ", tenant.name));
  if (error.code() == absl::StatusCode::kAlreadyExists) {
    return absl::AlreadyExistsError(absl::StrCat("tenant ", tenant.name, " already exists"));
  }
  return error;
}

absl::Status PutToken(Db& db, const TokenRecord& token) {
  if (token.id.empty()) return absl::InvalidArgumentError("store: a token without an id");
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kUpsertTokenSql));
  Stmt stmt(raw);
  stmt.BindText(1, token.id);
  stmt.BindText(2, token.hash);
  stmt.BindInt(3, token.kind);
  stmt.BindText(4, token.tenant);
  stmt.BindText(5, token.note);
  stmt.BindInt(6, absl::ToUnixNanos(token.create_time));
  stmt.BindInt(7, token.revoked ? 1 : 0);
  return Run(db, stmt, absl::StrCat("upsert token ", token.id));
}

absl::Status PutWorker(Db& db, const Worker& worker) {
  if (worker.id().empty()) return absl::InvalidArgumentError("store: a worker without an id");
  ASSIGN_OR_RETURN(std::string blob, Serialize(worker, absl::StrCat("worker ", worker.id())));
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kUpsertWorkerSql));
  Stmt stmt(raw);
  stmt.BindText(1, worker.id());
  stmt.BindBlob(2, blob);
  return Run(db, stmt, absl::StrCat("upsert worker ", worker.id()));
}

absl::Status PutDataset(Db& db, const forge::v1::DatasetInfo& d) {
  if (d.tenant().empty() || d.name().empty()) {
    return absl::InvalidArgumentError("store: a dataset without a tenant or name");
  }
  ASSIGN_OR_RETURN(std::string blob,
                   Serialize(d, absl::StrCat("dataset ", d.tenant(), "/", d.name())));
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kUpsertDatasetSql));
  Stmt stmt(raw);
  stmt.BindText(1, d.tenant());
  stmt.BindText(2, d.name());
  stmt.BindBlob(3, blob);
  return Run(db, stmt, absl::StrCat("upsert dataset ", d.tenant(), "/", d.name()));
}

absl::Status PutCheckpoint(Db& db, const forge::v1::CheckpointInfo& c) {
  if (c.id().empty()) return absl::InvalidArgumentError("store: a checkpoint without an id");
  ASSIGN_OR_RETURN(std::string blob, Serialize(c, absl::StrCat("checkpoint ", c.id())));
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kUpsertCheckpointSql));
  Stmt stmt(raw);
  stmt.BindText(1, c.id());
  stmt.BindText(2, c.job_id());
  stmt.BindText(3, c.tenant());
  stmt.BindInt(4, c.step());
  stmt.BindBlob(5, blob);
  return Run(db, stmt, absl::StrCat("upsert checkpoint ", c.id()));
}

absl::Status DeleteCheckpoint(Db& db, const std::string& id) {
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kDeleteCheckpointSql));
  Stmt stmt(raw);
  stmt.BindText(1, id);
  return Run(db, stmt, absl::StrCat("delete checkpoint ", id));
}

absl::Status PutMetric(Db& db, const MetricRecord& m) {
  if (m.job_id.empty()) return absl::InvalidArgumentError("store: a metric without a job id");
  ASSIGN_OR_RETURN(std::string blob,
                   Serialize(m.point, absl::StrCat("metric of job ", m.job_id)));
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kUpsertMetricSql));
  Stmt stmt(raw);
  stmt.BindText(1, m.job_id);
  stmt.BindInt(2, m.point.attempt());
  stmt.BindInt(3, m.point.step());
  stmt.BindBlob(4, blob);
  return Run(db, stmt, absl::StrCat("upsert metric of job ", m.job_id));
}

absl::Status PutModel(Db& db, const ModelRecord& m) {
  if (m.tenant.empty() || m.entry.name().empty()) {
    return absl::InvalidArgumentError("store: a model without a tenant or name");
  }
  const std::string what = absl::StrCat("model ", m.tenant, "/", m.entry.name());
  ASSIGN_OR_RETURN(std::string blob, Serialize(m.entry, what));
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kUpsertModelSql));
  Stmt stmt(raw);
  stmt.BindText(1, m.tenant);
  stmt.BindText(2, m.entry.name());
  stmt.BindInt(3, m.entry.stage());
  stmt.BindBlob(4, blob);
  return Run(db, stmt, absl::StrCat("upsert ", what));
}

absl::Status PutChannel(Db& db, const ChannelRecord& c) {
  if (c.tenant.empty() || c.entry.channel().empty()) {
    return absl::InvalidArgumentError("store: a channel without a tenant or name");
  }
  const std::string what = absl::StrCat("channel ", c.tenant, "/", c.entry.channel());
  ASSIGN_OR_RETURN(std::string blob, Serialize(c.entry, what));
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kUpsertChannelSql));
  Stmt stmt(raw);
  stmt.BindText(1, c.tenant);
  stmt.BindText(2, c.entry.channel());
  stmt.BindBlob(3, blob);
  return Run(db, stmt, absl::StrCat("upsert ", what));
}

absl::Status PutSchedule(Db& db, const forge::v1::Schedule& sc) {
  if (sc.id().empty() || sc.tenant().empty()) {
    return absl::InvalidArgumentError("store: a schedule without an id or tenant");
  }
  const std::string what = absl::StrCat("schedule ", sc.id());
  ASSIGN_OR_RETURN(std::string blob, Serialize(sc, what));
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kUpsertScheduleSql));
  Stmt stmt(raw);
  stmt.BindText(1, sc.id());
  stmt.BindText(2, sc.tenant());
  stmt.BindBlob(3, blob);
  return Run(db, stmt, absl::StrCat("upsert ", what));
}

absl::Status DeleteSchedule(Db& db, const std::string& id) {
  {
    ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kDeleteScheduleRunsSql));
    Stmt stmt(raw);
    stmt.BindText(1, id);
    RETURN_IF_ERROR(Run(db, stmt, absl::StrCat("delete runs of schedule ", id)));
  }
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kDeleteScheduleSql));
  Stmt stmt(raw);
  stmt.BindText(1, id);
  return Run(db, stmt, absl::StrCat("delete schedule ", id));
}

absl::Status InsertScheduleRun(Db& db, const forge::v1::ScheduleRun& run) {
  if (run.schedule_id().empty()) {
    return absl::InvalidArgumentError("store: a schedule run without a schedule id");
  }
  const int64_t slot_ns = absl::ToUnixNanos(FromProtoTime(run.slot_time()));
  const std::string what =
      absl::StrCat("run of schedule ", run.schedule_id(), " slot_ns ", slot_ns);
  ASSIGN_OR_RETURN(std::string blob, Serialize(run, what));
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kInsertScheduleRunSql));
  Stmt stmt(raw);
  stmt.BindText(1, run.schedule_id());
  stmt.BindInt(2, slot_ns);
  stmt.BindBlob(3, blob);
  return Run(db, stmt, absl::StrCat("insert ", what));
}

absl::Status PutAlert(Db& db, const AlertRecord& a) {
  if (a.id.empty()) return absl::InvalidArgumentError("store: an alert without an id");
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kInsertAlertSql));
  Stmt stmt(raw);
  stmt.BindText(1, a.id);
  stmt.BindText(2, a.body);
  return Run(db, stmt, absl::StrCat("insert alert ", a.id));
}

absl::Status DeleteAlert(Db& db, const std::string& id) {
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare(kDeleteAlertSql));
  Stmt stmt(raw);
  stmt.BindText(1, id);
  return Run(db, stmt, absl::StrCat("delete alert ", id));
}

absl::Status ApplyBatch(Db& db, const WriteBatch& batch) {
  for (const Job& job : batch.put_jobs) RETURN_IF_ERROR(PutJob(db, job));
  for (const TenantRecord& tenant : batch.insert_tenants) RETURN_IF_ERROR(InsertTenant(db, tenant));
  for (const TokenRecord& token : batch.put_tokens) RETURN_IF_ERROR(PutToken(db, token));
  for (const Worker& worker : batch.put_workers) RETURN_IF_ERROR(PutWorker(db, worker));
  for (const auto& d : batch.put_datasets) RETURN_IF_ERROR(PutDataset(db, d));
  for (const auto& c : batch.put_checkpoints) RETURN_IF_ERROR(PutCheckpoint(db, c));
  for (const std::string& id : batch.delete_checkpoints) RETURN_IF_ERROR(DeleteCheckpoint(db, id));
  for (const MetricRecord& m : batch.put_metrics) RETURN_IF_ERROR(PutMetric(db, m));
  for (const ModelRecord& m : batch.put_models) RETURN_IF_ERROR(PutModel(db, m));
  for (const ChannelRecord& c : batch.put_channels) RETURN_IF_ERROR(PutChannel(db, c));
  for (const auto& sc : batch.put_schedules) RETURN_IF_ERROR(PutSchedule(db, sc));
  for (const std::string& id : batch.delete_schedules) RETURN_IF_ERROR(DeleteSchedule(db, id));
  for (const auto& r : batch.insert_schedule_runs) RETURN_IF_ERROR(InsertScheduleRun(db, r));
  for (const auto& a : batch.put_alerts) RETURN_IF_ERROR(PutAlert(db, a));
  for (const std::string& id : batch.delete_alerts) RETURN_IF_ERROR(DeleteAlert(db, id));
  return absl::OkStatus();
}

// Sets WAL and the synchronous level on the writer connection.
absl::Status ConfigureWriter(Db& db, bool synchronous_full) {
  ASSIGN_OR_RETURN(sqlite3_stmt * raw, db.Prepare("PRAGMA journal_mode=WAL"));
  {
    Stmt stmt(raw);
    if (stmt.Step() != SQLITE_ROW) return db.Error("set journal_mode=WAL");
    const std::string mode = stmt.Text(0);
    if (mode != "wal") {
      return absl::FailedPreconditionError(
          absl::StrCat("SQLite database ", db.path(), " cannot use WAL (journal mode is ", mode,
                       "); put the state directory on a local file system"));
    }
  }
  return db.Exec("set synchronous",
                 synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
}

// Reads the schema version (0 for a new database).
absl::StatusOr<int64_t> ReadSchemaVersion(Db& db) {
  RETURN_IF_ERROR(db.Exec("create table meta",
                          "CREATE TABLE IF NOT EXISTS meta ("
                          "key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL)"));
  ASSIGN_OR_RETURN(sqlite3_stmt * raw,
                   db.Prepare("SELECT value FROM meta WHERE key = 'schema_version'"));
  Stmt stmt(raw);
  const int rc = stmt.Step();
  if (rc == SQLITE_DONE) return 0;
  if (rc != SQLITE_ROW) return db.Error("read schema_version");
  return stmt.Int(0);
}

// Creates the schema in a new database, or migrates an older one, inside one transaction.
absl::Status InitSchema(Db& db) {
  RETURN_IF_ERROR(db.Exec("begin schema transaction", "BEGIN IMMEDIATE"));
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(int64_t version, ReadSchemaVersion(db));
    if (version > kSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat(
          "state database ", db.path(), " has schema version ", version,
          ", newer than this forge-coordinator supports (", kSchemaVersion,
          "); run a newer forge-coordinator, or point --state-dir at another directory"));
    }
    if (version == kSchemaVersion) return absl::OkStatus();
    // Each step takes a database of the version before it (0 = new) one version up. Every
    // step only creates tables and indexes (IF NOT EXISTS), so it is also safe to repeat.
    if (version < 1) RETURN_IF_ERROR(db.Exec("create schema v1", kSchemaV1Sql));
    if (version < 2) RETURN_IF_ERROR(db.Exec("migrate schema to v2", kSchemaV2Sql));
    if (version < 3) RETURN_IF_ERROR(db.Exec("migrate schema to v3", kSchemaV3Sql));
    if (version < 4) RETURN_IF_ERROR(db.Exec("migrate schema to v4", kSchemaV4Sql));
    if (version < 5) RETURN_IF_ERROR(db.Exec("migrate schema to v5", kSchemaV5Sql));
    if (version > 0) {
      FORGE_LOG(INFO) << "event=store_schema_migrated path=" << db.path() << " from=" << version
                      << " to=" << kSchemaVersion;
    }
    ASSIGN_OR_RETURN(sqlite3_stmt * raw,
                     db.Prepare("INSERT OR REPLACE INTO meta(key, value) "
                                "VALUES('schema_version', ?1)"));
    Stmt stmt(raw);
    stmt.BindInt(1, kSchemaVersion);
    return Run(db, stmt, "write schema_version");
  }();
  if (status.ok()) return db.Exec("commit schema transaction", "COMMIT");
  if (db.InTransaction()) db.Exec("roll back schema transaction", "ROLLBACK").IgnoreError();
  return status;
}

struct Pending {
  WriteBatch batch;
  std::function<void(absl::Status)> done;
};

}  // namespace

// Thread safety: the queue, the stop flag and the stats are guarded by mu_; the writer
// connection belongs to the writer thread; the read connection is guarded by read_mu_.
class Store::Impl {
 public:
  Impl(const StoreOptions& options, std::unique_ptr<Db> writer_db, std::unique_ptr<Db> read_db)
      : options_(options), writer_db_(std::move(writer_db)), read_db_(std::move(read_db)) {
    writer_ = std::thread([this] { WriterLoop(); });
  }

  ~Impl() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      cv_.Signal();
    }
    writer_.join();
  }

  void Commit(WriteBatch batch, std::function<void(absl::Status)> done) {
    absl::MutexLock lock(&mu_);
    queue_.push_back(Pending{std::move(batch), std::move(done)});
    cv_.Signal();
  }

  StoreStats stats() const {
    absl::MutexLock lock(&mu_);
    return stats_;
  }

  // Runs `sql` on the read connection and calls `row` for each result row. `bind` (optional)
  // binds the statement's parameters first.
  absl::Status Query(const char* sql, absl::string_view op,
                     const std::function<absl::Status(const Stmt&)>& row,
                     const std::function<void(Stmt&)>& bind = nullptr) {
    absl::MutexLock lock(&read_mu_);
    ASSIGN_OR_RETURN(sqlite3_stmt * raw, read_db_->Prepare(sql));
    Stmt stmt(raw);
    if (bind) bind(stmt);
    for (;;) {
      const int rc = stmt.Step();
      if (rc == SQLITE_DONE) return absl::OkStatus();
      if (rc != SQLITE_ROW) return read_db_->Error(op);
      RETURN_IF_ERROR(row(stmt));
    }
  }

  absl::Status CorruptRow(absl::string_view table, absl::string_view id) const {
    return absl::DataLossError(absl::StrCat("state database ", options_.path, ": ", table,
                                            " row ", id,
                                            " does not parse; restore the state directory "
                                            "from a backup"));
  }

 private:
  void WriterLoop() {
    for (;;) {
      std::vector<Pending> group;
      {
        absl::MutexLock lock(&mu_);
        while (queue_.empty() && !stopping_) cv_.Wait(&mu_);
        if (queue_.empty()) return;  // stopping, and drained
        const size_t n = std::min<size_t>(queue_.size(), options_.max_batches_per_transaction);
        group.reserve(n);
        for (size_t i = 0; i < n; ++i) {
          group.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      std::vector<absl::Status> results = RunTransaction(group);
      {
        absl::MutexLock lock(&mu_);
        stats_.batches += group.size();
        stats_.transactions += 1;
      }
      for (size_t i = 0; i < group.size(); ++i) {
        if (group[i].done) group[i].done(std::move(results[i]));
      }
    }
  }

  // Commits `group` in one transaction, each batch under its own savepoint. Returns each
  // batch's outcome.
  std::vector<absl::Status> RunTransaction(const std::vector<Pending>& group) {
    Db& db = *writer_db_;
    std::vector<absl::Status> results(group.size());
    absl::Status txn = RunBatches(db, group, results);
    if (txn.ok()) txn = db.Exec("commit", "COMMIT");
    if (!txn.ok()) {
      // The transaction is gone: every batch not already failed on its own fails with it.
      if (db.InTransaction()) db.Exec("roll back transaction", "ROLLBACK").IgnoreError();
      for (absl::Status& r : results) {
        if (r.ok()) r = txn;
      }
      FORGE_LOG(ERROR) << "event=store_transaction_failed batches=" << group.size()
                       << " error=\"" << txn.message() << "\"";
    }
    return results;
  }

  // Begins the transaction and applies the batches; a batch that fails is rolled back to its
  // savepoint and its error put in `results`. A non-OK return fails the whole transaction.
  static absl::Status RunBatches(Db& db, const std::vector<Pending>& group,
                                 std::vector<absl::Status>& results) {
    RETURN_IF_ERROR(db.Exec("begin transaction", "BEGIN IMMEDIATE"));
    for (size_t i = 0; i < group.size(); ++i) {
      RETURN_IF_ERROR(db.Exec("savepoint", "SAVEPOINT batch"));
      absl::Status s = ApplyBatch(db, group[i].batch);
      if (s.ok()) {
        RETURN_IF_ERROR(db.Exec("release savepoint", "RELEASE batch"));
        continue;
      }
      // Some errors (disk full, I/O) make SQLite roll back the whole transaction.
      if (!db.InTransaction()) return s;
      results[i] = std::move(s);
      RETURN_IF_ERROR(db.Exec("roll back to savepoint", "ROLLBACK TO batch"));
      RETURN_IF_ERROR(db.Exec("release savepoint", "RELEASE batch"));
    }
    return absl::OkStatus();
  }

  const StoreOptions options_;
  const std::unique_ptr<Db> writer_db_;  // used by the writer thread only

  absl::Mutex read_mu_;
  const std::unique_ptr<Db> read_db_ ABSL_PT_GUARDED_BY(read_mu_);

  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  StoreStats stats_ ABSL_GUARDED_BY(mu_);

  std::thread writer_;  // last: starts after everything above exists
};

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  if (options.path.empty()) {
    return absl::InvalidArgumentError("store options: path must name the SQLite database file");
  }
  if (options.max_batches_per_transaction < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("store options: max_batches_per_transaction must be >= 1 (got ",
                     options.max_batches_per_transaction, ")"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Db> writer_db, Db::Open(options.path));
  RETURN_IF_ERROR(ConfigureWriter(*writer_db, options.synchronous_full));
  RETURN_IF_ERROR(InitSchema(*writer_db));
  ASSIGN_OR_RETURN(std::unique_ptr<Db> read_db, Db::Open(options.path));
  RETURN_IF_ERROR(read_db->Exec("set query_only", "PRAGMA query_only=1"));
  FORGE_LOG(INFO) << "event=store_opened path=" << options.path
                  << " schema_version=" << kSchemaVersion
                  << " synchronous=" << (options.synchronous_full ? "FULL" : "NORMAL");
  return std::unique_ptr<Store>(
      new Store(std::make_unique<Impl>(options, std::move(writer_db), std::move(read_db))));
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Store::~Store() = default;

void Store::Commit(WriteBatch batch, std::function<void(absl::Status)> done) {
  impl_->Commit(std::move(batch), std::move(done));
}

absl::Status Store::CommitSync(WriteBatch batch) {
  absl::Notification committed;
  absl::Status result;
  impl_->Commit(std::move(batch), [&](absl::Status s) {
    result = std::move(s);
    committed.Notify();
  });
  committed.WaitForNotification();
  return result;
}

absl::StatusOr<std::vector<Job>> Store::LoadJobs() {
  std::vector<Job> jobs;
  RETURN_IF_ERROR(impl_->Query("SELECT id, job FROM jobs ORDER BY seq", "load jobs",
                               [&](const Stmt& row) -> absl::Status {
                                 Job& job = jobs.emplace_back();
                                 if (!row.Parse(1, &job)) {
                                   return impl_->CorruptRow("jobs", row.Text(0));
                                 }
                                 return absl::OkStatus();
                               }));
  return jobs;
}

absl::StatusOr<std::vector<TenantRecord>> Store::LoadTenants() {
  std::vector<TenantRecord> tenants;
  RETURN_IF_ERROR(impl_->Query("SELECT name, create_time_ns FROM tenants ORDER BY name",
                               "load tenants", [&](const Stmt& row) {
                                 tenants.push_back(TenantRecord{
                                     row.Text(0), absl::FromUnixNanos(row.Int(1))});
                                 return absl::OkStatus();
                               }));
  return tenants;
}

absl::StatusOr<std::vector<TokenRecord>> Store::LoadTokens() {
  std::vector<TokenRecord> tokens;
  RETURN_IF_ERROR(impl_->Query(
      "SELECT id, hash, kind, tenant, note, create_time_ns, revoked FROM tokens ORDER BY id",
      "load tokens", [&](const Stmt& row) -> absl::Status {
        TokenRecord& t = tokens.emplace_back();
        t.id = row.Text(0);
        t.hash = row.Text(1);
        const int64_t kind = row.Int(2);
        if (!forge::v1::TokenKind_IsValid(static_cast<int>(kind))) {
          return impl_->CorruptRow("tokens", t.id);
        }
        t.kind = static_cast<forge::v1::TokenKind>(kind);
        t.tenant = row.Text(3);
        t.note = row.Text(4);
        t.create_time = absl::FromUnixNanos(row.Int(5));
        t.revoked = row.Int(6) != 0;
        return absl::OkStatus();
      }));
  return tokens;
}

absl::StatusOr<std::vector<Worker>> Store::LoadWorkers() {
  std::vector<Worker> workers;
  RETURN_IF_ERROR(impl_->Query("SELECT id, worker FROM workers ORDER BY id", "load workers",
                               [&](const Stmt& row) -> absl::Status {
                                 Worker& w = workers.emplace_back();
                                 if (!row.Parse(1, &w)) {
                                   return impl_->CorruptRow("workers", row.Text(0));
                                 }
                                 return absl::OkStatus();
                               }));
  return workers;
}

absl::StatusOr<std::vector<forge::v1::DatasetInfo>> Store::LoadDatasets() {
  std::vector<forge::v1::DatasetInfo> datasets;
  RETURN_IF_ERROR(impl_->Query(
      "SELECT tenant, name, info FROM datasets ORDER BY tenant, name", "load datasets",
      [&](const Stmt& row) -> absl::Status {
        forge::v1::DatasetInfo& d = datasets.emplace_back();
        if (!row.Parse(2, &d)) {
          return impl_->CorruptRow("datasets", absl::StrCat(row.Text(0), "/", row.Text(1)));
        }
        return absl::OkStatus();
      }));
  return datasets;
}

absl::StatusOr<std::vector<forge::v1::CheckpointInfo>> Store::LoadCheckpoints() {
  std::vector<forge::v1::CheckpointInfo> checkpoints;
  RETURN_IF_ERROR(impl_->Query("SELECT id, info FROM checkpoints ORDER BY job_id, step, id",
                               "load checkpoints", [&](const Stmt& row) -> absl::Status {
                                 forge::v1::CheckpointInfo& c = checkpoints.emplace_back();
                                 if (!row.Parse(1, &c)) {
                                   return impl_->CorruptRow("checkpoints", row.Text(0));
                                 }
                                 return absl::OkStatus();
                               }));
  return checkpoints;
}

absl::StatusOr<std::vector<forge::v1::MetricPoint>> Store::LoadMetrics(const std::string& job_id,
                                                                       int64_t after_step) {
  std::vector<forge::v1::MetricPoint> points;
  RETURN_IF_ERROR(impl_->Query(
      "SELECT step, point FROM metrics WHERE job_id = ?1 AND step > ?2 ORDER BY step, attempt",
      absl::StrCat("load metrics of job ", job_id),
      [&](const Stmt& row) -> absl::Status {
        forge::v1::MetricPoint& p = points.emplace_back();
        if (!row.Parse(1, &p)) {
          return impl_->CorruptRow("metrics", absl::StrCat(job_id, " step ", row.Int(0)));
        }
        return absl::OkStatus();
      },
      [&](Stmt& stmt) {
        stmt.BindText(1, job_id);
        stmt.BindInt(2, after_step);
      }));
  return points;
}

absl::StatusOr<std::vector<ModelRecord>> Store::LoadModels() {
  std::vector<ModelRecord> models;
  RETURN_IF_ERROR(impl_->Query(
      "SELECT tenant, name, entry FROM models ORDER BY tenant, name, stage", "load models",
      [&](const Stmt& row) -> absl::Status {
        ModelRecord& m = models.emplace_back();
        m.tenant = row.Text(0);
        if (!row.Parse(2, &m.entry)) {
          return impl_->CorruptRow("models", absl::StrCat(row.Text(0), "/", row.Text(1)));
        }
        return absl::OkStatus();
      }));
  return models;
}

absl::StatusOr<std::vector<ChannelRecord>> Store::LoadChannels() {
  std::vector<ChannelRecord> channels;
  RETURN_IF_ERROR(impl_->Query(
      "SELECT tenant, channel, entry FROM channels ORDER BY tenant, channel", "load channels",
      [&](const Stmt& row) -> absl::Status {
        ChannelRecord& c = channels.emplace_back();
        c.tenant = row.Text(0);
        if (!row.Parse(2, &c.entry)) {
          return impl_->CorruptRow("channels", absl::StrCat(row.Text(0), "/", row.Text(1)));
        }
        return absl::OkStatus();
      }));
  return channels;
}

absl::StatusOr<std::vector<forge::v1::Schedule>> Store::LoadSchedules() {
  std::vector<forge::v1::Schedule> schedules;
  RETURN_IF_ERROR(impl_->Query("SELECT id, schedule FROM schedules ORDER BY id",
                               "load schedules", [&](const Stmt& row) -> absl::Status {
                                 forge::v1::Schedule& sc = schedules.emplace_back();
                                 if (!row.Parse(1, &sc)) {
                                   return impl_->CorruptRow("schedules", row.Text(0));
                                 }
                                 return absl::OkStatus();
                               }));
  return schedules;
}

absl::StatusOr<std::vector<forge::v1::ScheduleRun>> Store::LoadScheduleRuns(
    const std::string& schedule_id, int limit) {
  std::vector<forge::v1::ScheduleRun> runs;
  // Newest first (LIMIT -1 is no limit in SQLite), reversed below.
  RETURN_IF_ERROR(impl_->Query(
      "SELECT slot_ns, run FROM schedule_runs WHERE schedule_id = ?1 ORDER BY slot_ns DESC "
      "LIMIT ?2",
      absl::StrCat("load runs of schedule ", schedule_id),
      [&](const Stmt& row) -> absl::Status {
        forge::v1::ScheduleRun& r = runs.emplace_back();
        if (!row.Parse(1, &r)) {
          return impl_->CorruptRow("schedule_runs",
                                   absl::StrCat(schedule_id, " slot_ns ", row.Int(0)));
        }
        return absl::OkStatus();
      },
      [&](Stmt& stmt) {
        stmt.BindText(1, schedule_id);
        stmt.BindInt(2, limit > 0 ? limit : -1);
      }));
  std::reverse(runs.begin(), runs.end());
  return runs;
}

absl::StatusOr<std::vector<AlertRecord>> Store::LoadAlerts() {
  std::vector<AlertRecord> alerts;
  RETURN_IF_ERROR(impl_->Query(
      "SELECT id, body FROM alerts ORDER BY seq", "load alerts",
      [&](const Stmt& row) -> absl::Status {
        alerts.push_back(AlertRecord{row.Text(0), row.Text(1)});
        return absl::OkStatus();
      },
      [](Stmt&) {}));
  return alerts;
}

StoreStats Store::stats() const { return impl_->stats(); }

}  // namespace forge::coordinator
