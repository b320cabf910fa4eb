#include "worker/engine/communicator.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gloo/rendezvous/file_store.h"
#include "gtest/gtest.h"

namespace forge {
namespace {

class CommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "forge_comm_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    store_ = std::make_shared<gloo::rendezvous::FileStore>(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  CommunicatorOptions Options(int rank, int world, absl::Duration timeout = absl::Seconds(20)) {
    CommunicatorOptions o;
    o.rank = rank;
    o.world_size = world;
    o.store = store_;
    o.prefix = absl::StrCat("test-", world, "-", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    o.timeout = timeout;
    return o;
  }

  // Runs body(rank, comm) on `world` threads, each with its own communicator.
  void RunRanks(int world, const std::function<void(int, Communicator&)>& body,
                AllReduceAlgorithm algorithm = AllReduceAlgorithm::kAuto) {
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) {
      threads.emplace_back([&, r] {
        CommunicatorOptions o = Options(r, world);
        o.algorithm = algorithm;
        auto comm = Communicator::Create(o);
        ASSERT_TRUE(comm.ok()) << comm.status();
        body(r, **comm);
      });
    }
    for (auto& t : threads) t.join();
  }

  std::string dir_;
  std::shared_ptr<gloo::rendezvous::FileStore> store_;
};

float Value(int rank, size_t i) { return static_cast<float>((rank + 1) * (i % 7 + 1)); }

// Checks the sum of Value over all ranks, exactly (small integers are exact in float).
void AllReduceAndCheck(int rank, int world, Communicator& comm, size_t count) {
  std::vector<float> data(count);
  for (size_t i = 0; i < count; ++i) data[i] = Value(rank, i);
  { absl::Status st = comm.AllReduceSum(data.data(), count); ASSERT_TRUE(st.ok()) << st; }
  const float ranks_sum = world * (world + 1) / 2.0f;
  size_t wrong = 0;
  for (size_t i = 0; i < count; ++i) wrong += data[i] != ranks_sum * (i % 7 + 1);
  EXPECT_EQ(wrong, 0u) << "rank " << rank << " count " << count;
}

const std::vector<size_t> kSizes = {1, 3, 255, 1000, 1001, 65537, 1 << 20};

TEST_F(CommunicatorTest, AllReduceTwoRanks) {
  RunRanks(2, [](int r, Communicator& c) {
    for (size_t n : kSizes) AllReduceAndCheck(r, 2, c, n);
  });
}

TEST_F(CommunicatorTest, CommunicatorBufferIsReducedInPlaceAndReused) {
  RunRanks(2, [](int r, Communicator& c) {
    for (int round = 0; round < 3; ++round) {
      for (size_t count : {size_t{5}, size_t{3} << 20}) {  // halving-doubling and ring
        absl::StatusOr<float*> buf = c.AllReduceBuffer(count);
        ASSERT_TRUE(buf.ok()) << buf.status();
        for (size_t i = 0; i < count; ++i) (*buf)[i] = static_cast<float>((r + 1) * (i % 5 + round));
        ASSERT_TRUE(c.AllReduceSum(*buf, count).ok());
        for (size_t i = 0; i < count; i += 997) {
          ASSERT_EQ((*buf)[i], 3.0f * (i % 5 + round)) << "count " << count << " i " << i;
        }
        absl::StatusOr<float*> again = c.AllReduceBuffer(count);
        ASSERT_TRUE(again.ok());
        EXPECT_EQ(*again, *buf);  // cached: the same buffer every time
      }
    }
  });
}

TEST_F(CommunicatorTest, AllReduceThreeRanks) {
  RunRanks(3, [](int r, Communicator& c) {
    for (size_t n : kSizes) AllReduceAndCheck(r, 3, c, n);
  });
}

TEST_F(CommunicatorTest, EveryAlgorithmIsExact) {
  for (auto algo : {AllReduceAlgorithm::kRingChunked, AllReduceAlgorithm::kHalvingDoubling,
                    AllReduceAlgorithm::kBcube}) {
    const std::string sub = dir_ + "/a" + std::to_string(static_cast<int>(algo));
    std::filesystem::create_directories(sub);
    store_ = std::make_shared<gloo::rendezvous::FileStore>(sub);
    RunRanks(2, [](int r, Communicator& c) {
      for (size_t n : {size_t{1}, size_t{1001}, size_t{100003}}) AllReduceAndCheck(r, 2, c, n);
    }, algo);
  }
}

TEST_F(CommunicatorTest, RepeatedCallsWithNewBuffersStayCorrect) {
  RunRanks(3, [](int r, Communicator& c) {
    for (int iter = 0; iter < 20; ++iter) {
      // Alternate sizes and fresh allocations so both cache hits and misses happen.
      AllReduceAndCheck(r, 3, c, iter % 2 ? 4096 : 300000);
      ASSERT_TRUE(c.Barrier().ok());
    }
  });
}

