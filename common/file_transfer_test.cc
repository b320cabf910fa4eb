#include "common/file_transfer.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <string>

#include "common/crypto.h"

namespace forge {
namespace {

TEST(FileTransferTest, DigestFileMatchesSha256HexAcrossReadPieces) {
  std::string tmpl = ::testing::TempDir() + "/sha-XXXXXX";
  const std::string dir = mkdtemp(tmpl.data());
  std::string data;
  for (int i = 0; i < (3 << 20) + 17; ++i) data.push_back(static_cast<char>(i * 131 % 251));
  std::ofstream(dir + "/f", std::ios::binary) << data;
  absl::StatusOr<FileDigest> d = DigestFile(dir + "/f");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->sha256, Sha256Hex(data));
  EXPECT_EQ(d->size, static_cast<int64_t>(data.size()));
  EXPECT_EQ(DigestFile(dir + "/missing").status().code(), absl::StatusCode::kNotFound);
  // Known vector: sha256("abc").
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace forge
