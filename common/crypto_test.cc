#include "common/crypto.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <string>

namespace forge {
namespace {

TEST(CryptoTest, Sha256FileMatchesSha256HexAcrossReadPieces) {
  std::string tmpl = ::testing::TempDir() + "/sha-XXXXXX";
  const std::string dir = mkdtemp(tmpl.data());
  std::string data;
  for (int i = 0; i < (3 << 20) + 17; ++i) data.push_back(static_cast<char>(i * 131 % 251));
  std::ofstream(dir + "/f", std::ios::binary) << data;
  int64_t size = 0;
  absl::StatusOr<std::string> sha = Sha256File(dir + "/f", &size);
  ASSERT_TRUE(sha.ok()) << sha.status();
  EXPECT_EQ(*sha, Sha256Hex(data));
  EXPECT_EQ(size, static_cast<int64_t>(data.size()));
  EXPECT_EQ(Sha256File(dir + "/missing", &size).status().code(), absl::StatusCode::kNotFound);
  // Known vector: sha256("abc").
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace forge
