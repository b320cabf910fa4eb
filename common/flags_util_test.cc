#include "common/flags_util.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace forge {
namespace {

TEST(FlagsUtilTest, DashesInNamesOnly) {
  const char* in[] = {"prog", "--state-dir=/a-b/c-d", "-port-file", "x-y", "pos-arg",
                      "--", "--not-a-flag"};
  std::vector<char*> argv;
  for (const char* a : in) argv.push_back(const_cast<char*>(a));
  EXPECT_THAT(DashesToUnderscores(static_cast<int>(argv.size()), argv.data()),
              ::testing::ElementsAre("prog", "--state_dir=/a-b/c-d", "-port_file", "x-y",
                                     "pos-arg", "--", "--not-a-flag"));
}

}  // namespace
}  // namespace forge
