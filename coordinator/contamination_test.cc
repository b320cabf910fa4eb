#include "coordinator/contamination.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "common/dataset.h"
#include "common/dataset_test_util.h"
#include "common/file_util.h"

namespace forge::coordinator {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr int kN = 50;                    // ContaminationOptions().ngram
constexpr double kAllHeldOut = 0.999999;  // fraction < 1 that holds out (almost) everything

// Text that shares no 50-byte span with other calls' text (words of random letters), and no
// '\n', so a passage embedded between newlines ends exactly where it is cut.
std::string RandomText(std::mt19937_64& rng, size_t bytes) {
  std::string s;
  while (s.size() < bytes) {
    const int len = 2 + static_cast<int>(rng() % 7);
    for (int i = 0; i < len; ++i) s.push_back(static_cast<char>('a' + rng() % 26));
    s.push_back(' ');
  }
  s.resize(bytes);
  return s;
}

std::string Prefix12(const std::string& text) { return Sha256Hex(text).substr(0, 12); }

class ContaminationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(::testing::TempDir(), "/contamination_test/",
                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    ASSERT_TRUE(MakeDirs(root_).ok());
  }
  void TearDown() override {
    datasets_.clear();
    fs::remove_all(root_);
  }

  // Prepares `texts` (in order) as dataset `name`, holding out `heldout_fraction` by hash.
  const Dataset& Make(const std::string& name, const std::vector<std::string>& texts,
                      double heldout_fraction) {
    const std::string dir = root_ + "/" + name + "/prepared";
    absl::StatusOr<PrepareSummary> summary = PrepareTexts(name, texts, dir, heldout_fraction);
    EXPECT_TRUE(summary.ok()) << summary.status();
    absl::StatusOr<Dataset> ds = Dataset::Open(dir, VerifyMode::kFull);
    EXPECT_TRUE(ds.ok()) << ds.status();
    datasets_.push_back(std::make_unique<Dataset>(*std::move(ds)));
    return *datasets_.back();
  }
  // Every document held out (checked), for an eval suite.
  const Dataset& Suite(const std::string& name, const std::vector<std::string>& texts) {
    const Dataset& ds = Make(name, texts, kAllHeldOut);
    EXPECT_EQ(ds.Documents(Split::kHeldOut).size(), texts.size());
    return ds;
  }
  // Every document in the train split, for a training source.
  const Dataset& Source(const std::string& name, const std::vector<std::string>& texts) {
    return Make(name, texts, 0.0);
  }

  // `count` texts of bytes, bytes + step, bytes + 2 * step, ...
  static std::vector<std::string> Texts(uint64_t seed, int count, size_t bytes, size_t step = 10) {
    std::mt19937_64 rng(seed);
    std::vector<std::string> texts;
    for (int i = 0; i < count; ++i) texts.push_back(RandomText(rng, bytes + step * i));
    return texts;
  }

  static ContaminationReport Check(const std::vector<const Dataset*>& suites,
                                   const std::vector<const Dataset*>& sources,
                                   const ContaminationOptions& options = {}) {
    absl::StatusOr<ContaminationReport> report = CheckContamination(suites, sources, options);
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() ? *std::move(report) : ContaminationReport{};
  }

  std::string root_;
  std::vector<std::unique_ptr<Dataset>> datasets_;
};

int64_t Ngrams(const std::vector<std::string>& texts, int n = kN) {
  int64_t total = 0;
  for (const std::string& t : texts) {
    total += std::max<int64_t>(0, static_cast<int64_t>(t.size()) - n + 1);
  }
  return total;
}

TEST_F(ContaminationTest, CleanSuiteAgainstUnrelatedSource) {
  const std::vector<std::string> eval = Texts(1, 20, 300);
  const Dataset& suite = Suite("general-english", eval);
  const Dataset& source = Source("acme-tickets", Texts(2, 50, 2000));

  const ContaminationReport report = Check({&suite}, {&source});
  EXPECT_FALSE(report.contaminated());
  ASSERT_EQ(report.pairs.size(), 1u);
  const SuiteSourceOverlap& p = report.pairs[0];
  EXPECT_EQ(p.suite, "general-english");
  EXPECT_EQ(p.source, "acme-tickets");
  EXPECT_EQ(p.heldout_documents, 20);
  EXPECT_EQ(p.exact_duplicates, 0);
  EXPECT_EQ(p.documents_with_overlap, 0);
  EXPECT_EQ(p.contaminated_documents, 0);
  EXPECT_EQ(p.heldout_ngrams, Ngrams(eval));
  EXPECT_EQ(p.shared_ngrams, 0);
  EXPECT_EQ(p.ngram_overlap, 0.0);
  EXPECT_THAT(p.examples, IsEmpty());
  EXPECT_EQ(p.train_tokens, source.num_tokens());
  EXPECT_EQ(p.train_tokens_scanned, source.num_tokens());
}

