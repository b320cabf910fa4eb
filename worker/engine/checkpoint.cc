#include "worker/engine/checkpoint.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/crypto.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/status_macros.h"

namespace forge::engine {
namespace {

using Json = nlohmann::json;

constexpr char kManifestFormat[] = "forge.checkpoint";
constexpr char kTrainerStateFormat[] = "forge.trainer_state";
constexpr char kManifestHashKey[] = "manifest_sha256";
const char* const kDataFiles[] = {kCheckpointModelFile, kCheckpointOptimizerFile,
                                  kCheckpointTrainerStateFile};

std::string PathIn(const std::string& dir, absl::string_view name) {
  return absl::StrCat(dir, "/", name);
}

// DATA_LOSS naming the damaged file and what to do about it.
absl::Status Corrupt(const std::string& dir, absl::string_view file, absl::string_view what) {
  return absl::DataLossError(absl::StrCat("checkpoint ", PathIn(dir, file), ": ", what,
                                          "; the checkpoint is damaged: resume from or export "
                                          "another checkpoint"));
}

struct FileDigest {
  uint64_t bytes = 0;
  std::string sha256;  // lower-case hex
};

// Size and sha256 of the file at `path`, read in a stream. NOT_FOUND if it does not exist.
absl::StatusOr<FileDigest> HashFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::string msg = absl::StrCat("cannot open ", path, ": ", std::strerror(errno));
    return errno == ENOENT ? absl::NotFoundError(msg) : absl::InternalError(msg);
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    ::close(fd);
    return absl::InternalError("cannot initialize sha256 (OpenSSL)");
  }
  FileDigest digest;
  std::string buf(1 << 18, '\0');
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string msg = absl::StrCat("cannot read ", path, ": ", std::strerror(errno));
      ::close(fd);
      return absl::InternalError(msg);
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
    digest.bytes += static_cast<uint64_t>(n);
  }
  ::close(fd);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  digest.sha256 = HexEncode(absl::string_view(reinterpret_cast<const char*>(md), len));
  return digest;
}

std::string ParentDir(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  size_t slash = dir.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : dir.substr(0, slash);
}

absl::Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open directory ", dir));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat("cannot fsync directory ", dir));
  return absl::OkStatus();
}

std::string ManifestHash(Json manifest) {
  manifest.erase(kManifestHashKey);
  return Sha256Hex(manifest.dump());
}

bool IsPlainFileName(const std::string& name) {
  if (name.empty() || name[0] == '.' || name == kCheckpointManifestFile) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

bool IsSha256Hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

struct ManifestEntry {
  std::string name;
  uint64_t bytes = 0;
  std::string sha256;
};

// Reads and checks MANIFEST.json (its own hash, format, version, entries, required files).
absl::StatusOr<std::vector<ManifestEntry>> ReadManifest(const std::string& dir) {
  if (!FileExists(dir)) {
    return absl::NotFoundError(absl::StrCat("checkpoint directory ", dir, " does not exist"));
  }
  absl::StatusOr<std::string> text = ReadFile(PathIn(dir, kCheckpointManifestFile));
  if (absl::IsNotFound(text.status())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", dir, " is torn: it has no ", kCheckpointManifestFile,
        " (its writer stopped before finishing) and must not be used; resume from an earlier "
        "committed checkpoint"));
  }
  if (!text.ok()) return text.status();
  auto bad = [&](absl::string_view what) { return Corrupt(dir, kCheckpointManifestFile, what); };
  Json j = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  auto hash = j.find(kManifestHashKey);
  if (hash == j.end() || !hash->is_string() || *hash != ManifestHash(j)) {
    return bad("its manifest_sha256 is missing or does not match its content");
  }
  if (j.value("format", Json()) != kManifestFormat)
    return bad("\"format\" is not forge.checkpoint");
  Json version = j.value("format_version", Json());
  if (!version.is_number_unsigned() || version.get<uint64_t>() < 1) {
    return bad("\"format_version\" is not a positive integer");
  }
  if (version.get<uint64_t>() > kCheckpointFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", PathIn(dir, kCheckpointManifestFile), ": format_version ",
                     version.get<uint64_t>(), " is newer than this build reads (",
                     kCheckpointFormatVersion, "); upgrade Forge to load it"));
  }
  auto files = j.find("files");
  if (files == j.end() || !files->is_array()) return bad("\"files\" is not an array");
  std::vector<ManifestEntry> entries;
  std::set<std::string> names;
  for (const Json& f : *files) {
    ManifestEntry e;
    if (!f.is_object() || !f.value("name", Json()).is_string() ||
        !f.value("bytes", Json()).is_number_unsigned() || !f.value("sha256", Json()).is_string()) {
      return bad(absl::StrCat("files entry ", f.dump(), " is not {name, bytes, sha256}"));
    }
    e.name = f["name"].get<std::string>();
    e.bytes = f["bytes"].get<uint64_t>();
    e.sha256 = f["sha256"].get<std::string>();
    if (!IsPlainFileName(e.name) || !names.insert(e.name).second) {
      return bad(
          absl::StrCat("files entry name \"", e.name, "\" is repeated or not a plain file name"));
    }
    if (!IsSha256Hex(e.sha256)) return bad(absl::StrCat(e.name, ": sha256 is not 64 hex digits"));
    entries.push_back(std::move(e));
  }
  for (const char* required : kDataFiles) {
    if (!names.contains(required)) return bad(absl::StrCat("it does not list ", required));
  }
  return entries;
}

