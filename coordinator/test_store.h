// For unit tests: a fresh directory under the test temp dir, and a store in it that does not
// wait for fsync (synchronous=NORMAL), opened again over the same file for a "restart".
#ifndef FORGE_COORDINATOR_TEST_STORE_H_
#define FORGE_COORDINATOR_TEST_STORE_H_

#include <stdlib.h>

#include <memory>
#include <string>

#include "coordinator/store.h"
#include "gtest/gtest.h"

namespace forge::coordinator {

inline std::string NewTestDir(const std::string& tag) {
  std::string tmpl = ::testing::TempDir() + "/" + tag + "-XXXXXX";
  EXPECT_NE(mkdtemp(tmpl.data()), nullptr) << tmpl;
  return tmpl;
}

inline std::unique_ptr<Store> OpenTestStore(const std::string& dir) {
  StoreOptions so;
  so.path = dir + "/state.db";
  so.synchronous_full = false;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(so);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

}  // namespace forge::coordinator

#endif  // FORGE_COORDINATOR_TEST_STORE_H_
