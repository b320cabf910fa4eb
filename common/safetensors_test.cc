#include "common/safetensors.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

template <typename T>
absl::string_view Bytes(const std::vector<T>& v) {
  return absl::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// A file made of a length prefix, `json` as the header and `data`.
std::string File(absl::string_view json, absl::string_view data) {
  std::string out(8, '\0');
  uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  return absl::StrCat(out, json, data);
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/safetensors_test/",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    ASSERT_TRUE(MakeDirs(dir_).ok());
  }
  std::string dir_;
};

TEST_F(SafetensorsTest, RoundTripKeepsOrderShapesDtypesBytesAndMetadata) {
  std::vector<float> w = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
  std::vector<int64_t> step = {42};
  std::vector<uint16_t> bf = {0x3f80, 0xc000};
  std::vector<SafetensorsTensor> tensors = {
      {"h.0.attn.c_attn.weight", SafetensorsDtype::kF32, {2, 3}, Bytes(w)},
      {"step", SafetensorsDtype::kI64, {}, Bytes(step)},
      {"empty", SafetensorsDtype::kU8, {0, 4}, ""},
      {"bf", SafetensorsDtype::kBF16, {2}, Bytes(bf)},
  };
  const SafetensorsMetadata meta = {{"format", "pt"}, {"step", "42"}};
  const std::string path = dir_ + "/t.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, tensors, meta).ok());

  absl::StatusOr<SafetensorsFile> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  SafetensorsFile file = std::move(*read);  // Data() views must survive the move
  EXPECT_EQ(file.metadata(), meta);
  ASSERT_EQ(file.entries().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsEntry& e = file.entries()[i];
    EXPECT_EQ(e.name, tensors[i].name);
    EXPECT_EQ(e.dtype, tensors[i].dtype);
    EXPECT_EQ(e.shape, tensors[i].shape);
    EXPECT_EQ(file.Data(e), tensors[i].data) << e.name;
  }
  EXPECT_EQ(file.header().data_start % 8, 0u);
  ASSERT_NE(file.header().Find("step"), nullptr);
  EXPECT_EQ(file.header().Find("step")->begin, 24u);
  EXPECT_EQ(file.header().Find("missing"), nullptr);

  absl::StatusOr<SafetensorsHeader> header = ReadSafetensorsHeader(path);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->data_start, file.header().data_start);
  EXPECT_EQ(header->entries.size(), 4u);
  EXPECT_EQ(header->metadata, meta);
  EXPECT_FALSE(fs::exists(absl::StrCat(path, ".tmp.", ::getpid())));
}

// The bytes the public format defines, written out by hand.
TEST_F(SafetensorsTest, WritesTheSpecBytesExactly) {
  std::vector<float> a = {1.0f, 2.0f};
  std::vector<int32_t> b = {-1};
  const std::string path = dir_ + "/spec.safetensors";
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"a", SafetensorsDtype::kF32, {2}, Bytes(a)},
                                {"b", SafetensorsDtype::kI32, {1, 1}, Bytes(b)}},
                               {{"format", "pt"}})
                  .ok());
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"I32","shape":[1,1],"data_offsets":[8,12]}}   )";  // 141 + 3 spaces
  const std::string expected = std::string("\x90\0\0\0\0\0\0\0", 8) + json +
                               std::string("\x00\x00\x80\x3f\x00\x00\x00\x40\xff\xff\xff\xff", 12);
  absl::StatusOr<std::string> got = ReadFile(path);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, expected);
}

TEST_F(SafetensorsTest, ReadsAnUnpaddedHeaderFromAnotherWriter) {
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Parse(
      File(R"({"x":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})", "abc"), "other");
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->entries().size(), 1u);
  EXPECT_EQ(f->Data(f->entries()[0]), "abc");
  EXPECT_TRUE(f->metadata().empty());
}

