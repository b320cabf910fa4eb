#include "worker/devices.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge::worker {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

DeviceRequest Parse(absl::string_view spec, int hardware_threads = 8) {
  absl::StatusOr<DeviceRequest> r = ParseDeviceSpec(spec, hardware_threads);
  EXPECT_TRUE(r.ok()) << spec << ": " << r.status();
  return r.ok() ? *r : DeviceRequest{};
}

TEST(ParseDeviceSpecTest, CpuCount) {
  DeviceRequest r = Parse("cpu:4");
  EXPECT_EQ(r.cpu_slots, 4);
  EXPECT_FALSE(r.wants_cuda());
}

TEST(ParseDeviceSpecTest, CpuAllUsesHardwareThreads) {
  EXPECT_EQ(Parse("cpu:all", 12).cpu_slots, 12);
  // An unknown hardware concurrency (0) still gives one slot.
  EXPECT_EQ(Parse("cpu:all", 0).cpu_slots, 1);
}

TEST(ParseDeviceSpecTest, CudaAll) {
  DeviceRequest r = Parse("cuda:all");
  EXPECT_EQ(r.cpu_slots, 0);
  EXPECT_TRUE(r.cuda_all);
  EXPECT_TRUE(r.wants_cuda());
}

TEST(ParseDeviceSpecTest, CudaIndicesAreSorted) {
  DeviceRequest r = Parse("cuda:2,0");
  EXPECT_FALSE(r.cuda_all);
  EXPECT_THAT(r.cuda_indices, ElementsAre(0, 2));
}

TEST(ParseDeviceSpecTest, CombinedKindsInEitherOrder) {
  DeviceRequest a = Parse("cpu:4+cuda:all");
  EXPECT_EQ(a.cpu_slots, 4);
  EXPECT_TRUE(a.cuda_all);
  DeviceRequest b = Parse(" cuda:0,1 + cpu:2 ");
  EXPECT_EQ(b.cpu_slots, 2);
  EXPECT_THAT(b.cuda_indices, ElementsAre(0, 1));
}

void ExpectError(absl::string_view spec, absl::string_view fragment) {
  absl::StatusOr<DeviceRequest> r = ParseDeviceSpec(spec, 8);
  ASSERT_FALSE(r.ok()) << spec;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << spec;
  EXPECT_THAT(r.status().message(), HasSubstr("--devices: ")) << spec;
  EXPECT_THAT(r.status().message(), HasSubstr(fragment)) << spec;
  // Every error shows the accepted forms.
  EXPECT_THAT(r.status().message(), HasSubstr("cpu:N (N >= 1), cpu:all, cuda:all")) << spec;
}

TEST(ParseDeviceSpecTest, ErrorsNameTheFlagAndTheProblem) {
  ExpectError("", "the value is empty");
  ExpectError("cpu:0", "cpu:0 needs a slot count N in 1..4096 or 'all'");
  ExpectError("cpu:-2", "cpu:-2 needs a slot count");
  ExpectError("cpu:four", "cpu:four needs a slot count");
  ExpectError("cpu:4:5", "cpu:4:5 needs a slot count");
  ExpectError("cpu:5000", "cpu:5000 needs a slot count");
  ExpectError("cpu", "'cpu' is not KIND:COUNT");
  ExpectError("cuda:", "'cuda:' is not KIND:COUNT");
  ExpectError("gpu:2", "unknown device kind 'gpu'");
  ExpectError("cpu:2,cuda:all", "cpu:2,cuda:all needs a slot count");
  ExpectError("cpu:2+cpu:3", "cpu is given twice");
  ExpectError("cuda:0+cuda:1", "cuda is given twice");
  ExpectError("cuda:0,x", "has 'x', which is not a device index");
  ExpectError("cuda:1,1", "lists device 1 twice");
  ExpectError("cpu:2+", "'' is not KIND:COUNT");
}

TEST(ParseCpuModelNameTest, X86AndArm) {
  EXPECT_EQ(ParseCpuModelName("processor\t: 0\nmodel name\t: AMD EPYC 7R13 Processor\n"),
            "AMD EPYC 7R13 Processor");
  EXPECT_EQ(ParseCpuModelName("processor : 0\nCPU part : 0xd0c\nModel : Raspberry Pi 4\n"),
            "Raspberry Pi 4");
  EXPECT_EQ(ParseCpuModelName("processor : 0\n"), "");
}

TEST(CpuModelNameTest, NeverEmpty) { EXPECT_FALSE(CpuModelName().empty()); }

std::vector<std::string> Ids(const std::vector<forge::v1::Device>& devices) {
  std::vector<std::string> ids;
  for (const forge::v1::Device& d : devices) ids.push_back(d.id());
  return ids;
}

