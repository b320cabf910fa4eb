// The GPU's peaks by device-name substring, first match wins (the vendors' datasheets):
// dense bf16 TFLOP/s and memory GB/s; zeros when unknown. For the GPU benchmarks' tables and
// the MFU a GPU rank reports with its progress.
#ifndef FORGE_WORKER_CUDA_DEVICE_PEAKS_H_
#define FORGE_WORKER_CUDA_DEVICE_PEAKS_H_

#include <string>

#include "absl/strings/match.h"

namespace forge::cuda {

struct Peaks {
  double tflops = 0, gbs = 0;
};

inline Peaks DevicePeaks(const std::string& name) {
  static constexpr struct {
    const char* a;
    const char* b;  // also required, or ""
    Peaks peaks;
  } kTable[] = {{"H200", "", {989, 4800}},     {"H100", "PCIe", {756, 2000}},
                {"H100", "NVL", {835, 3900}},  {"H100", "", {989, 3350}},
                {"A100", "80GB", {312, 2039}}, {"A100", "", {312, 1555}}};
  for (const auto& row : kTable) {
    if (absl::StrContains(name, row.a) && absl::StrContains(name, row.b)) return row.peaks;
  }
  return {};
}

}  // namespace forge::cuda

#endif  // FORGE_WORKER_CUDA_DEVICE_PEAKS_H_