absl::Status CheckDigest(const std::string& dir, const ManifestEntry& e,
                         const absl::StatusOr<FileDigest>& got) {
  if (absl::IsNotFound(got.status())) {
    return Corrupt(dir, e.name,
                   absl::StrCat("listed in ", kCheckpointManifestFile, " but missing"));
  }
  if (!got.ok()) return got.status();
  if (got->bytes != e.bytes) {
    return Corrupt(dir, e.name,
                   absl::StrCat("is ", got->bytes, " bytes but ", kCheckpointManifestFile, " says ",
                                e.bytes, " (truncated or overwritten)"));
  }
  if (got->sha256 != e.sha256) {
    return Corrupt(dir, e.name,
                   absl::StrCat("sha256 ", got->sha256, " does not match ", kCheckpointManifestFile,
                                " (", e.sha256, ")"));
  }
  return absl::OkStatus();
}

// Parses trainer_state.json; returns the step and moves the caller's object into `*state`.
absl::StatusOr<int64_t> ParseTrainerState(const std::string& dir, const std::string& text,
                                          Json* state) {
  auto bad = [&](absl::string_view what) {
    return Corrupt(dir, kCheckpointTrainerStateFile, what);
  };
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  if (j.value("format", Json()) != kTrainerStateFormat) {
    return bad("\"format\" is not forge.trainer_state");
  }
  if (j.value("format_version", Json()) != kCheckpointFormatVersion) {
    return bad(absl::StrCat("\"format_version\" is not ", kCheckpointFormatVersion));
  }
  Json step = j.value("step", Json());
  if (!step.is_number_unsigned() || step.get<uint64_t>() > std::numeric_limits<int64_t>::max()) {
    return bad("\"step\" is not a non-negative integer");
  }
  auto s = j.find("state");
  if (s == j.end() || !s->is_object()) return bad("\"state\" is not a JSON object");
  if (state != nullptr) *state = std::move(*s);
  return static_cast<int64_t>(step.get<uint64_t>());
}

// Checks that both safetensors files agree with each other and with the trainer's step.
absl::Status CheckTensors(const std::string& dir, const SafetensorsHeader& model,
                          const SafetensorsHeader& optimizer, int64_t step) {
  const std::string step_text = absl::StrCat(step);
  for (const auto& [file, header] :
       {std::pair{kCheckpointModelFile, &model}, std::pair{kCheckpointOptimizerFile, &optimizer}}) {
    auto it = header->metadata.find("step");
    if (it == header->metadata.end() || it->second != step_text) {
      return Corrupt(dir, file,
                     absl::StrCat("metadata step is not ", step_text, " (the step in ",
                                  kCheckpointTrainerStateFile, ")"));
    }
    for (const SafetensorsEntry& e : header->entries) {
      if (e.dtype != SafetensorsDtype::kF32) {
        return Corrupt(dir, file,
                       absl::StrCat("tensor \"", e.name, "\" is ", SafetensorsDtypeName(e.dtype),
                                    ", not F32"));
      }
    }
  }
  if (optimizer.entries.size() != 2 * model.entries.size()) {
    return Corrupt(dir, kCheckpointOptimizerFile,
                   absl::StrCat("holds ", optimizer.entries.size(), " tensors, not m and v for ",
                                "each of the model's ", model.entries.size()));
  }
  for (const SafetensorsEntry& p : model.entries) {
    for (const char* prefix : {"m.", "v."}) {
      const SafetensorsEntry* moment = optimizer.Find(absl::StrCat(prefix, p.name));
      if (moment == nullptr || moment->shape != p.shape) {
        return Corrupt(dir, kCheckpointOptimizerFile,
                       absl::StrCat("tensor \"", prefix, p.name, "\" is missing or not shaped ",
                                    "like the parameter [", absl::StrJoin(p.shape, ", "), "]"));
      }
    }
  }
  return absl::OkStatus();
}

