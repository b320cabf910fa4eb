#include "common/file_transfer.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/file_util.h"

namespace forge {
namespace {

using Sha256Context = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

absl::StatusOr<Sha256Context> NewSha256() {
  Sha256Context ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("cannot initialise SHA-256 (OpenSSL)");
  }
  return ctx;
}

std::string FinishSha256(EVP_MD_CTX* ctx) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  return HexEncode(absl::string_view(reinterpret_cast<const char*>(md), len));
}

absl::Status IoError(absl::string_view what, const std::string& path) {
  const int e = errno;
  if (e == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  return absl::InternalError(absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(e)));
}

bool IsSha256Hex(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

// An open file descriptor, closed on destruction.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<FileDigest> DigestFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return IoError("open", path);
  auto ctx = NewSha256();
  if (!ctx.ok()) return ctx.status();
  FileDigest digest;
  std::string buf(kChunkBytes, '\0');
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("read", path);
    if (n == 0) break;
    EVP_DigestUpdate(ctx->get(), buf.data(), static_cast<size_t>(n));
    digest.size += n;
  }
  digest.sha256 = FinishSha256(ctx->get());
  return digest;
}

absl::Status ForEachChunk(const std::string& path, int64_t expected_size,
                          absl::FunctionRef<absl::Status(int64_t, absl::string_view)> send) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return IoError("open", path);
  std::string buf(kChunkBytes, '\0');
  int64_t offset = 0;
  for (;;) {
    // Fill the whole buffer (read() may return less), so every chunk but the last is full.
    size_t filled = 0;
    while (filled < buf.size()) {
      const ssize_t n = ::read(fd.get(), buf.data() + filled, buf.size() - filled);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return IoError("read", path);
      if (n == 0) break;
      filled += static_cast<size_t>(n);
    }
    if (filled == 0) break;
    if (offset + static_cast<int64_t>(filled) > expected_size) break;
    if (absl::Status s = send(offset, absl::string_view(buf.data(), filled)); !s.ok()) return s;
    offset += static_cast<int64_t>(filled);
    if (filled < buf.size()) break;
  }
  if (offset != expected_size || ::lseek(fd.get(), 0, SEEK_END) != expected_size) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " changed while it was being sent (it was ", expected_size,
                     " bytes); leave the directory alone during the upload and run it again"));
  }
  return absl::OkStatus();
}