TEST_F(SafetensorsTest, WriterRefusesBadTensorsAndLeavesNoFile) {
  std::vector<float> w = {1, 2, 3};
  const std::string path = dir_ + "/bad.safetensors";
  struct Case {
    std::vector<SafetensorsTensor> tensors;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{{"w", SafetensorsDtype::kF32, {2, 2}, Bytes(w)}}, "needs 16 bytes but the data has 12"},
      {{{"w", SafetensorsDtype::kF32, {3}, Bytes(w)}, {"w", SafetensorsDtype::kF32, {3}, Bytes(w)}},
       "tensor \"w\": name appears twice"},
      {{{"", SafetensorsDtype::kF32, {3}, Bytes(w)}}, "name is empty or reserved"},
      {{{"__metadata__", SafetensorsDtype::kF32, {3}, Bytes(w)}}, "name is empty or reserved"},
      {{{"w", SafetensorsDtype::kF32, {-3}, Bytes(w)}}, "bad shape [-3]"},
      {{{"\xff", SafetensorsDtype::kF32, {3}, Bytes(w)}}, "not valid UTF-8"},
  };
  for (const Case& c : cases) {
    absl::Status st = WriteSafetensors(path, c.tensors, {});
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.message));
    EXPECT_THAT(std::string(st.message()), HasSubstr(path));
    EXPECT_FALSE(fs::exists(path)) << c.message;
  }
}

struct CorruptCase {
  std::string label;
  std::string bytes;
  std::string message;  // a substring of the error
};
void PrintTo(const CorruptCase& c, std::ostream* os) { *os << c.label; }

// A well-formed two-tensor header: "a" F32 [2] at [0, 8), "b" U8 [4] at [8, 12).
std::string Header(absl::string_view a_entry, absl::string_view b_entry,
                   absl::string_view extra = "") {
  return absl::StrCat(R"({"a":)", a_entry, R"(,"b":)", b_entry, extra, "}");
}
constexpr absl::string_view kA = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
constexpr absl::string_view kB = R"({"dtype":"U8","shape":[4],"data_offsets":[8,12]})";
const std::string kData(12, '\x01');

std::vector<CorruptCase> CorruptCases() {
  std::string huge(8, '\0');
  huge[4] = 1;  // 2^32
  return {
      {"short_file", std::string(5, '\0'), "too short for the 8-byte header length"},
      {"length_past_end", File(Header(kA, kB), kData).substr(0, 20), "header length"},
      {"length_huge", huge + Header(kA, kB) + kData, "header length 4294967296 is outside"},
      {"length_tiny", File("{", ""), "header length 1 is outside"},
      {"not_json", File("{\"a\":", kData), "not a JSON object"},
      {"json_array", File("[1, 2, 3]", kData), "does not start with '{'"},
      {"trailing_garbage", File(Header(kA, kB) + "xx", kData), "not a JSON object"},
      {"entry_not_object", File(Header(kA, "7"), kData), "tensor \"b\": entry is not"},
      {"unknown_dtype",
       File(Header(R"({"dtype":"F33","shape":[2],"data_offsets":[0,8]})", kB), kData),
       "tensor \"a\": unknown safetensors dtype \"F33\""},
      {"missing_dtype", File(Header(R"({"shape":[2],"data_offsets":[0,8]})", kB), kData),
       "tensor \"a\": \"dtype\" is missing"},
      {"negative_dim",
       File(Header(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})", kB), kData),
       "tensor \"a\": \"shape\" [-2] holds a value"},
      {"float_dim",
       File(Header(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})", kB), kData),
       "tensor \"a\": \"shape\""},
      {"missing_offsets", File(Header(R"({"dtype":"F32","shape":[2]})", kB), kData),
       "tensor \"a\": \"data_offsets\" is missing"},
      {"three_offsets",
       File(Header(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,9]})", kB), kData),
       "tensor \"a\": \"data_offsets\" is missing"},
      {"shape_mismatch",
       File(Header(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", kB), kData),
       "tensor \"a\": data_offsets [0, 8] span 8 bytes but shape [3] of F32 needs 12"},
      {"dtype_mismatch",
       File(Header(R"({"dtype":"F64","shape":[2],"data_offsets":[0,8]})", kB), kData),
       "tensor \"a\": data_offsets [0, 8] span 8 bytes but shape [2] of F64 needs 16"},
      {"shape_overflow",
       File(Header(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})", kB),
            kData),
       "shape [4294967296, 4294967296] of F32 needs more than 2^63"},
      {"offsets_out_of_bounds",
       File(Header(kA, R"({"dtype":"U8","shape":[8],"data_offsets":[8,16]})"), kData),
       "tensor \"b\": data_offsets [8, 16] are not an interval inside the 12-byte"},
      {"begin_after_end",
       File(Header(kA, R"({"dtype":"U8","shape":[0],"data_offsets":[9,8]})"), kData),
       "tensor \"b\": data_offsets [9, 8] are not an interval"},
      {"overlap",
       File(Header(kA, R"({"dtype":"U8","shape":[4],"data_offsets":[4,8]})"), kData.substr(0, 8)),
       "tensor \"b\" starts at data byte 4 but tensor \"a\" ends at 8 (overlap)"},
      {"gap", File(Header(kA, R"({"dtype":"U8","shape":[3],"data_offsets":[9,12]})"), kData),
       "tensor \"b\" starts at data byte 9 but tensor \"a\" ends at 8 (gap)"},
      {"gap_at_start",
       File(Header(R"({"dtype":"F32","shape":[2],"data_offsets":[1,9]})",
                   R"({"dtype":"U8","shape":[3],"data_offsets":[9,12]})"),
            kData),
       "tensor \"a\" starts at data byte 1 but the data starts at 0 (gap)"},
      {"trailing_data", File(Header(kA, kB), kData + "z"),
       "the tensors cover 12 bytes but the data buffer holds 13"},
      {"truncated_data", File(Header(kA, kB), kData.substr(0, 11)),
       "tensor \"b\": data_offsets [8, 12] are not an interval inside the 11-byte"},
      {"duplicate_key",
       File(Header(kA, kB, R"(,"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]})"), kData),
       "(gap)"},
      {"metadata_not_string", File(Header(kA, kB, R"(,"__metadata__":{"format":1})"), kData),
       "metadata \"format\" is not a string"},
      {"metadata_not_object", File(Header(kA, kB, R"(,"__metadata__":"pt")"), kData),
       "\"__metadata__\" is not a JSON object"},
  };
}