LoadedTensor ToLoaded(const SafetensorsFile& file, const SafetensorsEntry& e, size_t prefix) {
  LoadedTensor t{e.name.substr(prefix), e.shape, {}};
  absl::string_view bytes = file.Data(e);
  t.data.resize(bytes.size() / sizeof(float));
  std::memcpy(t.data.data(), bytes.data(), bytes.size());
  return t;
}

absl::string_view AsBytes(absl::Span<const float> data) {
  return absl::string_view(reinterpret_cast<const char*>(data.data()), data.size() * 4);
}

absl::Status MirrorsModel(const CheckpointData& data, const std::vector<CheckpointTensor>& moments,
                          absl::string_view what) {
  if (moments.size() != data.model.size()) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint: ", what, " has ", moments.size(),
                                                   " tensors but the model has ",
                                                   data.model.size()));
  }
  for (size_t i = 0; i < moments.size(); ++i) {
    if (moments[i].name != data.model[i].name || moments[i].shape != data.model[i].shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint: ", what, "[", i, "] \"", moments[i].name, "\" [",
                       absl::StrJoin(moments[i].shape, ", "), "] does not match model tensor \"",
                       data.model[i].name, "\" [", absl::StrJoin(data.model[i].shape, ", "), "]"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteCheckpoint(const std::string& dir, const CheckpointData& data) {
  if (data.step < 0) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint: step ", data.step, " < 0"));
  }
  if (!data.state.is_object()) {
    return absl::InvalidArgumentError("checkpoint: state must be a JSON object");
  }
  RETURN_IF_ERROR(MirrorsModel(data, data.adam_m, "adam_m"));
  RETURN_IF_ERROR(MirrorsModel(data, data.adam_v, "adam_v"));
  std::vector<SafetensorsTensor> model, optimizer;
  for (const CheckpointTensor& t : data.model) {
    model.push_back({t.name, SafetensorsDtype::kF32, t.shape, AsBytes(t.data)});
  }
  for (const auto& [prefix, moments] :
       {std::pair{"m.", &data.adam_m}, std::pair{"v.", &data.adam_v}}) {
    for (const CheckpointTensor& t : *moments) {
      optimizer.push_back(
          {absl::StrCat(prefix, t.name), SafetensorsDtype::kF32, t.shape, AsBytes(t.data)});
    }
  }
  const std::string step = absl::StrCat(data.step);
  const SafetensorsMetadata model_meta = {{"format", "pt"}, {"step", step}};
  const SafetensorsMetadata optimizer_meta = {
      {"format", "pt"}, {"optimizer", "adamw"}, {"step", step}};
  std::string trainer_state;
  try {
    trainer_state = Json{{"format", kTrainerStateFormat},
                         {"format_version", kCheckpointFormatVersion},
                         {"step", data.step},
                         {"state", data.state}}
                        .dump(2) +
                    "\n";
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint: state: ", e.what()));
  }
  // Validate both tensor lists before writing anything.
  RETURN_IF_ERROR(SerializeSafetensorsHeader(model, model_meta).status());
  RETURN_IF_ERROR(SerializeSafetensorsHeader(optimizer, optimizer_meta).status());

  if (FileExists(PathIn(dir, kCheckpointManifestFile))) {
    return absl::AlreadyExistsError(
        absl::StrCat("checkpoint ", dir, " already holds a complete checkpoint (",
                     kCheckpointManifestFile, "); write to a new directory"));
  }
  RETURN_IF_ERROR(MakeDirs(dir));
  RETURN_IF_ERROR(FsyncDir(ParentDir(dir)));  // makes a newly created `dir` durable

  RETURN_IF_ERROR(WriteSafetensors(PathIn(dir, kCheckpointModelFile), model, model_meta));
  RETURN_IF_ERROR(
      WriteSafetensors(PathIn(dir, kCheckpointOptimizerFile), optimizer, optimizer_meta));
  RETURN_IF_ERROR(WriteFileAtomic(PathIn(dir, kCheckpointTrainerStateFile), trainer_state));
  std::vector<const char*> listed(std::begin(kDataFiles), std::end(kDataFiles));
  if (data.hf_config.has_value()) {
    RETURN_IF_ERROR(WriteHfConfigJson(dir, *data.hf_config));
    listed.push_back(kCheckpointHfConfigFile);
  }

  // Hash what is on disk, not what we meant to write.
  Json files = Json::array();
  for (const char* name : listed) {
    ASSIGN_OR_RETURN(FileDigest d, HashFile(PathIn(dir, name)));
    files.push_back({{"name", name}, {"bytes", d.bytes}, {"sha256", d.sha256}});
  }
  Json manifest = {{"format", kManifestFormat},
                   {"format_version", kCheckpointFormatVersion},
                   {"files", std::move(files)}};
  manifest[kManifestHashKey] = ManifestHash(manifest);
  return WriteFileAtomic(PathIn(dir, kCheckpointManifestFile), manifest.dump() + "\n");
}

absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& dir) {
  ASSIGN_OR_RETURN(std::vector<ManifestEntry> entries, ReadManifest(dir));
  std::map<std::string, std::string> contents;
  for (const ManifestEntry& e : entries) {
    absl::StatusOr<std::string> bytes = ReadFile(PathIn(dir, e.name));
    absl::StatusOr<FileDigest> digest =
        bytes.ok() ? absl::StatusOr<FileDigest>(FileDigest{bytes->size(), Sha256Hex(*bytes)})
                   : absl::StatusOr<FileDigest>(bytes.status());
    RETURN_IF_ERROR(CheckDigest(dir, e, digest));
    if (e.name != kCheckpointModelFile && e.name != kCheckpointOptimizerFile &&
        e.name != kCheckpointTrainerStateFile) {
      continue;  // verified but not ours to interpret (a later format's extra file)
    }
    contents[e.name] = std::move(*bytes);
  }
  LoadedCheckpoint out;
  ASSIGN_OR_RETURN(out.step,
                   ParseTrainerState(dir, contents[kCheckpointTrainerStateFile], &out.state));
  ASSIGN_OR_RETURN(SafetensorsFile model,
                   SafetensorsFile::Parse(std::move(contents[kCheckpointModelFile]),
                                          PathIn(dir, kCheckpointModelFile)));
  ASSIGN_OR_RETURN(SafetensorsFile optimizer,
                   SafetensorsFile::Parse(std::move(contents[kCheckpointOptimizerFile]),
                                          PathIn(dir, kCheckpointOptimizerFile)));
  RETURN_IF_ERROR(CheckTensors(dir, model.header(), optimizer.header(), out.step));
  for (const SafetensorsEntry& p : model.entries()) {
    out.model.push_back(ToLoaded(model, p, 0));
    out.adam_m.push_back(ToLoaded(optimizer, *optimizer.header().Find("m." + p.name), 2));
    out.adam_v.push_back(ToLoaded(optimizer, *optimizer.header().Find("v." + p.name), 2));
  }
  return out;
}

