// NcclCommunicator on the CUDA emulation, for the emulated backend's data-parallel tests: the
// ranks of a job are communicators in one process, created under the same key (the options
// are checked as on a GPU, but the rendezvous store is not used), and
// driven in turn from one thread. The emulated kernels run when launched, so a collective's
// input is final when it is enqueued; the emulation records each rank's buffer with a copy of
// it, and Synchronize sums every collective all ranks have enqueued, in rank order, into every
// rank's buffer. What real NCCL would make a race, this reports:
//   - a buffer that changed between its rank's enqueue and the sum (the caller wrote into
//     memory it had handed to a collective in flight): Internal, naming rank, call and element;
//   - collectives that do not match across ranks (kind, count or root): Internal;
//   - a Synchronize while another rank has not enqueued a collective this rank waits for:
//     DeadlineExceeded, as a real rank would see at its timeout (ranks run in turn here, so
//     every rank must enqueue before any waits).
// Any error breaks the communicator, as in nccl_communicator.h. Streams and devices are the
// emulation's (ignored); buffers are host memory.
#ifndef FORGE_CUDA_EMULATION
#error "build with FORGE_CUDA_EMULATION defined"
#endif

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/cuda/nccl_communicator.h"

namespace forge::cuda {
namespace {

struct Collective {
  int root = -1;  // -1 for an all-reduce
  size_t count = 0;
  std::vector<float*> data;                 // per rank; null until it enqueues
  std::vector<std::vector<float>> entered;  // per rank: the buffer when enqueued
  int joined = 0;
  bool done = false;
};

struct Group {
  int world_size = 0;
  int members = 0;
  std::vector<Collective> calls;  // in call order
  std::vector<size_t> enqueued;   // per rank: how many it has enqueued
};

std::mutex& RegistryMutex() {
  static std::mutex mu;
  return mu;
}
std::map<std::string, std::shared_ptr<Group>>& Registry() {
  static std::map<std::string, std::shared_ptr<Group>> groups;
  return groups;
}

std::shared_ptr<Group> Find(const std::string& key) {
  auto it = Registry().find(key);
  return it == Registry().end() ? nullptr : it->second;
}

std::string Kind(int root) {
  return root < 0 ? std::string("all-reduce") : absl::StrCat("broadcast from rank ", root);
}

// Records this rank's part of its next collective (kind `root`, -1 for an all-reduce).
absl::Status Enqueue(Group& g, int rank, int root, float* data, size_t count) {
  const size_t index = g.enqueued[rank]++;
  if (index == g.calls.size()) {
    Collective c;
    c.root = root;
    c.count = count;
    c.data.assign(g.world_size, nullptr);
    c.entered.resize(g.world_size);
    g.calls.push_back(std::move(c));
  }
  Collective& c = g.calls[index];
  if (c.root != root || c.count != count) {
    return absl::InternalError(
        absl::StrCat("nccl rank ", rank, ": collective ", index, " is a ", Kind(root), " of ",
                     count, " floats, but another rank's is a ", Kind(c.root), " of ", c.count,
                     " floats: collectives must match across ranks"));
  }
  c.data[rank] = data;
  c.entered[rank].assign(data, data + count);
  ++c.joined;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(NcclOptions options) {
  RETURN_IF_ERROR(CheckNcclOptions(options));  // the store itself is not used here
  std::lock_guard<std::mutex> lock(RegistryMutex());
  std::shared_ptr<Group>& g = Registry()[options.key];
  if (g == nullptr) {
    g = std::make_shared<Group>();
    g->world_size = options.world_size;
    g->enqueued.assign(options.world_size, 0);
  }
  if (g->world_size != options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("nccl communicator (emulated): key ",
                                                   options.key, " has world_size ", g->world_size,
                                                   ", not ", options.world_size));
  }
  ++g->members;
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(options)));
}

NcclCommunicator::~NcclCommunicator() {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  std::shared_ptr<Group> g = Find(options_.key);
  if (g != nullptr && --g->members == 0) Registry().erase(options_.key);
}

absl::Status NcclCommunicator::Break(absl::Status error) {
  if (broken_.empty()) broken_ = std::string(error.message());
  return error;
}

absl::Status NcclCommunicator::AllReduceSumAsync(float* data, size_t count, cudaStream_t) {
  if (!broken_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("nccl rank ", options_.rank, ": communicator is broken: ", broken_));
  }
  if (data == nullptr || count == 0) {
    return absl::InvalidArgumentError("nccl communicator: all-reduce needs data and count > 0");
  }
  std::lock_guard<std::mutex> lock(RegistryMutex());
  absl::Status s = Enqueue(*Find(options_.key), options_.rank, -1, data, count);
  return s.ok() ? s : Break(s);
}

absl::Status NcclCommunicator::BroadcastAsync(float* data, size_t count, int root, cudaStream_t) {
  if (!broken_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("nccl rank ", options_.rank, ": communicator is broken: ", broken_));
  }
  if (data == nullptr || count == 0 || root < 0 || root >= options_.world_size) {
    return absl::InvalidArgumentError(
        "nccl communicator: broadcast needs data, count > 0 and a root in [0, world_size)");
  }
  std::lock_guard<std::mutex> lock(RegistryMutex());
  absl::Status s = Enqueue(*Find(options_.key), options_.rank, root, data, count);
  return s.ok() ? s : Break(s);
}

absl::Status NcclCommunicator::Synchronize(cudaStream_t) {
  if (!broken_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("nccl rank ", options_.rank,
                                                      ": communicator is broken: ", broken_,
                                                      "; create a new one under a new key"));
  }
  std::lock_guard<std::mutex> lock(RegistryMutex());
  Group& g = *Find(options_.key);
  for (size_t i = 0; i < g.enqueued[options_.rank]; ++i) {
    Collective& c = g.calls[i];
    if (c.done) continue;
    if (c.joined < g.world_size) {
      return Break(absl::DeadlineExceededError(
          absl::StrCat("nccl rank ", options_.rank, ": collective ", i, " (", Kind(c.root),
                       ") waits for ", g.world_size - c.joined,
                       " rank(s) that never enqueued it (emulated ranks run in turn: "
                       "every rank must enqueue before any waits)")));
    }
    for (int r = 0; r < g.world_size; ++r) {
      for (size_t e = 0; e < c.count; ++e) {
        if (std::memcmp(&c.data[r][e], &c.entered[r][e], sizeof(float)) != 0) {
          return Break(absl::InternalError(absl::StrCat(
              "nccl rank ", r, ": element ", e, " of collective ", i, " (", Kind(c.root), " of ",
              c.count, " floats) changed after the collective was enqueued (", c.entered[r][e],
              " -> ", c.data[r][e], "): on a GPU that is a race with NCCL")));
        }
      }
    }
    std::vector<float> result(c.count, 0.0f);
    if (c.root < 0) {
      for (int r = 0; r < g.world_size; ++r) {
        for (size_t e = 0; e < c.count; ++e) result[e] += c.entered[r][e];
      }
    } else {
      result = c.entered[c.root];
    }
    for (int r = 0; r < g.world_size; ++r) {
      std::memcpy(c.data[r], result.data(), c.count * sizeof(float));
    }
    c.done = true;
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllReduceSum(float* data, size_t count, cudaStream_t stream) {
  RETURN_IF_ERROR(AllReduceSumAsync(data, count, stream));
  return Synchronize(stream);
}

absl::Status NcclCommunicator::Broadcast(float* data, size_t count, int root, cudaStream_t stream) {
  RETURN_IF_ERROR(BroadcastAsync(data, count, root, stream));
  return Synchronize(stream);
}

}  // namespace forge::cuda
