#include "worker/cuda/nccl_communicator.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gloo/rendezvous/hash_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::cuda {
namespace {

using ::testing::HasSubstr;

// Visible CUDA devices; 0 on any error (no driver, no GPU), with the reason in *why.
int CudaDeviceCount(std::string* why) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    *why =
        absl::StrCat("cudaGetDeviceCount: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
    return 0;
  }
  if (count == 0) *why = "cudaGetDeviceCount found 0 devices";
  return count;
}

// Skips the test unless at least `n` CUDA devices answer.
#define SKIP_UNLESS_CUDA_DEVICES(n)                                        \
  do {                                                                     \
    std::string why_;                                                      \
    const int have_ = CudaDeviceCount(&why_);                              \
    if (have_ == 0) GTEST_SKIP() << "no CUDA device: " << why_;            \
    if (have_ < (n)) {                                                     \
      GTEST_SKIP() << "needs " << (n) << " CUDA devices, found " << have_; \
    }                                                                      \
  } while (0)

#define ASSERT_CUDA(expr)                                                       \
  do {                                                                          \
    cudaError_t e_ = (expr);                                                    \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorName(e_) << " (" \
                               << cudaGetErrorString(e_) << ")";                \
  } while (0)

std::string TestKey() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat("nccl-test/", info->test_suite_name(), ".", info->name());
}

std::vector<float> RandomFloats(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (float& x : v) x = dist(rng);
  return v;
}

// cudaMalloc'd floats on the current device (never managed memory: NCCL needs device memory).
class DeviceFloats {
 public:
  explicit DeviceFloats(size_t count) : count_(count) {
    status_ = cudaMalloc(reinterpret_cast<void**>(&data_), count * sizeof(float));
    if (status_ != cudaSuccess) data_ = nullptr;
  }
  ~DeviceFloats() {
    if (data_ != nullptr) (void)cudaFree(data_);
  }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;

  cudaError_t status() const { return status_; }
  float* data() const { return data_; }
  cudaError_t Upload(const std::vector<float>& host) {
    return cudaMemcpy(data_, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
  }
  cudaError_t Download(std::vector<float>* host) const {
    host->resize(count_);
    return cudaMemcpy(host->data(), data_, count_ * sizeof(float), cudaMemcpyDeviceToHost);
  }

 private:
  size_t count_;
  float* data_ = nullptr;
  cudaError_t status_;
};

class Stream {
 public:
  Stream() { status_ = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking); }
  ~Stream() {
    if (status_ == cudaSuccess) (void)cudaStreamDestroy(stream_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaError_t status() const { return status_; }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
  cudaError_t status_;
};

// Runs body(rank, comm, stream) on one thread per rank, rank r on device r, all sharing one
// HashStore. Each thread creates its communicator (which selects its device) and a stream.
void RunRanks(int world, absl::Duration timeout,
              const std::function<void(int, NcclCommunicator&, cudaStream_t)>& body) {
  gloo::rendezvous::HashStore store;
  const std::string key = TestKey();
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      NcclOptions o;
      o.rank = r;
      o.world_size = world;
      o.device = r;
      o.store = &store;
      o.key = key;
      o.timeout = timeout;
      auto comm = NcclCommunicator::Create(o);
      ASSERT_TRUE(comm.ok()) << "rank " << r << ": " << comm.status();
      Stream stream;
      ASSERT_CUDA(stream.status());
      body(r, **comm, stream.get());
    });
  }
  for (auto& t : threads) t.join();
}

int TestWorld() {
  std::string why;
  return std::min(CudaDeviceCount(&why), 8);
}

// ---- Option validation: runs everywhere, no GPU needed (Create validates before any CUDA
// call, so on a machine without a device these still report the option, not the device).

struct BadOptionCase {
  std::string name;
  std::function<void(NcclOptions&)> edit;
  std::string field;  // the error must name it
};

// Names the case in test output (and CTest names) instead of dumping its bytes.
void PrintTo(const BadOptionCase& c, std::ostream* os) { *os << c.name; }

class NcclOptionsTest : public ::testing::TestWithParam<BadOptionCase> {};

TEST_P(NcclOptionsTest, RejectsWithInvalidArgumentNamingTheField) {
  gloo::rendezvous::HashStore store;
  NcclOptions o;
  o.world_size = 2;
  o.store = &store;
  GetParam().edit(o);
  auto comm = NcclCommunicator::Create(o);
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument) << comm.status();
  EXPECT_THAT(std::string(comm.status().message()), HasSubstr(GetParam().field));
}

