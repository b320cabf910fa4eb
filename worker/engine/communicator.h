// Communicator: CPU collectives (all-reduce sum, broadcast, barrier) between the ranks of one
// training job, over Gloo's TCP transport.
//
//   CommunicatorOptions opts{.rank = r, .world_size = n, .store = store, .prefix = "job7/a0"};
//   ASSIGN_OR_RETURN(auto comm, Communicator::Create(opts));
//   RETURN_IF_ERROR(comm->AllReduceSum(grads.data(), grads.size()));
//
// Rendezvous: every rank publishes its address under `prefix` in the shared store (a Gloo
// FileStore on a shared dir, or the coordinator-hosted store) and connects to every other rank.
// A fresh prefix per job attempt keeps a restarted attempt from reading stale addresses.
// Calls into the store are serialized process-wide (Gloo's FileStore is not thread-safe), so
// rank threads of one process may share one store object.
//
// Collectives are matched by call order: every rank must make the same sequence of calls with
// the same counts (and the same root for Broadcast). Pointers may differ between ranks and
// between calls. Every collective is staged through a scratch buffer owned by the communicator:
// copy in, run the Gloo algorithm on the scratch, copy out. One algorithm instance per
// (algorithm, count) is built on first use and reused; the cache is keyed and evicted only by
// the call sequence, so every rank builds and drops the same instances in the same order, and
// Gloo's per-instance slots always match across ranks. (An earlier version ran large
// all-reduces in place with instances cached per caller pointer; two ranks could then both
// "hit" instances built at different calls, whose slots did not match: wrong data, a stall or a
// use-after-free. The memcpy it saved is small next to the TCP transfer.)
//
// Shutdown: Gloo fails a wait on a pair as soon as the peer closes its socket, even when the
// awaited data already arrived, so a rank that finishes its last collective and closes first
// could make a slower peer's last collective fail with "Connection closed by peer". The
// destructor therefore runs a barrier first (errors ignored): no rank closes its sockets until
// every rank has finished every collective it was asked for. Destroy the communicators of all
// ranks at about the same time; a rank whose peers never reach their destructor waits up to
// `timeout` there. A broken communicator skips the barrier.
//
// Thread safety: owned by one thread. No method may be called concurrently with another on the
// same Communicator (Gloo pairs one context to one stream of collectives). Use one Communicator
// per thread if collectives must overlap; give each its own prefix.
//
// Timeouts: `timeout` bounds rendezvous (Create fails with DeadlineExceeded if a peer never
// joins) and every wait inside a collective (a peer that vanishes or stalls makes the call fail
// within about `timeout`; it never hangs forever). After a failed collective the communicator
// is broken: later calls return FailedPrecondition; build a new one under a new prefix.
//
// Gloo throws exceptions; they are caught here and returned as absl::Status.
#ifndef FORGE_WORKER_ENGINE_COMMUNICATOR_H_
#define FORGE_WORKER_ENGINE_COMMUNICATOR_H_

#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace gloo {
class Context;
class Algorithm;
namespace rendezvous {
class Store;
}  // namespace rendezvous
}  // namespace gloo

namespace forge {

// Which Gloo all-reduce algorithm to run. kAuto picks by buffer size.
enum class AllReduceAlgorithm { kAuto, kRingChunked, kHalvingDoubling, kBcube };

struct CommunicatorOptions {
  int rank = 0;
  int world_size = 1;
  // Shared rendezvous store; required when world_size > 1. Kept alive by the communicator.
  std::shared_ptr<gloo::rendezvous::Store> store;
  // Scopes the rendezvous keys to one job attempt (e.g. "job-42/attempt-3").
  std::string prefix = "forge";
  // Local address to listen on and advertise to peers.
  std::string interface_address = "127.0.0.1";
  absl::Duration timeout = absl::Seconds(30);
  // kAuto: halving-doubling below small_buffer_bytes (lower latency), ring-chunked above.
  AllReduceAlgorithm algorithm = AllReduceAlgorithm::kAuto;
  size_t small_buffer_bytes = 8 << 20;
  // Distinct counts whose algorithm instances and scratch stay cached (least recently used
  // evicted first; eviction is driven by the call sequence, so it is identical on every rank).
  int max_cached_sizes = 8;
};

class Communicator {
 public:
  static absl::StatusOr<std::unique_ptr<Communicator>> Create(CommunicatorOptions options);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }

  // In-place element-wise sum of `data[0..count)` across all ranks. A user buffer is copied
  // into the communicator's buffer for `count` and back; a buffer from AllReduceBuffer is
  // reduced where it is, with no copy.
  absl::Status AllReduceSum(float* data, size_t count);
  // The communicator's own buffer for all-reduces of `count` floats, for callers that can
  // produce their data in place (fill it, then AllReduceSum(buffer, count)). Building it is
  // part of the collective call sequence: every rank must ask for the same counts in the same
  // order. Valid until max_cached_sizes other counts have been used since.
  absl::StatusOr<float*> AllReduceBuffer(size_t count);
  // Copies `data[0..count)` from rank `root` into `data` on every other rank.
  absl::Status Broadcast(float* data, size_t count, int root);
  // Returns once every rank has entered Barrier.
  absl::Status Barrier();

 private:
  struct Cached {
    std::vector<float> scratch;
    std::unique_ptr<gloo::Algorithm> algorithm;
  };
  using Key = std::pair<int, size_t>;  // (kind, count); kind encodes algorithm or broadcast root

  explicit Communicator(CommunicatorOptions options);
  absl::Status CheckUsable(size_t count) const;
  absl::StatusOr<Cached*> GetOrBuild(const Key& key);
  absl::Status RunStaged(const Key& key, float* data, size_t count, bool copy_in, bool copy_out);
  AllReduceAlgorithm Choose(size_t count) const;
  std::unique_ptr<gloo::Algorithm> MakeAllReduce(AllReduceAlgorithm algo, float* data,
                                                 size_t count);

  CommunicatorOptions options_;
  std::shared_ptr<gloo::Context> context_;
  std::unique_ptr<gloo::Algorithm> barrier_;
  // LRU: front = most recent. Declared after context_ so they are destroyed first.
  std::list<std::pair<Key, std::unique_ptr<Cached>>> cache_;
  std::map<Key, decltype(cache_)::iterator> index_;
  std::string broken_;  // non-empty once a collective failed
  std::vector<float> local_;  // AllReduceBuffer's buffer when world_size == 1
};

}  // namespace forge

#endif  // FORGE_WORKER_ENGINE_COMMUNICATOR_H_
