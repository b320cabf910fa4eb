// The devices a worker offers: parsing the --devices flag and discovering the hardware.
//
// --devices syntax: one or more groups joined by '+', at most one group per kind:
//   cpu:N        N CPU slots "cpu:0".."cpu:N-1" (N >= 1)
//   cpu:all      one CPU slot per hardware thread (std::thread::hardware_concurrency)
//   cuda:all     every CUDA device found (zero is fine: a machine without a GPU or driver)
//   cuda:I,J,..  the listed CUDA device indices; each one must exist
// Examples: "cpu:4", "cuda:all", "cuda:0,1", "cpu:2+cuda:all".
// Commas only ever separate CUDA indices; '+' separates kinds.
//
// All functions are thread-compatible (no shared state).
#ifndef FORGE_WORKER_DEVICES_H_
#define FORGE_WORKER_DEVICES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "forge/v1/coordinator.pb.h"

namespace forge::worker {

// A parsed --devices value.
struct DeviceRequest {
  int cpu_slots = 0;              // 0 = no CPU slots
  bool cuda_all = false;          // every CUDA device found
  std::vector<int> cuda_indices;  // explicit indices, sorted and unique (when !cuda_all)

  bool wants_cuda() const { return cuda_all || !cuda_indices.empty(); }
};

// Parses a --devices value. `hardware_threads` resolves "cpu:all" (values < 1 count as 1).
// INVALID_ARGUMENT naming the flag, the offending part and the accepted forms.
absl::StatusOr<DeviceRequest> ParseDeviceSpec(absl::string_view spec, int hardware_threads);

// One CUDA device as the runtime reports it.
struct CudaDeviceInfo {
  std::string name;
  int64_t memory_bytes = 0;
};

// Queries the CUDA runtime (cudaGetDeviceCount / cudaGetDeviceProperties). Any CUDA error
// (error 35 without a driver, 100 without a device) comes back as UNAVAILABLE with the CUDA
// error name and file:line. Built without CUDA: UNIMPLEMENTED.
absl::StatusOr<std::vector<CudaDeviceInfo>> QueryCudaDevices();

// The CPU model from /proc/cpuinfo text ("model name" on x86, "Model"/"Hardware" elsewhere);
// empty when none is found.
std::string ParseCpuModelName(absl::string_view cpuinfo);

// The CPU model of this machine, or "<arch> core" when /proc/cpuinfo names none.
std::string CpuModelName();

// Builds the device list for `request` from a CPU name and the result of a CUDA query (pass
// whatever QueryCudaDevices returned; it is only consulted when `request` wants CUDA). A
// failed query means "no CUDA device" and is logged once at INFO. An explicit CUDA index that
// does not exist is INVALID_ARGUMENT; so is a request that yields no device at all.
absl::StatusOr<std::vector<forge::v1::Device>> BuildDevices(
    const DeviceRequest& request, absl::string_view cpu_name,
    const absl::StatusOr<std::vector<CudaDeviceInfo>>& cuda);

// BuildDevices with this machine's CPU name and a real CUDA query (made only when needed).
absl::StatusOr<std::vector<forge::v1::Device>> DiscoverDevices(const DeviceRequest& request);

// "cpu:0..cpu:3 (AMD EPYC), cuda:0 (NVIDIA H100 80GB HBM3, 79.6 GiB)" for one log line.
std::string DescribeDevices(const std::vector<forge::v1::Device>& devices);

}  // namespace forge::worker

#endif  // FORGE_WORKER_DEVICES_H_