TEST(BuildDevicesTest, CpuSlots) {
  absl::StatusOr<std::vector<forge::v1::Device>> d =
      BuildDevices(Parse("cpu:3"), "Test CPU", std::vector<CudaDeviceInfo>{});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(Ids(*d), ElementsAre("cpu:0", "cpu:1", "cpu:2"));
  for (const forge::v1::Device& dev : *d) {
    EXPECT_EQ(dev.kind(), forge::v1::DEVICE_KIND_CPU);
    EXPECT_EQ(dev.name(), "Test CPU");
    EXPECT_EQ(dev.memory_bytes(), 0);
  }
  EXPECT_EQ(DescribeDevices(*d), "cpu:0..cpu:2 (Test CPU)");
}

// What the CUDA runtime says on a machine with the toolkit but no driver (error 35).
absl::StatusOr<std::vector<CudaDeviceInfo>> NoDriver() {
  return absl::UnavailableError(
      "cudaGetDeviceCount: CUDA driver version is insufficient for CUDA runtime version "
      "(cudaErrorInsufficientDriver, error 35)");
}

std::vector<CudaDeviceInfo> TwoGpus() {
  return {{"NVIDIA H100 80GB HBM3", 85'899'345'920}, {"NVIDIA H100 80GB HBM3", 85'899'345'920}};
}

TEST(BuildDevicesTest, CudaAllWithoutDriverGivesNoCudaDevice) {
  absl::StatusOr<std::vector<forge::v1::Device>> d =
      BuildDevices(Parse("cpu:1+cuda:all"), "Test CPU", NoDriver());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(Ids(*d), ElementsAre("cpu:0"));
}

TEST(BuildDevicesTest, OnlyCudaAllWithoutDriverIsAnErrorThatSuggestsCpu) {
  absl::StatusOr<std::vector<forge::v1::Device>> d =
      BuildDevices(Parse("cuda:all"), "Test CPU", NoDriver());
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(d.status().message(), HasSubstr("--devices=cpu:4"));
}

TEST(BuildDevicesTest, CudaAllWithTwoGpus) {
  absl::StatusOr<std::vector<forge::v1::Device>> d =
      BuildDevices(Parse("cuda:all"), "Test CPU", TwoGpus());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(Ids(*d), ElementsAre("cuda:0", "cuda:1"));
  for (const forge::v1::Device& dev : *d) {
    EXPECT_EQ(dev.kind(), forge::v1::DEVICE_KIND_CUDA);
    EXPECT_EQ(dev.name(), "NVIDIA H100 80GB HBM3");
    EXPECT_EQ(dev.memory_bytes(), 85'899'345'920);
  }
  EXPECT_EQ(DescribeDevices(*d),
            "cuda:0 (NVIDIA H100 80GB HBM3, 80.0 GiB), cuda:1 (NVIDIA H100 80GB HBM3, 80.0 GiB)");
}

TEST(BuildDevicesTest, ExplicitIndexPicksThatGpu) {
  std::vector<CudaDeviceInfo> gpus = TwoGpus();
  gpus[1].name = "Second";
  absl::StatusOr<std::vector<forge::v1::Device>> d =
      BuildDevices(Parse("cpu:1+cuda:1"), "Test CPU", gpus);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(Ids(*d), ElementsAre("cpu:0", "cuda:1"));
  EXPECT_EQ((*d)[1].name(), "Second");
}

TEST(BuildDevicesTest, MissingExplicitIndexIsAnError) {
  absl::StatusOr<std::vector<forge::v1::Device>> d =
      BuildDevices(Parse("cuda:0,3"), "Test CPU", TwoGpus());
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(d.status().message(), HasSubstr("cuda:3 does not exist"));
  EXPECT_THAT(d.status().message(), HasSubstr("2 CUDA device(s)"));

  absl::StatusOr<std::vector<forge::v1::Device>> none =
      BuildDevices(Parse("cpu:1+cuda:0"), "Test CPU", NoDriver());
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("the CUDA query failed"));
}

TEST(BuildDevicesTest, CudaQueryIgnoredWhenNotAsked) {
  absl::StatusOr<std::vector<forge::v1::Device>> d =
      BuildDevices(Parse("cpu:2"), "Test CPU", TwoGpus());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(Ids(*d), ElementsAre("cpu:0", "cpu:1"));
}

// The real query on this machine: whatever it finds, cuda:all never fails when CPU slots are
// given, and without CUDA support (or a driver) it reports zero CUDA devices.
TEST(DiscoverDevicesTest, RealQueryIsClean) {
  absl::StatusOr<std::vector<forge::v1::Device>> d = DiscoverDevices(Parse("cpu:1+cuda:all"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)[0].id(), "cpu:0");
  absl::StatusOr<std::vector<CudaDeviceInfo>> cuda = QueryCudaDevices();
  EXPECT_EQ(d->size(), 1 + (cuda.ok() ? cuda->size() : 0));
#ifndef FORGE_HAVE_CUDA
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kUnimplemented);
#endif
}

}  // namespace
}  // namespace forge::worker
