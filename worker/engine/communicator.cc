#include "worker/engine/communicator.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <exception>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "gloo/allreduce_bcube.h"
#include "gloo/allreduce_halving_doubling.h"
#include "gloo/allreduce_ring_chunked.h"
#include "gloo/barrier_all_to_all.h"
#include "gloo/broadcast_one_to_all.h"
#include "gloo/common/error.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/rendezvous/store.h"
#include "gloo/transport/tcp/device.h"

namespace forge {
namespace {

// Gloo reports timeouts as IoException whose text mentions "Timed out"; everything else from
// the transport is a lost peer. Both become Status with the rank and operation named.
absl::Status FromException(const std::exception& e, absl::string_view what, int rank,
                           absl::Duration timeout) {
  std::string msg = e.what();
  bool timed_out = msg.find("imed out") != std::string::npos ||
                   msg.find("imeout") != std::string::npos;
  std::string text = absl::StrCat("communicator rank ", rank, ": ", what, " failed",
                                  timed_out ? absl::StrCat(" after timeout ",
                                                           absl::FormatDuration(timeout))
                                            : "",
                                  ": ", msg);
  if (timed_out) return absl::DeadlineExceededError(text);
  return absl::UnavailableError(text);
}

// Broadcast entries in the cache use kind = kBroadcastBase + root.
constexpr int kBroadcastBase = 100;

// Gloo's FileStore is not thread-safe (set() appends to an unguarded member vector), and rank
// threads in one process (tests, benchmarks) share one store: two concurrent set() calls
// corrupted the heap (SIGSEGV in FileStore::set) and could lose a key, leaving a peer waiting
// for it. Our communicators' set() and get() calls into a caller's store are therefore
// serialized by one process-wide mutex. wait() is not: it only polls for files, and holding the
// mutex there would keep a peer from publishing the awaited key.
class SerializedStore final : public gloo::rendezvous::Store {
 public:
  explicit SerializedStore(std::shared_ptr<gloo::rendezvous::Store> store)
      : store_(std::move(store)) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    absl::MutexLock lock(&Mu());
    store_->set(key, data);
  }
  std::vector<char> get(const std::string& key) override {
    store_->wait({key}, kDefaultTimeout);
    absl::MutexLock lock(&Mu());
    return store_->get(key);
  }
  void wait(const std::vector<std::string>& keys) override { store_->wait(keys); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    store_->wait(keys, timeout);
  }

 private:
  static absl::Mutex& Mu() {
    static absl::Mutex* mu = new absl::Mutex();
    return *mu;
  }
  std::shared_ptr<gloo::rendezvous::Store> store_;
};

}  // namespace

Communicator::Communicator(CommunicatorOptions options) : options_(std::move(options)) {}

Communicator::~Communicator() {
  // See "Shutdown" in the header: wait until every rank is done before closing sockets.
  if (barrier_ != nullptr && broken_.empty()) {
    try {
      barrier_->run();
    } catch (const std::exception&) {
      // A peer that closed right after the barrier, or one that is gone: nothing to report.
    }
  }
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Create(CommunicatorOptions options) {
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("communicator: world_size must be >= 1 (got ", options.world_size, ")"));
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("communicator: rank must be in [0, ",
                                                   options.world_size, ") (got ", options.rank,
                                                   ")"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("communicator: timeout must be > 0");
  }
  std::unique_ptr<Communicator> comm(new Communicator(std::move(options)));
  const CommunicatorOptions& o = comm->options_;
  if (o.world_size == 1) return comm;
  if (o.store == nullptr) {
    return absl::InvalidArgumentError(
        "communicator: world_size > 1 needs a rendezvous store (options.store is null)");
  }
  const auto timeout = std::chrono::milliseconds(absl::ToInt64Milliseconds(o.timeout));
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = o.interface_address;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    SerializedStore serialized(o.store);
    gloo::rendezvous::PrefixStore store(o.prefix, serialized);
    auto context = std::make_shared<gloo::rendezvous::Context>(o.rank, o.world_size);
    context->setTimeout(timeout);
    context->connectFullMesh(store, device);
    comm->context_ = std::move(context);
    comm->barrier_ = std::make_unique<gloo::BarrierAllToAll>(comm->context_);
  } catch (const std::exception& e) {
    return FromException(
        e,
        absl::StrCat("rendezvous (prefix \"", o.prefix, "\", world_size ", o.world_size,
                     ", address ", o.interface_address,
                     "; check that every rank started and uses the same store and prefix)"),
        o.rank, o.timeout);
  }
  return comm;
}

absl::Status Communicator::CheckUsable(size_t count) const {
  if (!broken_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "communicator rank ", options_.rank,
        " is unusable after an earlier failure (", broken_,
        "); create a new one under a new prefix"));
  }
  if (count > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat("communicator: count ", count, " exceeds INT_MAX; split the buffer"));
  }
  return absl::OkStatus();
}