TEST_F(ContaminationTest, VerbatimCopyInAnotherDatasetIsAnExactDuplicate) {
  const std::vector<std::string> eval = Texts(1, 10, 300);
  std::vector<std::string> train = Texts(2, 30, 1000);
  train.insert(train.begin() + 7, eval[3]);
  const Dataset& suite = Suite("general-english", eval);
  const Dataset& source = Source("acme-tickets", train);

  const ContaminationReport report = Check({&suite}, {&source});
  EXPECT_TRUE(report.contaminated());
  ASSERT_EQ(report.pairs.size(), 1u);
  const SuiteSourceOverlap& p = report.pairs[0];
  EXPECT_EQ(p.exact_duplicates, 1);
  EXPECT_EQ(p.documents_with_overlap, 1);
  EXPECT_EQ(p.contaminated_documents, 1);
  EXPECT_EQ(p.shared_ngrams, static_cast<int64_t>(eval[3].size()) - kN + 1);
  EXPECT_DOUBLE_EQ(p.ngram_overlap,
                   static_cast<double>(p.shared_ngrams) / static_cast<double>(Ngrams(eval)));
  EXPECT_THAT(p.examples, ElementsAre(Prefix12(eval[3])));
}

TEST_F(ContaminationTest, SharedPassagesAreCountedByNgram) {
  std::mt19937_64 rng(7);
  const std::vector<std::string> eval = {
      RandomText(rng, 300),  // wholly inside a longer training document
      RandomText(rng, 400),  // 100 of its bytes (from byte 150) in a training document
      RandomText(rng, 400),  // clean
  };
  std::vector<std::string> train = Texts(3, 5, 1000);
  train.push_back(RandomText(rng, 800) + "\n" + eval[0] + "\n" + RandomText(rng, 900));
  train.push_back(RandomText(rng, 500) + "\n" + eval[1].substr(150, 100) + "\n" +
                  RandomText(rng, 500));
  train.push_back(eval[0] + "\n" + RandomText(rng, 300));  // found twice, counted once
  const Dataset& suite = Suite("general-english", eval);
  const Dataset& source = Source("acme-tickets", train);

  const ContaminationReport report = Check({&suite}, {&source});
  ASSERT_EQ(report.pairs.size(), 1u);
  const SuiteSourceOverlap& p = report.pairs[0];
  EXPECT_EQ(p.exact_duplicates, 0);
  EXPECT_EQ(p.documents_with_overlap, 2);
  EXPECT_EQ(p.contaminated_documents, 1);  // 51 of 351 n-grams is not over 50%
  EXPECT_EQ(p.heldout_ngrams, 251 + 351 + 351);
  EXPECT_EQ(p.shared_ngrams, 251 + 51);
  EXPECT_THAT(p.examples, ElementsAre(Prefix12(eval[0])));

  ContaminationOptions strict;
  strict.max_overlap = 0.1;  // 51/351 = 14.5% is over it
  const ContaminationReport strict_report = Check({&suite}, {&source}, strict);
  ASSERT_EQ(strict_report.pairs.size(), 1u);
  EXPECT_EQ(strict_report.pairs[0].contaminated_documents, 2);
  EXPECT_EQ(strict_report.max_overlap, 0.1);

  ContaminationOptions longer;
  longer.ngram = 101;  // the 100-byte passage no longer holds a whole n-gram
  const ContaminationReport longer_report = Check({&suite}, {&source}, longer);
  ASSERT_EQ(longer_report.pairs.size(), 1u);
  EXPECT_EQ(longer_report.pairs[0].documents_with_overlap, 1);
  EXPECT_EQ(longer_report.pairs[0].shared_ngrams, 300 - 101 + 1);
}