absl::Status VerifyCheckpoint(const std::string& dir) {
  ASSIGN_OR_RETURN(std::vector<ManifestEntry> entries, ReadManifest(dir));
  for (const ManifestEntry& e : entries) {
    RETURN_IF_ERROR(CheckDigest(dir, e, HashFile(PathIn(dir, e.name))));
  }
  ASSIGN_OR_RETURN(std::string state, ReadFile(PathIn(dir, kCheckpointTrainerStateFile)));
  ASSIGN_OR_RETURN(int64_t step, ParseTrainerState(dir, state, nullptr));
  ASSIGN_OR_RETURN(SafetensorsHeader model,
                   ReadSafetensorsHeader(PathIn(dir, kCheckpointModelFile)));
  ASSIGN_OR_RETURN(SafetensorsHeader optimizer,
                   ReadSafetensorsHeader(PathIn(dir, kCheckpointOptimizerFile)));
  return CheckTensors(dir, model, optimizer, step);
}

absl::Status WriteHfConfigJson(const std::string& dir, const ModelShape& shape) {
  Json config = {
      {"architectures", {"GPT2LMHeadModel"}},
      {"model_type", "gpt2"},
      {"n_layer", shape.layers},
      {"n_head", shape.heads},
      {"n_embd", shape.width},
      {"n_positions", shape.context},
      {"n_ctx", shape.context},
      {"vocab_size", shape.vocab},
      {"n_inner", nullptr},  // transformers reads null as 4 * n_embd
      {"activation_function", "gelu_new"},
      {"layer_norm_epsilon", 1e-5},
      {"tie_word_embeddings", true},
      {"resid_pdrop", 0.0},
      {"embd_pdrop", 0.0},
      {"attn_pdrop", 0.0},
      {"torch_dtype", "float32"},
  };
  return WriteFileAtomic(PathIn(dir, kCheckpointHfConfigFile), config.dump(2) + "\n");
}

}  // namespace forge::engine