INSTANTIATE_TEST_SUITE_P(
    Validation, NcclOptionsTest,
    ::testing::Values(
        BadOptionCase{"WorldSizeZero", [](NcclOptions& o) { o.world_size = 0; }, "world_size"},
        BadOptionCase{"WorldSizeNegative", [](NcclOptions& o) { o.world_size = -3; }, "world_size"},
        BadOptionCase{"RankNegative", [](NcclOptions& o) { o.rank = -1; }, "rank"},
        BadOptionCase{"RankEqualsWorld", [](NcclOptions& o) { o.rank = 2; }, "rank"},
        BadOptionCase{"RankAboveWorldOfOne",
                      [](NcclOptions& o) {
                        o.world_size = 1;
                        o.rank = 1;
                      },
                      "rank"},
        BadOptionCase{"DeviceNegative", [](NcclOptions& o) { o.device = -1; }, "device"},
        BadOptionCase{"TimeoutZero", [](NcclOptions& o) { o.timeout = absl::ZeroDuration(); },
                      "timeout"},
        BadOptionCase{"TimeoutNegative", [](NcclOptions& o) { o.timeout = absl::Seconds(-1); },
                      "timeout"},
        BadOptionCase{"NoStoreForTwoRanks", [](NcclOptions& o) { o.store = nullptr; }, "store"},
        BadOptionCase{"EmptyKeyForTwoRanks", [](NcclOptions& o) { o.key.clear(); }, "key"}),
    [](const ::testing::TestParamInfo<BadOptionCase>& info) { return info.param.name; });

TEST(NcclCommunicatorTest, WithoutDeviceCreateIsFailedPrecondition) {
  std::string why;
  if (CudaDeviceCount(&why) > 0) {
    GTEST_SKIP() << "a CUDA device is present; this test covers machines without one";
  }
  auto comm = NcclCommunicator::Create(NcclOptions{});
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kFailedPrecondition) << comm.status();
  EXPECT_THAT(std::string(comm.status().message()), HasSubstr("no CUDA device"));
}

// ---- One rank on device 0.

TEST(NcclCommunicatorTest, DeviceOutOfRangeIsInvalidArgument) {
  SKIP_UNLESS_CUDA_DEVICES(1);
  std::string why;
  NcclOptions o;
  o.device = CudaDeviceCount(&why);
  auto comm = NcclCommunicator::Create(o);
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument) << comm.status();
  EXPECT_THAT(std::string(comm.status().message()), HasSubstr("device"));
}

TEST(NcclCommunicatorTest, OneRankAllReduceAndBroadcastAreIdentity) {
  SKIP_UNLESS_CUDA_DEVICES(1);
  auto comm_or = NcclCommunicator::Create(NcclOptions{});  // world 1, device 0, no store
  ASSERT_TRUE(comm_or.ok()) << comm_or.status();
  NcclCommunicator& comm = **comm_or;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.world_size(), 1);
  EXPECT_EQ(comm.device(), 0);
  EXPECT_NE(comm.comm(), nullptr);
  Stream stream;
  ASSERT_CUDA(stream.status());
  for (size_t count : {size_t{1}, size_t{7}, size_t{1000}, size_t{4097}, (size_t{1} << 20) + 3}) {
    SCOPED_TRACE(absl::StrCat("count=", count));
    const std::vector<float> input = RandomFloats(count, static_cast<uint32_t>(count));
    DeviceFloats buf(count);
    ASSERT_CUDA(buf.status());
    ASSERT_CUDA(buf.Upload(input));
    ASSERT_TRUE(comm.AllReduceSum(buf.data(), count, stream.get()).ok());
    std::vector<float> out;
    ASSERT_CUDA(buf.Download(&out));
    EXPECT_TRUE(out == input) << "one rank: the sum must be the input, bit for bit";

    ASSERT_TRUE(comm.AllReduceSumAsync(buf.data(), count, stream.get()).ok());
    ASSERT_TRUE(comm.BroadcastAsync(buf.data(), count, 0, stream.get()).ok());
    ASSERT_TRUE(comm.Synchronize(stream.get()).ok());
    ASSERT_CUDA(buf.Download(&out));
    EXPECT_TRUE(out == input) << "all-reduce + broadcast on one rank changed the data";
  }
  EXPECT_FALSE(comm.broken());
}

TEST(NcclCommunicatorTest, BadCallArgumentsAreRejectedWithoutBreaking) {
  SKIP_UNLESS_CUDA_DEVICES(1);
  auto comm_or = NcclCommunicator::Create(NcclOptions{});
  ASSERT_TRUE(comm_or.ok()) << comm_or.status();
  NcclCommunicator& comm = **comm_or;
  Stream stream;
  ASSERT_CUDA(stream.status());
  DeviceFloats buf(16);
  ASSERT_CUDA(buf.status());

  absl::Status s = comm.AllReduceSum(buf.data(), 0, stream.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("count"));
  s = comm.AllReduceSum(nullptr, 16, stream.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("data"));
  s = comm.Broadcast(buf.data(), 16, 1, stream.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("root"));

  EXPECT_FALSE(comm.broken());
  EXPECT_TRUE(comm.AllReduceSum(buf.data(), 16, stream.get()).ok());
}

// ---- Several ranks, one thread and one device each.