TEST_F(ContaminationTest, ContaminatedMeansMoreThanMaxOverlap) {
  // 149 bytes: 100 n-grams. A 99-byte passage in training covers 50 of them (not more than
  // 50%), a 100-byte one 51.
  std::mt19937_64 rng(9);
  const std::vector<std::string> eval = {RandomText(rng, 149), RandomText(rng, 149)};
  const Dataset& suite = Suite("general-english", eval);
  const Dataset& source = Source(
      "acme-tickets", {"\n" + eval[0].substr(0, 99) + "\n", "\n" + eval[1].substr(49, 100) + "\n"});

  const ContaminationReport report = Check({&suite}, {&source});
  ASSERT_EQ(report.pairs.size(), 1u);
  EXPECT_EQ(report.pairs[0].shared_ngrams, 50 + 51);
  EXPECT_EQ(report.pairs[0].documents_with_overlap, 2);
  EXPECT_EQ(report.pairs[0].contaminated_documents, 1);
  EXPECT_THAT(report.pairs[0].examples, ElementsAre(Prefix12(eval[1])));
}

TEST_F(ContaminationTest, RepeatedNgramsCountEveryPosition) {
  // A held-out document made of one 60-byte passage three times: its n-grams repeat, and a
  // single copy of the passage in training data covers the positions inside each copy.
  std::mt19937_64 rng(11);
  const std::string passage = RandomText(rng, 60);
  const std::vector<std::string> eval = {passage + passage + passage};  // 180 bytes, 131 n-grams
  const Dataset& suite = Suite("general-english", eval);
  const Dataset& source = Source("acme-tickets", {"\n" + passage + "\n", RandomText(rng, 500)});

  const ContaminationReport report = Check({&suite}, {&source});
  ASSERT_EQ(report.pairs.size(), 1u);
  EXPECT_EQ(report.pairs[0].heldout_ngrams, 131);
  // Each of the three copies contributes the 11 n-grams that lie inside it.
  EXPECT_EQ(report.pairs[0].shared_ngrams, 3 * 11);
  EXPECT_EQ(report.pairs[0].contaminated_documents, 0);
}

TEST_F(ContaminationTest, ShortDocumentsAreComparedByHashOnly) {
  std::mt19937_64 rng(5);
  const std::vector<std::string> eval = {"Q: capital of France? A: Paris",  // copied verbatim
                                         "Q: 2 + 2? A: 4",                  // inside a doc
                                         RandomText(rng, 200)};
  const Dataset& suite = Suite("general-english", eval);
  const Dataset& source =
      Source("acme-tickets", {"intro\n" + eval[1] + "\noutro", eval[0], "unrelated text"});

  const ContaminationReport report = Check({&suite}, {&source});
  ASSERT_EQ(report.pairs.size(), 1u);
  const SuiteSourceOverlap& p = report.pairs[0];
  EXPECT_EQ(p.heldout_documents, 3);
  EXPECT_EQ(p.heldout_ngrams, 200 - kN + 1);  // the short ones have none
  EXPECT_EQ(p.exact_duplicates, 1);
  EXPECT_EQ(p.documents_with_overlap, 0);
  EXPECT_EQ(p.contaminated_documents, 1);
  EXPECT_THAT(p.examples, ElementsAre(Prefix12(eval[0])));
}

TEST_F(ContaminationTest, HeldOutSplitIsComparedWithTheTrainSplitOfItsOwnDataset) {
  // Find a near-duplicate pair (one byte differs) that the hash split puts on both sides.
  std::mt19937_64 rng(13);
  std::string train_copy, heldout_copy;
  for (int i = 0; i < 1000 && heldout_copy.empty(); ++i) {
    std::string a = RandomText(rng, 400), b = a;
    b[399] = b[399] == 'x' ? 'y' : 'x';
    if (!IsHeldOut(Sha256Hex(a), 0.5) && IsHeldOut(Sha256Hex(b), 0.5)) {
      train_copy = a;
      heldout_copy = b;
    }
  }
  ASSERT_FALSE(heldout_copy.empty());
  std::vector<std::string> texts = Texts(17, 40, 300);
  texts.push_back(train_copy);
  texts.push_back(heldout_copy);
  const Dataset& ds = Make("general-english", texts, 0.5);
  ASSERT_GT(ds.Documents(Split::kHeldOut).size(), 1u);
  ASSERT_GT(ds.Documents(Split::kTrain).size(), 1u);

  const ContaminationReport report = Check({&ds}, {&ds});
  ASSERT_EQ(report.pairs.size(), 1u);
  const SuiteSourceOverlap& p = report.pairs[0];
  EXPECT_EQ(p.heldout_documents, static_cast<int64_t>(ds.Documents(Split::kHeldOut).size()));
  EXPECT_EQ(p.exact_duplicates, 0);
  // Only the near-duplicate: held-out documents are not compared with themselves.
  EXPECT_EQ(p.documents_with_overlap, 1);
  EXPECT_EQ(p.contaminated_documents, 1);
  EXPECT_EQ(p.shared_ngrams, 400 - kN);  // every n-gram but the one with the changed byte
  EXPECT_THAT(p.examples, ElementsAre(Prefix12(heldout_copy)));
  EXPECT_EQ(p.train_tokens, ds.SplitTokens(Split::kTrain));
}

