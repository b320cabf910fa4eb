#include "common/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace forge {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this host is not");

namespace {

// The reference implementation's limit; a larger length is corruption, not a real header.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr absl::string_view kMetadataKey = "__metadata__";
// Tensor sizes past this are refused as overflow (no file is that large).
constexpr uint64_t kMaxBytes = uint64_t{1} << 63;

struct DtypeInfo {
  SafetensorsDtype dtype;
  absl::string_view name;
  int size;
};

constexpr DtypeInfo kDtypes[] = {
    {SafetensorsDtype::kBool, "BOOL", 1},      {SafetensorsDtype::kU8, "U8", 1},
    {SafetensorsDtype::kI8, "I8", 1},          {SafetensorsDtype::kF8E5M2, "F8_E5M2", 1},
    {SafetensorsDtype::kF8E4M3, "F8_E4M3", 1}, {SafetensorsDtype::kI16, "I16", 2},
    {SafetensorsDtype::kU16, "U16", 2},        {SafetensorsDtype::kF16, "F16", 2},
    {SafetensorsDtype::kBF16, "BF16", 2},      {SafetensorsDtype::kI32, "I32", 4},
    {SafetensorsDtype::kU32, "U32", 4},        {SafetensorsDtype::kF32, "F32", 4},
    {SafetensorsDtype::kF64, "F64", 8},        {SafetensorsDtype::kI64, "I64", 8},
    {SafetensorsDtype::kU64, "U64", 8},
};

const DtypeInfo& Info(SafetensorsDtype dtype) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.dtype == dtype) return info;
  }
  return kDtypes[0];  // unreachable for a valid enum value
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Element count times `elem_size`, or nullopt on a negative dimension or a size past `limit`.
std::optional<uint64_t> ByteSize(absl::Span<const int64_t> shape, int elem_size, uint64_t limit) {
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d == 0) return 0;
  }
  unsigned __int128 bytes = static_cast<unsigned>(elem_size);
  for (int64_t d : shape) {
    bytes *= static_cast<uint64_t>(d);
    if (bytes > limit) return std::nullopt;
  }
  return static_cast<uint64_t>(bytes);
}

absl::Status Corrupt(absl::string_view path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(
      "safetensors file ", path, ": ", what,
      "; the file is corrupt or not safetensors: rewrite it or restore it from a good copy"));
}

absl::Status ErrnoError(absl::string_view what, const std::string& path, int err) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(err)));
}

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// Reads exactly `n` bytes at `offset` (fewer only at end of file).
absl::StatusOr<std::string> ReadAt(int fd, uint64_t offset, uint64_t n, const std::string& path) {
  std::string out(n, '\0');
  uint64_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, out.data() + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot read", path, errno);
    }
    if (r == 0) break;
    got += static_cast<uint64_t>(r);
  }
  out.resize(got);
  return out;
}