TEST(NcclCommunicatorTest, MultiRankAllReduceMatchesHostSum) {
  SKIP_UNLESS_CUDA_DEVICES(2);
  const int world = TestWorld();
  const std::vector<size_t> counts = {1, 1000, (size_t{1} << 20) + 3};
  // inputs[c][r]: rank r's data for counts[c]; fresh random data per rank and size.
  std::vector<std::vector<std::vector<float>>> inputs(counts.size());
  for (size_t c = 0; c < counts.size(); ++c) {
    for (int r = 0; r < world; ++r) {
      inputs[c].push_back(RandomFloats(counts[c], static_cast<uint32_t>(1000 * c + r + 1)));
    }
  }
  RunRanks(world, absl::Seconds(60), [&](int rank, NcclCommunicator& comm, cudaStream_t stream) {
    EXPECT_EQ(comm.world_size(), world);
    for (size_t c = 0; c < counts.size(); ++c) {
      const size_t count = counts[c];
      SCOPED_TRACE(absl::StrCat("rank=", rank, " count=", count));
      DeviceFloats buf(count);
      ASSERT_CUDA(buf.status());
      ASSERT_CUDA(buf.Upload(inputs[c][rank]));
      absl::Status s = comm.AllReduceSum(buf.data(), count, stream);
      ASSERT_TRUE(s.ok()) << s;
      std::vector<float> out;
      ASSERT_CUDA(buf.Download(&out));
      // Tolerance: each of the world-1 additions rounds once (relative FLT_EPSILON/2) and NCCL
      // may add in any order, so |error| <= world * FLT_EPSILON * sum_r |x_r|.
      size_t wrong = 0;
      for (size_t i = 0; i < count; ++i) {
        double exact = 0, magnitude = 0;
        for (int r = 0; r < world; ++r) {
          exact += inputs[c][r][i];
          magnitude += std::fabs(inputs[c][r][i]);
        }
        const double tol = world * FLT_EPSILON * magnitude;
        if (!(std::fabs(out[i] - exact) <= tol)) {
          if (++wrong <= 5) {
            ADD_FAILURE() << "element " << i << ": got " << out[i] << ", host sum " << exact
                          << ", tolerance " << tol;
          }
        }
      }
      EXPECT_EQ(wrong, 0u);
    }
  });
}

TEST(NcclCommunicatorTest, MultiRankBroadcastCopiesRootBitwise) {
  SKIP_UNLESS_CUDA_DEVICES(2);
  const int world = TestWorld();
  const size_t count = (size_t{1} << 20) + 3;
  RunRanks(world, absl::Seconds(60), [&](int rank, NcclCommunicator& comm, cudaStream_t stream) {
    for (int root : {world - 1, 0}) {
      SCOPED_TRACE(absl::StrCat("rank=", rank, " root=", root));
      const std::vector<float> root_data = RandomFloats(count, 77 + root);
      DeviceFloats buf(count);
      ASSERT_CUDA(buf.status());
      ASSERT_CUDA(buf.Upload(rank == root ? root_data : std::vector<float>(count, -5.0f)));
      absl::Status s = comm.Broadcast(buf.data(), count, root, stream);
      ASSERT_TRUE(s.ok()) << s;
      std::vector<float> out;
      ASSERT_CUDA(buf.Download(&out));
      EXPECT_TRUE(out == root_data)
          << "rank " << rank << " did not receive root " << root << "'s data";
    }
  });
}

// Rank 1 never enqueues the second all-reduce: rank 0 must give up after `timeout`, abort,
// and refuse every later call.
TEST(NcclCommunicatorTest, MissingPeerTimesOutAbortsAndBreaks) {
  SKIP_UNLESS_CUDA_DEVICES(2);
  const absl::Duration timeout = absl::Seconds(5);
  const size_t count = 1 << 16;
  absl::Notification rank0_done;
  RunRanks(2, timeout, [&](int rank, NcclCommunicator& comm, cudaStream_t stream) {
    DeviceFloats buf(count);
    ASSERT_CUDA(buf.status());
    ASSERT_CUDA(buf.Upload(std::vector<float>(count, 1.0f)));
    // One matched collective first, so connections exist and the stall is in the kernel.
    absl::Status s = comm.AllReduceSum(buf.data(), count, stream);
    ASSERT_TRUE(s.ok()) << "rank " << rank << ": " << s;
    if (rank == 1) {
      // Keep the communicator alive (not destroyed) while rank 0 waits for it.
      EXPECT_TRUE(rank0_done.WaitForNotificationWithTimeout(timeout + absl::Seconds(60)));
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    s = comm.AllReduceSumAsync(buf.data(), count, stream);
    if (s.ok()) s = comm.Synchronize(stream);
    const double waited_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    rank0_done.Notify();
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("timeout"));
    EXPECT_GE(waited_s, absl::ToDoubleSeconds(timeout) * 0.9);
    EXPECT_LE(waited_s, absl::ToDoubleSeconds(timeout) + 5.0);
    EXPECT_TRUE(comm.broken());
    EXPECT_EQ(comm.comm(), nullptr);

    s = comm.AllReduceSum(buf.data(), count, stream);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("communicator is broken"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("timeout"));  // names the first error
    s = comm.Synchronize(stream);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    s = comm.Broadcast(buf.data(), count, 0, stream);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  });
}

}  // namespace
}  // namespace forge::cuda