TEST_F(ContaminationTest, SummaryNamesTheDatasetsAndTheNumbers) {
  std::vector<std::string> eval = Texts(1, 4, 100, 0);  // 51 n-grams each, 204 in all
  std::vector<std::string> train = Texts(2, 3, 500);
  train.push_back(eval[2]);
  const Dataset& suite = Suite("general-english", eval);
  const Dataset& source = Source("acme-tickets", train);
  const Dataset& other = Source("wiki-dump", Texts(3, 3, 500));

  const std::string summary = Check({&suite}, {&source, &other}).Summary();
  EXPECT_THAT(summary,
              AllOf(HasSubstr("contamination check: CONTAMINATED, 1 of 2 (eval suite, training "
                              "source) pairs contaminated"),
                    HasSubstr("more than 50% of its 50-grams"),
                    HasSubstr(absl::StrCat(
                        "\neval suite general-english (held-out split) vs training source "
                        "acme-tickets (train split): 1 of 4 held-out documents are exact copies "
                        "of training documents; 1 share 50-token spans (25.0% of held-out "
                        "50-grams); 1 contaminated, e.g. ",
                        Prefix12(eval[2]))),
                    HasSubstr("\neval suite general-english (held-out split) vs training source "
                              "wiki-dump (train split): 0 of 4 held-out documents are exact "
                              "copies of training documents; 0 share 50-token spans (0.0% of "
                              "held-out 50-grams); 0 contaminated")));

  const std::string clean = Check({&suite}, {&other}).Summary();
  EXPECT_THAT(clean, HasSubstr("contamination check: clean, 0 of 1"));
}

TEST_F(ContaminationTest, PairsFollowTheGivenOrderAndCountsStayWithTheirPair) {
  const std::vector<std::string> a_texts = Texts(1, 5, 300), b_texts = Texts(2, 6, 300);
  const Dataset& suite_b = Suite("suite-b", b_texts);
  const Dataset& suite_a = Suite("suite-a", a_texts);
  const Dataset& src_y = Source("src-y", {a_texts[0], b_texts[1], b_texts[2]});
  const Dataset& src_x = Source("src-x", Texts(3, 5, 400));
  const Dataset& src_z = Source("src-z", {"\n" + a_texts[4] + "\n", "filler"});

  const ContaminationReport report = Check({&suite_b, &suite_a}, {&src_y, &src_x, &src_z});
  ASSERT_EQ(report.pairs.size(), 6u);
  std::vector<std::string> order;
  std::vector<int64_t> contaminated, exact;
  for (const SuiteSourceOverlap& p : report.pairs) {
    order.push_back(p.suite + "/" + p.source);
    contaminated.push_back(p.contaminated_documents);
    exact.push_back(p.exact_duplicates);
  }
  EXPECT_THAT(order, ElementsAre("suite-b/src-y", "suite-b/src-x", "suite-b/src-z", "suite-a/src-y",
                                 "suite-a/src-x", "suite-a/src-z"));
  EXPECT_THAT(contaminated, ElementsAre(2, 0, 0, 1, 0, 1));
  EXPECT_THAT(exact, ElementsAre(2, 0, 0, 1, 0, 0));
  EXPECT_EQ(report.pairs[0].heldout_documents, 6);
  EXPECT_EQ(report.pairs[3].heldout_documents, 5);
  EXPECT_THAT(report.pairs[5].examples, ElementsAre(Prefix12(a_texts[4])));
}