// Parses one tensor's entry; `name` and `path` are for errors.
absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& name, const nlohmann::json& j,
                                            uint64_t data_size, absl::string_view path) {
  auto bad = [&](absl::string_view what) {
    return Corrupt(path, absl::StrCat("tensor \"", name, "\": ", what));
  };
  if (!j.is_object()) return bad("entry is not a JSON object");
  SafetensorsEntry e;
  e.name = name;
  auto dtype = j.find("dtype");
  if (dtype == j.end() || !dtype->is_string()) return bad("\"dtype\" is missing or not a string");
  absl::StatusOr<SafetensorsDtype> dt =
      SafetensorsDtypeFromName(dtype->get_ref<const std::string&>());
  if (!dt.ok()) return bad(dt.status().message());
  e.dtype = *dt;
  auto shape = j.find("shape");
  if (shape == j.end() || !shape->is_array()) return bad("\"shape\" is missing or not an array");
  for (const nlohmann::json& d : *shape) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > std::numeric_limits<int64_t>::max()) {
      return bad(absl::StrCat("\"shape\" ", shape->dump(), " holds a value that is not a ",
                              "non-negative integer"));
    }
    e.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
  }
  auto offsets = j.find("data_offsets");
  if (offsets == j.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
    return bad("\"data_offsets\" is missing or not [begin, end] with non-negative integers");
  }
  e.begin = (*offsets)[0].get<uint64_t>();
  e.end = (*offsets)[1].get<uint64_t>();
  if (e.begin > e.end || e.end > data_size) {
    return bad(absl::StrCat("data_offsets [", e.begin, ", ", e.end,
                            "] are not an interval inside the ", data_size, "-byte data buffer"));
  }
  std::optional<uint64_t> want = ByteSize(e.shape, SafetensorsDtypeSize(e.dtype), kMaxBytes);
  if (!want.has_value() || *want != e.end - e.begin) {
    return bad(absl::StrCat("data_offsets [", e.begin, ", ", e.end, "] span ", e.end - e.begin,
                            " bytes but shape ", ShapeString(e.shape), " of ",
                            SafetensorsDtypeName(e.dtype), " needs ",
                            want.has_value() ? absl::StrCat(*want) : "more than 2^63"));
  }
  return e;
}

}  // namespace

absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype) { return Info(dtype).name; }

int SafetensorsDtypeSize(SafetensorsDtype dtype) { return Info(dtype).size; }

absl::StatusOr<SafetensorsDtype> SafetensorsDtypeFromName(absl::string_view name) {
  std::vector<absl::string_view> names;
  for (const DtypeInfo& info : kDtypes) {
    if (info.name == name) return info.dtype;
    names.push_back(info.name);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown safetensors dtype \"", name,
                                                 "\"; known dtypes: ", absl::StrJoin(names, ", ")));
}

const SafetensorsEntry* SafetensorsHeader::Find(absl::string_view name) const {
  for (const SafetensorsEntry& e : entries) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

absl::StatusOr<std::string> SerializeSafetensorsHeader(absl::Span<const SafetensorsTensor> tensors,
                                                       const SafetensorsMetadata& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const SafetensorsTensor& t : tensors) {
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: tensor \"", t.name, "\": ", what));
    };
    if (t.name.empty() || t.name == kMetadataKey) return bad("name is empty or reserved");
    if (!seen.insert(t.name).second) return bad("name appears twice");
    std::optional<uint64_t> want = ByteSize(t.shape, SafetensorsDtypeSize(t.dtype), kMaxBytes);
    if (!want.has_value()) return bad(absl::StrCat("bad shape ", ShapeString(t.shape)));
    if (*want != t.data.size()) {
      return bad(absl::StrCat("shape ", ShapeString(t.shape), " of ", SafetensorsDtypeName(t.dtype),
                              " needs ", *want, " bytes but the data has ", t.data.size()));
    }
    header[t.name] = {{"dtype", std::string(SafetensorsDtypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + *want}}};
    offset += *want;
  }
  std::string json;
  try {
    json = header.dump();
  } catch (const nlohmann::json::exception& e) {  // invalid UTF-8 in a name or metadata
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors: a tensor name or metadata string is not valid UTF-8: ", e.what()));
  }
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);  // little-endian host (static_assert above)
  out += json;
  return out;
}