bool IsPlainFileName(absl::string_view name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

struct TransferReceiver::Incoming {
  std::string temp_path;
  int fd = -1;
  int64_t received = 0;
  Sha256Context sha{nullptr, EVP_MD_CTX_free};
  std::string sha256;  // set by Finish()
  bool committed = false;
};

TransferReceiver::TransferReceiver(std::string dir) : dir_(std::move(dir)) {}

TransferReceiver::~TransferReceiver() {
  CloseAll().IgnoreError();
  for (const Incoming& in : incoming_) {
    if (!in.committed) ::unlink(in.temp_path.c_str());
  }
}

absl::Status TransferReceiver::CloseAll() {
  absl::Status result;
  for (Incoming& in : incoming_) {
    if (in.fd < 0) continue;
    if (::close(in.fd) != 0 && result.ok()) result = IoError("close", in.temp_path);
    in.fd = -1;
  }
  return result;
}

absl::Status TransferReceiver::Begin(const forge::v1::TransferHeader& header) {
  std::set<std::string> names;
  for (const forge::v1::FileInfo& f : header.files()) {
    if (!IsPlainFileName(f.name()) || !names.insert(f.name()).second) {
      return absl::DataLossError(absl::StrCat("the coordinator announced file \"", f.name(),
                                              "\", which is repeated or not a plain file name"));
    }
    if (f.size() < 0 || !IsSha256Hex(f.sha256())) {
      return absl::DataLossError(
          absl::StrCat("the coordinator announced ", f.name(), " with a bad size or sha256"));
    }
  }
  for (const forge::v1::FileInfo& f : header.files()) {
    Incoming in;
    in.temp_path = absl::StrCat(dir_, "/.", f.name(), ".forge-partial-", ::getpid());
    in.fd = ::open(in.temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (in.fd < 0) return IoError("create", in.temp_path);
    auto sha = NewSha256();
    if (!sha.ok()) {
      ::close(in.fd);
      ::unlink(in.temp_path.c_str());
      return sha.status();
    }
    in.sha = std::move(*sha);
    files_.push_back(f);
    incoming_.push_back(std::move(in));
  }
  return absl::OkStatus();
}

absl::Status TransferReceiver::Add(const forge::v1::FileChunk& chunk) {
  if (chunk.file() < 0 || chunk.file() >= static_cast<int>(incoming_.size())) {
    return absl::DataLossError(absl::StrCat("the coordinator sent a chunk of file #", chunk.file(),
                                            ", which its header (", incoming_.size(),
                                            " files) does not announce"));
  }
  Incoming& in = incoming_[chunk.file()];
  const forge::v1::FileInfo& info = files_[chunk.file()];
  const int64_t n = static_cast<int64_t>(chunk.data().size());
  if (chunk.offset() != in.received || in.received + n > info.size()) {
    return absl::DataLossError(absl::StrCat(
        info.name(), ": the coordinator sent ", n, " bytes at offset ", chunk.offset(), " after ",
        in.received, " of ", info.size(), " bytes; the transfer is out of order"));
  }
  for (size_t done = 0; done < chunk.data().size();) {
    const ssize_t w = ::write(in.fd, chunk.data().data() + done, chunk.data().size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return IoError("write", in.temp_path);
    done += static_cast<size_t>(w);
  }
  EVP_DigestUpdate(in.sha.get(), chunk.data().data(), chunk.data().size());
  in.received += n;
  return absl::OkStatus();
}

absl::Status TransferReceiver::Finish() {
  for (size_t i = 0; i < incoming_.size(); ++i) {
    Incoming& in = incoming_[i];
    const forge::v1::FileInfo& info = files_[i];
    if (in.received != info.size()) {
      return absl::DataLossError(absl::StrCat(info.name(), ": received ", in.received,
                                              " bytes of the ", info.size(), " announced"));
    }
    in.sha256 = FinishSha256(in.sha.get());
    if (in.sha256 != info.sha256()) {
      return absl::DataLossError(absl::StrCat(info.name(), ": the data received has sha256 ",
                                              in.sha256, ", not the announced ", info.sha256()));
    }
    if (::fsync(in.fd) != 0) return IoError("fsync", in.temp_path);
  }
  return CloseAll();
}

absl::StatusOr<std::string> TransferReceiver::Contents(absl::string_view name) const {
  for (size_t i = 0; i < files_.size(); ++i) {
    if (files_[i].name() == name) return ReadFile(incoming_[i].temp_path);
  }
  return absl::NotFoundError(absl::StrCat("the transfer has no ", name));
}

absl::Status TransferReceiver::Commit(const std::vector<std::string>& keep) {
  for (size_t i = 0; i < files_.size(); ++i) {
    bool wanted = false;
    for (const std::string& k : keep) wanted = wanted || k == files_[i].name();
    if (!wanted) continue;
    const std::string path = absl::StrCat(dir_, "/", files_[i].name());
    if (std::rename(incoming_[i].temp_path.c_str(), path.c_str()) != 0) {
      return IoError("rename into", path);
    }
    incoming_[i].committed = true;
  }
  Fd dir(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0 || ::fsync(dir.get()) != 0) return IoError("fsync directory", dir_);
  return absl::OkStatus();
}

IdleWatchdog::IdleWatchdog(grpc::ClientContext* context, absl::Duration idle)
    : context_(context), idle_(idle), last_kick_(absl::Now()), thread_([this] { Run(); }) {}

IdleWatchdog::~IdleWatchdog() {
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
  }
  thread_.join();
}

void IdleWatchdog::Kick() {
  absl::MutexLock lock(&mu_);
  last_kick_ = absl::Now();
}

bool IdleWatchdog::fired() const {
  absl::MutexLock lock(&mu_);
  return fired_;
}

void IdleWatchdog::Run() {
  absl::MutexLock lock(&mu_);
  while (!done_) {
    if (mu_.AwaitWithDeadline(absl::Condition(&done_), last_kick_ + idle_)) return;
    if (absl::Now() >= last_kick_ + idle_) {
      fired_ = true;
      context_->TryCancel();
      return;
    }
  }
}

}  // namespace forge
