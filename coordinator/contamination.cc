#include "coordinator/contamination.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"

namespace forge::coordinator {
namespace {

// N-gram hashing: a polynomial hash modulo the Mersenne prime p = 2^61 - 1, rolled one token
// at a time (two 64x64->128-bit multiplies per position). Two different n-grams collide with
// probability about 1/2^61 (at most n/2^61 over bases), so H distinct held-out n-grams against
// T training positions give about H*T/2^61 false matches: 0.004 for 1e6 held-out n-grams
// (1 MB) against 1e10 training tokens. A false match adds one n-gram to one document's count.
// The base is fixed so that the same data always gives the same report.
constexpr uint64_t kPrime = (uint64_t{1} << 61) - 1;
constexpr uint64_t kBase = 0x0a5c3e1f27d94b6bULL % kPrime;

// x mod p, for x < 2^63.
inline uint64_t Reduce(uint64_t x) {
  x = (x & kPrime) + (x >> 61);
  return x >= kPrime ? x - kPrime : x;
}

// a * b mod p, for a, b < p.
inline uint64_t MulMod(uint64_t a, uint64_t b) {
  const unsigned __int128 product = static_cast<unsigned __int128>(a) * b;
  return Reduce((static_cast<uint64_t>(product) & kPrime) + static_cast<uint64_t>(product >> 61));
}

class RollingHash {
 public:
  explicit RollingHash(int n) : n_(static_cast<size_t>(n)) {
    for (uint64_t e = n_, b = kBase; e > 0; e >>= 1, b = MulMod(b, b)) {
      if (e & 1) base_pow_n_ = MulMod(base_pow_n_, b);
    }
  }

  // Calls fn(hash) for each n-gram of `tokens`, in order: sum of (t_i + 1) * base^(n-1-i).
  template <typename Fn>
  void ForEach(absl::Span<const uint16_t> tokens, Fn&& fn) const {
    if (tokens.size() < n_) return;
    uint64_t h = 0;
    for (size_t i = 0; i < n_; ++i) h = Reduce(MulMod(h, kBase) + tokens[i] + 1);
    fn(h);
    for (size_t i = n_; i < tokens.size(); ++i) {
      const uint64_t out = MulMod(uint64_t{tokens[i - n_]} + 1, base_pow_n_);
      h = Reduce(MulMod(h, kBase) + (uint64_t{tokens[i]} + 1) + (kPrime - out));
      fn(h);
    }
  }

 private:
  size_t n_;
  uint64_t base_pow_n_ = 1;
};

// MurmurHash3's 64-bit finalizer: spreads the hash's bits for the bitmap index.
inline uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

// The held-out n-grams of all suites: n-gram hash -> (held-out document, occurrences in it).
// A bitmap of 16 to 32 bits per distinct n-gram (at most 2^31 bits) answers at least 15 of
// 16 misses before the hash map is probed; for 1e6 n-grams it takes 2 MB.
class NgramIndex {
 public:
  struct Posting {
    uint32_t doc;    // index into the held-out documents of all suites
    uint32_t count;  // occurrences of the n-gram in that document
  };

  // `occurrences`: (hash, doc) for every n-gram position; consumed.
  explicit NgramIndex(std::vector<std::pair<uint64_t, uint32_t>> occurrences) {
    std::sort(occurrences.begin(), occurrences.end());
    size_t distinct = 0;
    for (size_t i = 0; i < occurrences.size(); ++i) {
      distinct += i == 0 || occurrences[i].first != occurrences[i - 1].first;
    }
    const int bits = std::clamp(static_cast<int>(std::bit_width(distinct * 16)), 16, 31);
    shift_ = 64 - bits;
    filter_.assign((size_t{1} << bits) / 64, 0);
    entry_of_.reserve(distinct);
    begin_.reserve(distinct + 1);
    for (size_t i = 0; i < occurrences.size(); ++i) {
      const auto [hash, doc] = occurrences[i];
      if (i == 0 || hash != occurrences[i - 1].first) {
        const uint64_t bit = Mix(hash) >> shift_;
        filter_[bit / 64] |= uint64_t{1} << (bit % 64);
        entry_of_.emplace(hash, static_cast<uint32_t>(begin_.size()));
        begin_.push_back(static_cast<uint32_t>(postings_.size()));
      }
      if (postings_.size() > begin_.back() && postings_.back().doc == doc) {
        ++postings_.back().count;
      } else {
        postings_.push_back({doc, 1});
      }
    }
    begin_.push_back(static_cast<uint32_t>(postings_.size()));
  }

  bool empty() const { return entry_of_.empty(); }
  size_t num_entries() const { return entry_of_.size(); }

  // False when `hash` is certainly not in the index (most misses end here).
  bool MaybeContains(uint64_t hash) const {
    const uint64_t bit = Mix(hash) >> shift_;
    return (filter_[bit / 64] >> (bit % 64) & 1) != 0;
  }
  // The entry of `hash`, or -1.
  int64_t Find(uint64_t hash) const {
    if (!MaybeContains(hash)) return -1;
    auto it = entry_of_.find(hash);
    return it == entry_of_.end() ? -1 : static_cast<int64_t>(it->second);
  }