absl::Status WriteSafetensors(const std::string& path, absl::Span<const SafetensorsTensor> tensors,
                              const SafetensorsMetadata& metadata) {
  absl::StatusOr<std::string> header = SerializeSafetensorsHeader(tensors, metadata);
  if (!header.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", header.status().message()));
  }
  std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", tmp, errno);
  absl::Status st = WriteAll(fd, *header, tmp);
  for (size_t i = 0; st.ok() && i < tensors.size(); ++i) st = WriteAll(fd, tensors[i].data, tmp);
  if (st.ok() && ::fsync(fd) != 0) st = ErrnoError("cannot fsync", tmp, errno);
  if (::close(fd) != 0 && st.ok()) st = ErrnoError("cannot close", tmp, errno);
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    st = ErrnoError("cannot rename onto", path, errno);
  }
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return ErrnoError("cannot open directory", dir, errno);
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  if (rc != 0) return ErrnoError("cannot fsync directory", dir, err);
  return absl::OkStatus();
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view bytes,
                                                         uint64_t file_size,
                                                         absl::string_view path) {
  if (file_size < 8) {
    return Corrupt(path, absl::StrCat("the file is ", file_size,
                                      " bytes, too short for the 8-byte header length"));
  }
  if (bytes.size() < 8) return absl::InternalError("ParseSafetensorsHeader: short read");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  if (n < 2 || n > kMaxHeaderBytes || n > file_size - 8) {
    return Corrupt(path, absl::StrCat("header length ", n, " is outside [2, min(", kMaxHeaderBytes,
                                      ", file size ", file_size, " - 8)]"));
  }
  if (bytes.size() < 8 + n) return absl::InternalError("ParseSafetensorsHeader: short read");
  absl::string_view text = bytes.substr(8, n);
  if (text[0] != '{') return Corrupt(path, "the header does not start with '{'");
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Corrupt(path, "the header is not a JSON object");
  }
  SafetensorsHeader header;
  header.data_start = 8 + n;
  const uint64_t data_size = file_size - header.data_start;
  for (const auto& [key, value] : j.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) return Corrupt(path, "\"__metadata__\" is not a JSON object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) {
          return Corrupt(path, absl::StrCat("metadata \"", k, "\" is not a string"));
        }
        header.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    ASSIGN_OR_RETURN(SafetensorsEntry e, ParseEntry(key, value, data_size, path));
    header.entries.push_back(std::move(e));
  }
  std::sort(header.entries.begin(), header.entries.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  uint64_t expected = 0;
  const SafetensorsEntry* prev = nullptr;
  for (const SafetensorsEntry& e : header.entries) {
    if (e.begin != expected) {
      return Corrupt(
          path, absl::StrCat("tensor \"", e.name, "\" starts at data byte ", e.begin, " but ",
                             prev == nullptr
                                 ? std::string("the data starts at 0")
                                 : absl::StrCat("tensor \"", prev->name, "\" ends at ", expected),
                             e.begin < expected ? " (overlap)" : " (gap)"));
    }
    expected = e.end;
    prev = &e;
  }
  if (expected != data_size) {
    return Corrupt(path,
                   absl::StrCat("the tensors cover ", expected, " bytes but the data buffer holds ",
                                data_size, " (file size ", file_size, ")"));
  }
  return header;
}

absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string msg = absl::StrCat("cannot open ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::InternalError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError("cannot stat", path, err);
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  absl::StatusOr<std::string> bytes = ReadAt(fd, 0, std::min<uint64_t>(size, 8), path);
  uint64_t want = std::min<uint64_t>(size, 8);
  if (bytes.ok() && bytes->size() == 8) {
    uint64_t n = 0;
    std::memcpy(&n, bytes->data(), 8);
    if (n <= kMaxHeaderBytes && n <= size - 8) {
      want = 8 + n;
      bytes = ReadAt(fd, 0, want, path);
    }
  }
  ::close(fd);
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() < want) {
    return Corrupt(path, "the file shrank while it was being read");
  }
  return ParseSafetensorsHeader(*bytes, size, path);
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Parse(std::string contents,
                                                       absl::string_view path) {
  ASSIGN_OR_RETURN(SafetensorsHeader header,
                   ParseSafetensorsHeader(contents, contents.size(), path));
  return SafetensorsFile(std::make_unique<const std::string>(std::move(contents)),
                         std::move(header));
}

absl::string_view SafetensorsFile::Data(const SafetensorsEntry& entry) const {
  return absl::string_view(*contents_)
      .substr(header_.data_start + entry.begin, entry.end - entry.begin);
}

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  ASSIGN_OR_RETURN(std::string contents, ReadFile(path));
  return SafetensorsFile::Parse(std::move(contents), path);
}

}  // namespace forge
