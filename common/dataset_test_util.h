// For tests: prepares a dataset from texts in memory, one document each, in order (the JSON
// lines input is written beside `out_dir` as `out_dir`.jsonl). Replaces what was there.
#ifndef FORGE_COMMON_DATASET_TEST_UTIL_H_
#define FORGE_COMMON_DATASET_TEST_UTIL_H_

#include <fstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dataset.h"
#include "common/file_util.h"
#include "nlohmann/json.hpp"

namespace forge {

inline absl::StatusOr<PrepareSummary> PrepareTexts(const std::string& name,
                                                   const std::vector<std::string>& texts,
                                                   const std::string& out_dir,
                                                   double heldout_fraction) {
  const std::string input = out_dir + ".jsonl";
  if (absl::Status s = MakeDirs(out_dir); !s.ok()) return s;
  {
    std::ofstream out(input, std::ios::trunc);
    for (const std::string& t : texts) out << nlohmann::json{{"text", t}}.dump() << "\n";
  }
  PrepareOptions po;
  po.inputs = {input};
  po.name = name;
  po.out_dir = out_dir;
  po.heldout_fraction = heldout_fraction;
  po.overwrite = true;
  return PrepareDataset(po);
}

}  // namespace forge

#endif  // FORGE_COMMON_DATASET_TEST_UTIL_H_