class SafetensorsCorruptTest : public SafetensorsTest,
                               public ::testing::WithParamInterface<CorruptCase> {};

TEST_P(SafetensorsCorruptTest, IsRefusedNamingTheFile) {
  const CorruptCase& c = GetParam();
  const std::string path = absl::StrCat(dir_, "/", c.label, ".safetensors");
  ASSERT_TRUE(WriteFileAtomic(path, c.bytes).ok());

  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss) << file.status();
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(c.message));
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));

  absl::StatusOr<SafetensorsHeader> header = ReadSafetensorsHeader(path);
  EXPECT_EQ(header.status().code(), absl::StatusCode::kDataLoss) << header.status();
  EXPECT_THAT(std::string(header.status().message()), HasSubstr(c.message));
}

INSTANTIATE_TEST_SUITE_P(All, SafetensorsCorruptTest, ::testing::ValuesIn(CorruptCases()),
                         [](const auto& info) { return info.param.label; });

TEST_F(SafetensorsTest, TheWellFormedBaseOfTheCorruptCasesIsAccepted) {
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Parse(File(Header(kA, kB), kData), "x");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->entries().size(), 2u);
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  EXPECT_EQ(ReadSafetensors(dir_ + "/nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadSafetensorsHeader(dir_ + "/nope").status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsDtypeTest, NamesAndSizesFollowTheFormat) {
  EXPECT_EQ(SafetensorsDtypeName(SafetensorsDtype::kBF16), "BF16");
  EXPECT_EQ(SafetensorsDtypeSize(SafetensorsDtype::kBF16), 2);
  EXPECT_EQ(SafetensorsDtypeSize(SafetensorsDtype::kF64), 8);
  EXPECT_EQ(SafetensorsDtypeSize(SafetensorsDtype::kF8E4M3), 1);
  absl::StatusOr<SafetensorsDtype> d = SafetensorsDtypeFromName("F8_E5M2");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, SafetensorsDtype::kF8E5M2);
  EXPECT_EQ(SafetensorsDtypeFromName("f32").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace forge