AllReduceAlgorithm Communicator::Choose(size_t count) const {
  if (options_.algorithm != AllReduceAlgorithm::kAuto) return options_.algorithm;
  return count * sizeof(float) < options_.small_buffer_bytes
             ? AllReduceAlgorithm::kHalvingDoubling
             : AllReduceAlgorithm::kRingChunked;
}

std::unique_ptr<gloo::Algorithm> Communicator::MakeAllReduce(AllReduceAlgorithm algo, float* data,
                                                             size_t count) {
  std::vector<float*> ptrs{data};
  const int n = static_cast<int>(count);
  switch (algo) {
    case AllReduceAlgorithm::kHalvingDoubling:
      return std::make_unique<gloo::AllreduceHalvingDoubling<float>>(context_, ptrs, n);
    case AllReduceAlgorithm::kBcube:
      return std::make_unique<gloo::AllreduceBcube<float>>(context_, ptrs, n);
    default:
      return std::make_unique<gloo::AllreduceRingChunked<float>>(context_, ptrs, n);
  }
}

absl::StatusOr<Communicator::Cached*> Communicator::GetOrBuild(const Key& key) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    cache_.splice(cache_.begin(), cache_, it->second);
    return cache_.front().second.get();
  }
  const auto [kind, count] = key;
  auto cached = std::make_unique<Cached>();
  cached->scratch.resize(count);
  std::vector<float*> ptrs{cached->scratch.data()};
  if (kind >= kBroadcastBase) {
    cached->algorithm =
        std::make_unique<gloo::BroadcastOneToAll<float>>(context_, ptrs, count,
                                                          kind - kBroadcastBase);
  } else {
    cached->algorithm =
        MakeAllReduce(static_cast<AllReduceAlgorithm>(kind), cached->scratch.data(), count);
  }
  cache_.emplace_front(key, std::move(cached));
  index_[key] = cache_.begin();
  while (static_cast<int>(cache_.size()) > std::max(1, options_.max_cached_sizes)) {
    index_.erase(cache_.back().first);
    cache_.pop_back();
  }
  return cache_.front().second.get();
}

absl::Status Communicator::RunStaged(const Key& key, float* data, size_t count, bool copy_in,
                                     bool copy_out) {
  try {
    ASSIGN_OR_RETURN(Cached * cached, GetOrBuild(key));
    const bool own = data == cached->scratch.data();  // from AllReduceBuffer: no copies
    if (copy_in && !own) std::memcpy(cached->scratch.data(), data, count * sizeof(float));
    cached->algorithm->run();
    if (copy_out && !own) std::memcpy(data, cached->scratch.data(), count * sizeof(float));
  } catch (const std::exception& e) {
    absl::Status s = FromException(e, key.first >= kBroadcastBase ? "broadcast" : "all-reduce",
                                   options_.rank, options_.timeout);
    broken_ = std::string(s.message());
    return s;
  }
  return absl::OkStatus();
}

absl::Status Communicator::AllReduceSum(float* data, size_t count) {
  RETURN_IF_ERROR(CheckUsable(count));
  if (options_.world_size == 1 || count == 0) return absl::OkStatus();
  if (data == nullptr) return absl::InvalidArgumentError("communicator: AllReduceSum data is null");
  return RunStaged({static_cast<int>(Choose(count)), count}, data, count, true, true);
}

absl::StatusOr<float*> Communicator::AllReduceBuffer(size_t count) {
  RETURN_IF_ERROR(CheckUsable(count));
  if (count == 0) return absl::InvalidArgumentError("communicator: AllReduceBuffer of 0 floats");
  if (options_.world_size == 1) {
    local_.resize(count);
    return local_.data();
  }
  try {
    ASSIGN_OR_RETURN(Cached * cached, GetOrBuild({static_cast<int>(Choose(count)), count}));
    return cached->scratch.data();
  } catch (const std::exception& e) {
    absl::Status s = FromException(e, "all-reduce setup", options_.rank, options_.timeout);
    broken_ = std::string(s.message());
    return s;
  }
}

absl::Status Communicator::Broadcast(float* data, size_t count, int root) {
  RETURN_IF_ERROR(CheckUsable(count));
  if (root < 0 || root >= options_.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("communicator: broadcast root must be in [0, ",
                                                   options_.world_size, ") (got ", root, ")"));
  }
  if (options_.world_size == 1 || count == 0) return absl::OkStatus();
  if (data == nullptr) return absl::InvalidArgumentError("communicator: Broadcast data is null");
  const bool is_root = root == options_.rank;
  return RunStaged({kBroadcastBase + root, count}, data, count, is_root, !is_root);
}

absl::Status Communicator::Barrier() {
  RETURN_IF_ERROR(CheckUsable(0));
  if (options_.world_size == 1) return absl::OkStatus();
  try {
    barrier_->run();
  } catch (const std::exception& e) {
    absl::Status s = FromException(e, "barrier", options_.rank, options_.timeout);
    broken_ = std::string(s.message());
    return s;
  }
  return absl::OkStatus();
}

}  // namespace forge
