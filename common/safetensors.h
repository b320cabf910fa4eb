// The safetensors file format (https://github.com/huggingface/safetensors), read and written
// exactly as the public format defines it, so our checkpoints load in other tools and theirs
// load here:
//
//   u64 little-endian N                       header length in bytes
//   N bytes of JSON                           {"__metadata__": {"k": "v", ...},
//                                              "name": {"dtype": "F32", "shape": [2, 3],
//                                                       "data_offsets": [begin, end]}, ...}
//                                             our writer pads it with spaces to a multiple of
//                                             8 so the data starts 8-byte aligned
//   the data buffer                           tensor bytes, little-endian, row-major;
//                                             data_offsets are relative to its start
//
// Tensors are contiguous, never overlap and cover the data buffer exactly; the file ends with
// the buffer. The reader checks all of that and refuses anything else with DATA_LOSS naming
// the file and, where there is one, the tensor. It accepts an unpadded header (the format
// does not require padding) and ignores unknown keys in a tensor's entry, as the reference
// implementation does.
//
// Thread safety: the functions are thread-safe; a SafetensorsFile is immutable after Read.
// Requires a little-endian host (checked at compile time).
#ifndef FORGE_COMMON_SAFETENSORS_H_
#define FORGE_COMMON_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace forge {

// The format's element types. Names as in the file: "BOOL", "U8", "I8", "F8_E5M2",
// "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64".
enum class SafetensorsDtype {
  kBool,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

// The dtype's name in the file ("F32").
absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype);
// The dtype named `name`; INVALID_ARGUMENT listing the known names when there is none.
absl::StatusOr<SafetensorsDtype> SafetensorsDtypeFromName(absl::string_view name);
// Bytes per element (1, 2, 4 or 8).
int SafetensorsDtypeSize(SafetensorsDtype dtype);

// Metadata: the header's "__metadata__" object (string to string), sorted by key.
using SafetensorsMetadata = std::map<std::string, std::string>;

// One tensor to write. `data` is not owned and must stay valid during the write.
struct SafetensorsTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;  // empty = a scalar (one element)
  absl::string_view data;      // element bytes, little-endian, row-major
};

// One tensor as the header describes it.
struct SafetensorsEntry {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // data_offsets, relative to the start of the data buffer
  uint64_t end = 0;
};

// A validated header: entries in data order (ascending offsets) and the metadata.
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;
  SafetensorsMetadata metadata;
  uint64_t data_start = 0;  // file offset of the data buffer: 8 + N

  // The entry named `name`, or nullptr.
  const SafetensorsEntry* Find(absl::string_view name) const;
};

// The 8 + N header bytes (length prefix plus padded JSON) that WriteSafetensors writes for
// `tensors` and `metadata`: "__metadata__" first (left out when empty), then the tensors in
// the order given, laid out back to back in that order. INVALID_ARGUMENT when a name is empty,
// repeated or "__metadata__", a dimension is negative, the data size is not the shape's element
// count times the dtype size, or a string is not valid UTF-8.
absl::StatusOr<std::string> SerializeSafetensorsHeader(absl::Span<const SafetensorsTensor> tensors,
                                                       const SafetensorsMetadata& metadata);

// Writes `tensors` and `metadata` to `path` atomically and durably, streaming the tensor
// bytes (no copy of the whole file in memory): a temporary file beside `path` is written,
// fsync'ed, renamed over `path`, and the directory fsync'ed. Errors name the path; on error
// no file is left at `path` that was not there before and the temporary file is removed.
absl::Status WriteSafetensors(const std::string& path, absl::Span<const SafetensorsTensor> tensors,
                              const SafetensorsMetadata& metadata);

// Validates a header against the size of the whole file. `bytes` holds at least the first
// min(file_size, 8 + N) bytes of the file (more is fine); `path` only names the file in
// errors. DATA_LOSS for every violation of the format.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view bytes,
                                                         uint64_t file_size,
                                                         absl::string_view path);

// Reads and validates only the header of the file at `path` (cheap for large files).
absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path);

// A whole file in memory, validated. Move-only; entries' bytes stay valid across moves.
class SafetensorsFile {
 public:
  // Validates `contents`, the full bytes of the file at `path` (named in errors).
  static absl::StatusOr<SafetensorsFile> Parse(std::string contents, absl::string_view path);

  const SafetensorsHeader& header() const { return header_; }
  const std::vector<SafetensorsEntry>& entries() const { return header_.entries; }
  const SafetensorsMetadata& metadata() const { return header_.metadata; }
  // The element bytes of `entry`. REQUIRES: `entry` is one of entries().
  absl::string_view Data(const SafetensorsEntry& entry) const;

 private:
  SafetensorsFile(std::unique_ptr<const std::string> contents, SafetensorsHeader header)
      : contents_(std::move(contents)), header_(std::move(header)) {}

  std::unique_ptr<const std::string> contents_;  // heap-held so Data() views survive moves
  SafetensorsHeader header_;
};

// ReadFile(path) then SafetensorsFile::Parse.
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);

}  // namespace forge

#endif  // FORGE_COMMON_SAFETENSORS_H_