  absl::Span<const Posting> postings(int64_t entry) const {
    return absl::MakeConstSpan(postings_).subspan(begin_[entry], begin_[entry + 1] - begin_[entry]);
  }

 private:
  int shift_ = 64;
  std::vector<uint64_t> filter_;
  absl::flat_hash_map<uint64_t, uint32_t> entry_of_;
  std::vector<uint32_t> begin_;  // entry e's postings are [begin_[e], begin_[e + 1])
  std::vector<Posting> postings_;
};

struct HeldOutDoc {
  int64_t index;   // in its suite's Dataset
  int64_t ngrams;  // positions; 0 when shorter than the n-gram
};

absl::Status Validate(const std::vector<const Dataset*>& suites,
                      const std::vector<const Dataset*>& sources,
                      const ContaminationOptions& options) {
  if (options.ngram < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("contamination: ngram must be >= 1 token (got ", options.ngram, ")"));
  }
  if (!(options.max_overlap >= 0 && options.max_overlap < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "contamination: max_overlap must be in [0, 1) (got ", options.max_overlap, ")"));
  }
  if (options.max_train_tokens_scanned < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("contamination: max_train_tokens_scanned must be >= 0, 0 for all (got ",
                     options.max_train_tokens_scanned, ")"));
  }
  for (const auto* list : {&suites, &sources}) {
    const char* what = list == &suites ? "eval_suites" : "training_sources";
    for (size_t i = 0; i < list->size(); ++i) {
      if ((*list)[i] == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("contamination: ", what, "[", i, "] is null"));
      }
    }
  }
  for (const Dataset* suite : suites) {
    for (const Dataset* source : sources) {
      if (suite->vocab_size() != source->vocab_size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "contamination: eval suite ", suite->name(), " has vocab size ", suite->vocab_size(),
            " but training source ", source->name(), " has ", source->vocab_size(),
            "; their tokens cannot be compared (prepare both with the same tokenizer)"));
      }
    }
  }
  return absl::OkStatus();
}

std::string Percent(double fraction) {
  if (fraction > 0 && fraction < 0.001) return "<0.1%";
  return absl::StrFormat("%.1f%%", 100 * fraction);
}

}  // namespace

