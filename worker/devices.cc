#include "worker/devices.h"

#include <sys/utsname.h>

#include <algorithm>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/status_macros.h"

#ifdef FORGE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace forge::worker {
namespace {

constexpr int kMaxDevices = 4096;  // RegisterWorker.devices limit
constexpr absl::string_view kForms =
    "accepted forms: cpu:N (N >= 1), cpu:all, cuda:all, cuda:I[,J...], kinds joined by '+' "
    "(e.g. --devices=cpu:4+cuda:all)";

absl::Status SpecError(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("--devices: ", what, "; ", kForms));
}

absl::Status ParseCpu(absl::string_view value, int hardware_threads, DeviceRequest* out) {
  if (value == "all") {
    out->cpu_slots = std::clamp(hardware_threads, 1, kMaxDevices);
    return absl::OkStatus();
  }
  int n = 0;
  if (!absl::SimpleAtoi(value, &n) || n < 1 || n > kMaxDevices) {
    return SpecError(
        absl::StrFormat("cpu:%s needs a slot count N in 1..%d or 'all'", value, kMaxDevices));
  }
  out->cpu_slots = n;
  return absl::OkStatus();
}

absl::Status ParseCuda(absl::string_view value, DeviceRequest* out) {
  if (value == "all") {
    out->cuda_all = true;
    return absl::OkStatus();
  }
  std::set<int> indices;
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    part = absl::StripAsciiWhitespace(part);
    int index = -1;
    if (!absl::SimpleAtoi(part, &index) || index < 0 || index >= kMaxDevices) {
      return SpecError(absl::StrCat("cuda:", value, " has '", part,
                                    "', which is not a device index (0, 1, ...) or 'all'"));
    }
    if (!indices.insert(index).second) {
      return SpecError(absl::StrCat("cuda:", value, " lists device ", index, " twice"));
    }
  }
  out->cuda_indices.assign(indices.begin(), indices.end());
  return absl::OkStatus();
}

std::string FormatGiB(int64_t bytes) {
  return absl::StrFormat("%.1f GiB", static_cast<double>(bytes) / (1024.0 * 1024 * 1024));
}

}  // namespace

absl::StatusOr<DeviceRequest> ParseDeviceSpec(absl::string_view spec, int hardware_threads) {
  spec = absl::StripAsciiWhitespace(spec);
  if (spec.empty()) return SpecError("the value is empty");
  DeviceRequest request;
  bool seen_cpu = false;
  bool seen_cuda = false;
  for (absl::string_view group : absl::StrSplit(spec, '+')) {
    group = absl::StripAsciiWhitespace(group);
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(group, absl::MaxSplits(':', 1));
    const absl::string_view kind = kv.first;
    const absl::string_view value = absl::StripAsciiWhitespace(kv.second);
    if (group.empty() || value.empty()) {
      return SpecError(absl::StrCat("'", group, "' is not KIND:COUNT"));
    }
    if (kind == "cpu") {
      if (seen_cpu) return SpecError("cpu is given twice; give each kind once");
      seen_cpu = true;
      RETURN_IF_ERROR(ParseCpu(value, hardware_threads, &request));
    } else if (kind == "cuda") {
      if (seen_cuda) return SpecError("cuda is given twice; give each kind once");
      seen_cuda = true;
      RETURN_IF_ERROR(ParseCuda(value, &request));
    } else {
      return SpecError(absl::StrCat("unknown device kind '", kind, "' in '", group,
                                    "' (kinds are cpu and cuda)"));
    }
  }
  return request;
}

absl::StatusOr<std::vector<CudaDeviceInfo>> QueryCudaDevices() {
#ifdef FORGE_HAVE_CUDA
  // Without a driver cudaGetDeviceCount fails with error 35 and leaves `count` unwritten.
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return absl::UnavailableError(absl::StrFormat("cudaGetDeviceCount: %s (%s, error %d) at %s:%d",
                                                  cudaGetErrorString(err), cudaGetErrorName(err),
                                                  static_cast<int>(err), __FILE__, __LINE__));
  }
  std::vector<CudaDeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, i);
    if (err != cudaSuccess) {
      return absl::UnavailableError(absl::StrFormat(
          "cudaGetDeviceProperties(%d): %s (%s, error %d) at %s:%d", i, cudaGetErrorString(err),
          cudaGetErrorName(err), static_cast<int>(err), __FILE__, __LINE__));
    }
    devices.push_back({prop.name, static_cast<int64_t>(prop.totalGlobalMem)});
  }
  return devices;
#else
  return absl::UnimplementedError("this forge-worker was built without CUDA (FORGE_WITH_CUDA=OFF)");