// Rank 0 reuses one large buffer while the others allocate fresh ones each time: pointers
// differ between ranks and calls, and the results must still be exact (this once broke a
// per-pointer instance cache).
TEST_F(CommunicatorTest, InPlaceCacheMismatchAcrossRanks) {
  RunRanks(3, [](int r, Communicator& c) {
    const size_t n = (2 << 20) / sizeof(float) + 5;
    std::vector<float> kept(n);
    for (int iter = 0; iter < 6; ++iter) {
      std::vector<std::vector<float>> keep_alive(iter + 1, std::vector<float>(r == 0 ? 1 : n));
      std::vector<float>& data = r == 0 ? kept : keep_alive.back();
      for (size_t i = 0; i < n; ++i) data[i] = Value(r, i);
      { absl::Status st = c.AllReduceSum(data.data(), n); ASSERT_TRUE(st.ok()) << st; }
      size_t wrong = 0;
      for (size_t i = 0; i < n; ++i) wrong += data[i] != 6.0f * (i % 7 + 1);
      EXPECT_EQ(wrong, 0u) << "rank " << r << " iter " << iter;
    }
  });
}

TEST_F(CommunicatorTest, BroadcastFromEveryRoot) {
  RunRanks(3, [](int r, Communicator& c) {
    for (int root = 0; root < 3; ++root) {
      for (size_t n : {size_t{1}, size_t{1000}, size_t{1} << 20}) {
        std::vector<float> data(n, r == root ? 0.0f : -1.0f);
        if (r == root) {
          for (size_t i = 0; i < n; ++i) data[i] = static_cast<float>(root * 1000 + i % 997);
        }
        { absl::Status st = c.Broadcast(data.data(), n, root); ASSERT_TRUE(st.ok()) << st; }
        size_t wrong = 0;
        for (size_t i = 0; i < n; ++i) wrong += data[i] != static_cast<float>(root * 1000 + i % 997);
        EXPECT_EQ(wrong, 0u) << "rank " << r << " root " << root << " n " << n;
      }
    }
    EXPECT_FALSE(c.Broadcast(nullptr, 1, 5).ok());
  });
}

// The last collective of a run, then each rank destroys its communicator at once. Gloo fails a
// wait on a pair whose peer has closed even when the awaited data had already arrived, so
// without the shutdown barrier the rank that finishes last often fails with "Connection closed
// by peer" when the data and the peer's FIN arrive back to back. Both orders are tried: the
// receiver already waiting when the root sends (the racy one) and the receiver arriving late.
TEST_F(CommunicatorTest, PeerThatFinishesFirstDoesNotBreakSlowPeer) {
  int round = 0;
  for (int late_rank : {0, 1}) {
    for (size_t n : {size_t{1}, size_t{1000}, size_t{300000}}) {
      for (int rep = 0; rep < 5; ++rep) {
        const std::string sub = dir_ + "/r" + std::to_string(round++);
        std::filesystem::create_directories(sub);
        store_ = std::make_shared<gloo::rendezvous::FileStore>(sub);
        RunRanks(2, [n, late_rank](int r, Communicator& c) {
          std::vector<float> data(n, r == 0 ? 3.0f : 0.0f);
          if (r == late_rank) std::this_thread::sleep_for(std::chrono::milliseconds(50));
          absl::Status st = c.Broadcast(data.data(), n, 0);
          ASSERT_TRUE(st.ok()) << "rank " << r << " n " << n << ": " << st;
          EXPECT_EQ(data[n - 1], 3.0f);
          // Returning destroys this rank's communicator at once.
        });
      }
    }
  }
}

TEST_F(CommunicatorTest, WorldSizeOneIsNoOp) {
  CommunicatorOptions o;
  o.rank = 0;
  o.world_size = 1;  // no store needed
  auto comm = Communicator::Create(o);
  ASSERT_TRUE(comm.ok()) << comm.status();
  std::vector<float> data = {1, 2, 3};
  ASSERT_TRUE((*comm)->AllReduceSum(data.data(), 3).ok());
  ASSERT_TRUE((*comm)->Broadcast(data.data(), 3, 0).ok());
  ASSERT_TRUE((*comm)->Barrier().ok());
  EXPECT_EQ(data, (std::vector<float>{1, 2, 3}));
}

TEST_F(CommunicatorTest, InvalidOptionsAreRejected) {
  EXPECT_FALSE(Communicator::Create(Options(2, 2)).ok());
  CommunicatorOptions o = Options(0, 2);
  o.store = nullptr;
  EXPECT_FALSE(Communicator::Create(o).ok());
}

TEST_F(CommunicatorTest, MissingRankFailsCreateWithinTimeout) {
  const auto start = std::chrono::steady_clock::now();
  auto comm = Communicator::Create(Options(0, 2, absl::Seconds(2)));
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(comm.ok());
  EXPECT_LT(secs, 10.0);
  EXPECT_GE(secs, 1.5);
  const std::string msg(comm.status().message());
  EXPECT_NE(msg.find("rendezvous"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 0"), std::string::npos) << msg;
}

TEST_F(CommunicatorTest, VanishedPeerFailsCollectiveWithinTimeout) {
  std::atomic<bool> done{false};
  std::thread peer([&] {
    auto comm = Communicator::Create(Options(1, 2, absl::Seconds(2)));
    ASSERT_TRUE(comm.ok()) << comm.status();
    while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    // Never joins the all-reduce; keeps its sockets open so rank 0 must rely on the timeout.
  });
  auto comm = Communicator::Create(Options(0, 2, absl::Seconds(2)));
  ASSERT_TRUE(comm.ok()) << comm.status();
  std::vector<float> data(1000, 1.0f);
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = (*comm)->AllReduceSum(data.data(), data.size());
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  done = true;
  peer.join();
  ASSERT_FALSE(s.ok());
  EXPECT_LT(secs, 10.0);
  EXPECT_EQ((*comm)->AllReduceSum(data.data(), data.size()).code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace forge