absl::StatusOr<ContaminationReport> CheckContamination(
    const std::vector<const Dataset*>& eval_suites,
    const std::vector<const Dataset*>& training_sources, const ContaminationOptions& options) {
  if (absl::Status s = Validate(eval_suites, training_sources, options); !s.ok()) return s;
  ContaminationReport report;
  report.ngram = options.ngram;
  report.max_overlap = options.max_overlap;
  if (eval_suites.empty() || training_sources.empty()) return report;

  // Index the held-out documents of all suites at once, so that each source is read once.
  const int64_t n = options.ngram;
  const RollingHash hasher(options.ngram);
  std::vector<HeldOutDoc> docs;
  std::vector<size_t> suite_begin;  // suite s's documents are [suite_begin[s], [s + 1])
  std::vector<std::pair<uint64_t, uint32_t>> occurrences;
  absl::flat_hash_map<std::string, std::vector<uint32_t>> docs_by_hash;
  constexpr int64_t kMaxNgrams = int64_t{1} << 31;
  for (const Dataset* suite : eval_suites) {
    suite_begin.push_back(docs.size());
    for (int64_t i : suite->Documents(Split::kHeldOut)) {
      const absl::Span<const uint16_t> tokens = suite->Document(i);
      const int64_t ngrams = std::max<int64_t>(0, static_cast<int64_t>(tokens.size()) - n + 1);
      if (static_cast<int64_t>(occurrences.size()) + ngrams >= kMaxNgrams) {
        return absl::ResourceExhaustedError(
            absl::StrCat("contamination: the eval suites hold more than 2^31 held-out ", n,
                         "-grams (at eval suite ", suite->name(), "); split the check by suite"));
      }
      const auto id = static_cast<uint32_t>(docs.size());
      docs.push_back({i, ngrams});
      docs_by_hash[suite->DocumentHash(i)].push_back(id);
      hasher.ForEach(tokens, [&](uint64_t h) { occurrences.emplace_back(h, id); });
    }
  }
  suite_begin.push_back(docs.size());
  const NgramIndex index(std::move(occurrences));

  // shared[d]: n-gram positions of held-out document d whose n-gram occurs in the current
  // source. Each distinct n-gram is credited once per source (last_source[entry]), with its
  // occurrence count, so shared[d] <= docs[d].ngrams.
  std::vector<int32_t> last_source(index.num_entries(), -1);
  std::vector<std::vector<SuiteSourceOverlap>> by_suite(eval_suites.size());
  for (size_t src = 0; src < training_sources.size(); ++src) {
    const Dataset& source = *training_sources[src];
    std::vector<int64_t> shared(docs.size(), 0);
    std::vector<bool> exact(docs.size(), false);
    int64_t budget = options.max_train_tokens_scanned > 0 ? options.max_train_tokens_scanned
                                                          : source.SplitTokens(Split::kTrain);
    int64_t scanned = 0;
    // N-grams are probed in batches: the bitmap loads of a batch do not depend on each other,
    // so their cache misses overlap.
    std::array<uint64_t, 512> batch;
    size_t batched = 0;
    auto flush = [&] {
      for (size_t k = 0; k < batched; ++k) {
        if (!index.MaybeContains(batch[k])) continue;
        const int64_t entry = index.Find(batch[k]);
        if (entry < 0 || last_source[entry] == static_cast<int32_t>(src)) continue;
        last_source[entry] = static_cast<int32_t>(src);
        for (const NgramIndex::Posting& p : index.postings(entry)) shared[p.doc] += p.count;
      }
      batched = 0;
    };
    for (int64_t i : source.Documents(Split::kTrain)) {
      if (auto it = docs_by_hash.find(source.DocumentHash(i)); it != docs_by_hash.end()) {
        for (uint32_t d : it->second) exact[d] = true;
      }
      if (budget <= 0) continue;  // keep comparing hashes: they cost no token reads
      absl::Span<const uint16_t> tokens = source.Document(i);
      tokens = tokens.subspan(0, static_cast<size_t>(std::min<int64_t>(budget, tokens.size())));
      budget -= static_cast<int64_t>(tokens.size());
      scanned += static_cast<int64_t>(tokens.size());
      if (index.empty()) continue;
      hasher.ForEach(tokens, [&](uint64_t h) {
        batch[batched++] = h;
        if (batched == batch.size()) flush();
      });
    }
    flush();

    for (size_t s = 0; s < eval_suites.size(); ++s) {
      const Dataset& suite = *eval_suites[s];
      SuiteSourceOverlap& pair = by_suite[s].emplace_back();
      pair.suite = suite.name();
      pair.source = source.name();
      pair.train_tokens_scanned = scanned;
      pair.train_tokens = source.SplitTokens(Split::kTrain);
      for (size_t d = suite_begin[s]; d < suite_begin[s + 1]; ++d) {
        const HeldOutDoc& doc = docs[d];
        ++pair.heldout_documents;
        pair.heldout_ngrams += doc.ngrams;
        pair.shared_ngrams += shared[d];
        pair.exact_duplicates += exact[d];
        pair.documents_with_overlap += shared[d] > 0;
        const bool over =
            doc.ngrams > 0 &&
            static_cast<double>(shared[d]) > options.max_overlap * static_cast<double>(doc.ngrams);
        if (exact[d] || over) {
          ++pair.contaminated_documents;
          if (pair.examples.size() < 3) {
            pair.examples.push_back(suite.DocumentHash(doc.index).substr(0, 12));
          }
        }
      }
      pair.ngram_overlap = pair.heldout_ngrams > 0 ? static_cast<double>(pair.shared_ngrams) /
                                                         static_cast<double>(pair.heldout_ngrams)
                                                   : 0.0;
    }
  }
  for (std::vector<SuiteSourceOverlap>& pairs : by_suite) {
    for (SuiteSourceOverlap& pair : pairs) report.pairs.push_back(std::move(pair));
  }
  return report;
}

bool ContaminationReport::contaminated() const {
  return std::any_of(pairs.begin(), pairs.end(),
                     [](const SuiteSourceOverlap& p) { return p.contaminated_documents > 0; });
}

std::string ContaminationReport::Summary() const {
  const int64_t bad = std::count_if(pairs.begin(), pairs.end(), [](const SuiteSourceOverlap& p) {
    return p.contaminated_documents > 0;
  });
  std::string out = absl::StrFormat(
      "contamination check: %s, %d of %d (eval suite, training source) pairs contaminated "
      "(held-out split vs train split; a held-out document is contaminated when it is an "
      "exact copy of a training document or more than %g%% of its %d-grams occur in the "
      "training source)",
      bad > 0 ? "CONTAMINATED" : "clean", bad, pairs.size(), 100 * max_overlap, ngram);
  for (const SuiteSourceOverlap& p : pairs) {
    absl::StrAppendFormat(
        &out,
        "\neval suite %s (held-out split) vs training source %s (train split): %d of %d "
        "held-out documents are exact copies of training documents; %d share %d-token spans "
        "(%s of held-out %d-grams); %d contaminated",
        p.suite, p.source, p.exact_duplicates, p.heldout_documents, p.documents_with_overlap, ngram,
        Percent(p.ngram_overlap), ngram, p.contaminated_documents);
    if (!p.examples.empty()) absl::StrAppend(&out, ", e.g. ", absl::StrJoin(p.examples, ", "));
    if (p.train_tokens_scanned < p.train_tokens) {
      absl::StrAppendFormat(&out, "; spans searched in the first %d of %d training tokens only",
                            p.train_tokens_scanned, p.train_tokens);
    }
  }
  return out;
}

}  // namespace forge::coordinator