#endif
}

std::string ParseCpuModelName(absl::string_view cpuinfo) {
  for (absl::string_view key : {"model name", "Model", "Hardware", "cpu model"}) {
    for (absl::string_view line : absl::StrSplit(cpuinfo, '\n')) {
      std::pair<absl::string_view, absl::string_view> kv =
          absl::StrSplit(line, absl::MaxSplits(':', 1));
      if (absl::StripAsciiWhitespace(kv.first) != key) continue;
      absl::string_view value = absl::StripAsciiWhitespace(kv.second);
      if (!value.empty()) return std::string(value);
    }
  }
  return "";
}

std::string CpuModelName() {
  absl::StatusOr<std::string> cpuinfo = ReadFile("/proc/cpuinfo");
  if (cpuinfo.ok()) {
    std::string name = ParseCpuModelName(*cpuinfo);
    if (!name.empty()) return name;
  }
  struct utsname uts {};
  if (uname(&uts) == 0) return absl::StrCat(uts.machine, " core");
  return "cpu core";
}

absl::StatusOr<std::vector<forge::v1::Device>> BuildDevices(
    const DeviceRequest& request, absl::string_view cpu_name,
    const absl::StatusOr<std::vector<CudaDeviceInfo>>& cuda) {
  std::vector<forge::v1::Device> devices;
  for (int i = 0; i < request.cpu_slots; ++i) {
    forge::v1::Device& d = devices.emplace_back();
    d.set_id(absl::StrCat("cpu:", i));
    d.set_kind(forge::v1::DEVICE_KIND_CPU);
    d.set_name(std::string(cpu_name));
    d.set_memory_bytes(0);
  }
  if (request.wants_cuda()) {
    std::vector<CudaDeviceInfo> found;
    if (cuda.ok()) {
      found = *cuda;
    } else {
      FORGE_LOG(INFO) << "no CUDA device: " << cuda.status().message();
    }
    std::vector<int> indices = request.cuda_indices;
    if (request.cuda_all) {
      indices.clear();
      for (int i = 0; i < static_cast<int>(found.size()); ++i) indices.push_back(i);
    }
    for (int index : indices) {
      if (index >= static_cast<int>(found.size())) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "--devices: cuda:%d does not exist: this machine has %d CUDA device(s)%s; list "
            "existing indices or use cuda:all",
            index, found.size(), cuda.ok() ? "" : " (the CUDA query failed; see the log)"));
      }
      forge::v1::Device& d = devices.emplace_back();
      d.set_id(absl::StrCat("cuda:", index));
      d.set_kind(forge::v1::DEVICE_KIND_CUDA);
      d.set_name(found[index].name);
      d.set_memory_bytes(found[index].memory_bytes);
    }
  }
  if (devices.empty()) {
    return absl::InvalidArgumentError(
        "--devices: no device to offer (cuda:all found no CUDA device); add CPU slots, e.g. "
        "--devices=cpu:4 or --devices=cpu:4+cuda:all");
  }
  if (devices.size() > kMaxDevices) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--devices: %d devices is more than the %d a worker may offer",
                        devices.size(), kMaxDevices));
  }
  return devices;
}

absl::StatusOr<std::vector<forge::v1::Device>> DiscoverDevices(const DeviceRequest& request) {
  absl::StatusOr<std::vector<CudaDeviceInfo>> cuda = std::vector<CudaDeviceInfo>{};
  if (request.wants_cuda()) cuda = QueryCudaDevices();
  return BuildDevices(request, CpuModelName(), cuda);
}

std::string DescribeDevices(const std::vector<forge::v1::Device>& devices) {
  std::vector<std::string> parts;
  int cpu_count = 0;
  std::string cpu_name;
  for (const forge::v1::Device& d : devices) {
    if (d.kind() == forge::v1::DEVICE_KIND_CPU) {
      ++cpu_count;
      cpu_name = d.name();
    }
  }
  if (cpu_count == 1) parts.push_back(absl::StrCat("cpu:0 (", cpu_name, ")"));
  if (cpu_count > 1) {
    parts.push_back(absl::StrCat("cpu:0..cpu:", cpu_count - 1, " (", cpu_name, ")"));
  }
  for (const forge::v1::Device& d : devices) {
    if (d.kind() != forge::v1::DEVICE_KIND_CUDA) continue;
    parts.push_back(absl::StrCat(d.id(), " (", d.name(), ", ", FormatGiB(d.memory_bytes()), ")"));
  }
  return parts.empty() ? "none" : absl::StrJoin(parts, ", ");
}

}  // namespace forge::worker