TEST_F(ContaminationTest, MaxTrainTokensScannedBoundsTheNgramSearchNotTheHashes) {
  const std::vector<std::string> eval = Texts(1, 3, 300);
  std::vector<std::string> train = Texts(2, 4, 1000);  // 4000 + 60 tokens
  train.push_back(eval[0]);                            // exact copy, after the cap
  train.push_back("\n" + eval[1] + "\n");              // embedded copy, after the cap
  const Dataset& suite = Suite("general-english", eval);
  const Dataset& source = Source("acme-tickets", train);

  ContaminationOptions capped;
  capped.max_train_tokens_scanned = 4060;
  const ContaminationReport report = Check({&suite}, {&source}, capped);
  ASSERT_EQ(report.pairs.size(), 1u);
  EXPECT_EQ(report.pairs[0].train_tokens_scanned, 4060);
  EXPECT_EQ(report.pairs[0].train_tokens, 4060 + 300 + 312);
  EXPECT_EQ(report.pairs[0].exact_duplicates, 1);
  EXPECT_EQ(report.pairs[0].documents_with_overlap, 0);
  EXPECT_EQ(report.pairs[0].contaminated_documents, 1);
  EXPECT_THAT(report.Summary(), HasSubstr("in the first 4060 of 4672 training tokens only"));

  const ContaminationReport full = Check({&suite}, {&source});
  ASSERT_EQ(full.pairs.size(), 1u);
  EXPECT_EQ(full.pairs[0].train_tokens_scanned, 4672);
  EXPECT_EQ(full.pairs[0].documents_with_overlap, 2);
  EXPECT_EQ(full.pairs[0].contaminated_documents, 2);
  EXPECT_THAT(full.Summary(), Not(HasSubstr("training tokens only")));
}

TEST_F(ContaminationTest, NothingToCompare) {
  const Dataset& suite = Suite("general-english", Texts(1, 3, 300));
  const ContaminationReport report = Check({&suite}, {});
  EXPECT_THAT(report.pairs, IsEmpty());
  EXPECT_FALSE(report.contaminated());
  EXPECT_THAT(report.Summary(), HasSubstr("clean, 0 of 0"));

  // A source-only dataset as a suite has no held-out documents.
  const Dataset& source = Source("acme-tickets", Texts(2, 3, 300));
  const ContaminationReport empty_suite = Check({&source}, {&source});
  ASSERT_EQ(empty_suite.pairs.size(), 1u);
  EXPECT_EQ(empty_suite.pairs[0].heldout_documents, 0);
  EXPECT_FALSE(empty_suite.contaminated());
}

TEST_F(ContaminationTest, RejectsBadArguments) {
  const Dataset& suite = Suite("general-english", Texts(1, 2, 100));
  auto code = [&](ContaminationOptions o, std::vector<const Dataset*> suites = {},
                  std::vector<const Dataset*> sources = {}) {
    if (suites.empty()) suites = {&suite};
    if (sources.empty()) sources = {&suite};
    return CheckContamination(suites, sources, o).status().code();
  };
  ContaminationOptions o;
  EXPECT_EQ(code(o), absl::StatusCode::kOk);
  o.ngram = 0;
  EXPECT_EQ(code(o), absl::StatusCode::kInvalidArgument);
  o = {};
  o.max_overlap = 1.0;
  EXPECT_EQ(code(o), absl::StatusCode::kInvalidArgument);
  o.max_overlap = -0.1;
  EXPECT_EQ(code(o), absl::StatusCode::kInvalidArgument);
  o = {};
  o.max_train_tokens_scanned = -1;
  EXPECT_EQ(code(o), absl::StatusCode::kInvalidArgument);
  absl::Status null_source = CheckContamination({&suite}, {&suite, nullptr}, {}).status();
  EXPECT_EQ(null_source.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(null_source.message(), HasSubstr("training_sources[1] is null"));
}

// Not a unit test: a timing to read, run with --gtest_also_run_disabled_tests
// --gtest_filter='*Speed*'. 50 MB of training tokens against 1 MB of held-out tokens.
TEST_F(ContaminationTest, DISABLED_Speed) {
  std::mt19937_64 rng(23);
  std::vector<std::string> eval, train;
  for (int i = 0; i < 1000; ++i) eval.push_back(RandomText(rng, 1000));
  for (int i = 0; i < 12500; ++i) train.push_back(RandomText(rng, 4000));
  for (int i = 0; i < 10; ++i) train[i * 1000] = "\n" + eval[i * 100] + "\n";
  const Dataset& suite = Suite("general-english", eval);
  const Dataset& source = Source("acme-tickets", train);

  for (int run = 0; run < 3; ++run) {  // the first run also faults the shards in
    const auto start = std::chrono::steady_clock::now();
    const ContaminationReport report = Check({&suite}, {&source});
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_EQ(report.pairs.size(), 1u);
    EXPECT_EQ(report.pairs[0].contaminated_documents, 10);
    std::printf(
        "contamination run %d: %lld held-out tokens vs %lld training tokens (n=%d): "
        "%.3f s, %.1f M training tokens/s\n",
        run, static_cast<long long>(suite.num_tokens()),
        static_cast<long long>(source.num_tokens()), kN, seconds,
        static_cast<double>(source.num_tokens()) / seconds / 1e6);
  }
}

}  // namespace
}  // namespace forge::coordinator
