#include "worker/engine/mixture_sampler.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace forge::engine {
namespace {

constexpr int kMaxSources = 64;
constexpr int kMaxSchedulePoints = 64;

// Domain tags keep the hash streams of different decisions independent.
constexpr uint64_t kTagSlots = 1;
constexpr uint64_t kTagOffset = 2;
constexpr uint64_t kTagDocuments = 3;

// splitmix64's finaliser: a bijective 64-bit mixer with full avalanche.
uint64_t Mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Counter-based hash of a tuple; every decision is keyed by one, so none depends on call order.
uint64_t Hash(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x6a09e667f3bcc908ULL;
  for (uint64_t v : values) h = Mix(h ^ Mix(v));
  return h;
}

double Uniform01(uint64_t h) { return static_cast<double>(h >> 11) * 0x1.0p-53; }

// FNV-1a: a stable key for a source name (independent of the source's index in the mixture).
uint64_t NameKey(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// The keyed pseudo-random permutation of [0, n) evaluated at x (REQUIRES: x < n). A 4-round
// Feistel network on the smallest even-bit power of two >= n, cycle-walked back into [0, n):
// O(1) memory, so neither documents nor slots need a materialised shuffle.
uint64_t Permute(uint64_t key, uint64_t x, uint64_t n) {
  int bits = 2;
  while ((uint64_t{1} << bits) < n) ++bits;
  bits += bits & 1;
  const int half = bits / 2;
  const uint64_t mask = (uint64_t{1} << half) - 1;
  do {
    uint64_t left = x >> half, right = x & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      const uint64_t f = Mix(Mix(key + round) ^ right) & mask;
      const uint64_t next_right = left ^ f;
      left = right;
      right = next_right;
    }
    x = (left << half) | right;
  } while (x >= n);
  return x;
}

// Cumulative weights; the last source with positive weight gets +inf so rounding can never
// push a draw past it, and zero-weight sources can never be chosen.
std::vector<double> Cumulative(const std::vector<double>& weights) {
  std::vector<double> cumulative(weights.size());
  double sum = 0;
  size_t last_positive = 0;
  for (size_t s = 0; s < weights.size(); ++s) {
    sum += weights[s];
    cumulative[s] = sum;
    if (weights[s] > 0) last_positive = s;
  }
  cumulative[last_positive] = std::numeric_limits<double>::infinity();
  return cumulative;
}

absl::Status Invalid(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("mixture sampler: ", message));
}

absl::Status ValidateOptions(const MixtureOptions& o) {
  if (o.total_steps < 1)
    return Invalid(absl::StrCat("train.steps must be >= 1 (got ", o.total_steps, ")"));
  if (o.seq_len < 1)
    return Invalid(absl::StrCat("train.seq_len must be >= 1 (got ", o.seq_len, ")"));
  if (o.world_size < 1) {
    return Invalid(absl::StrCat("resources.ranks must be >= 1 (got ", o.world_size, ")"));
  }
  if (o.rank < 0 || o.rank >= o.world_size) {
    return Invalid(absl::StrCat("rank must be in [0, resources.ranks = ", o.world_size, ") (got ",
                                o.rank, ")"));
  }
  if (o.sequences_per_rank < 1) {
    return Invalid(absl::StrCat(
        "sequences_per_rank (train.batch_tokens / (train.seq_len * resources.ranks)) must be "
        ">= 1 (got ",
        o.sequences_per_rank, ")"));
  }
  if (o.separator_token < 0) {
    return Invalid(absl::StrCat("separator_token must be >= 0 (got ", o.separator_token, ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateSources(const std::vector<MixtureSource>& sources) {
  if (sources.empty() || sources.size() > kMaxSources) {
    return Invalid(absl::StrCat("data.mixture must have 1..", kMaxSources, " datasets (got ",
                                sources.size(), ")"));
  }
  std::set<std::string> names;
  for (size_t i = 0; i < sources.size(); ++i) {
    const MixtureSource& src = sources[i];
    const std::string field = absl::StrCat("data.mixture[", i, "]");
    if (src.name.empty()) return Invalid(absl::StrCat(field, ".dataset must not be empty"));
    if (!names.insert(src.name).second) {
      return Invalid(absl::StrCat(field, ".dataset: '", src.name, "' is listed twice"));
    }
    if (!(src.weight > 0) || !std::isfinite(src.weight)) {
      return Invalid(absl::StrCat(field, ".weight must be > 0 and finite (got ", src.weight, ")"));
    }
    if (src.documents == nullptr || src.documents->num_documents() <= 0) {
      return Invalid(absl::StrCat(field, ".dataset: '", src.name, "' has no training documents"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSchedule(const std::vector<MixtureSchedulePoint>& schedule,
                              const std::vector<MixtureSource>& sources) {
  if (schedule.size() > kMaxSchedulePoints) {
    return Invalid(absl::StrCat("data.schedule must have at most ", kMaxSchedulePoints,
                                " points (got ", schedule.size(), ")"));
  }
  for (size_t k = 0; k < schedule.size(); ++k) {
    const MixtureSchedulePoint& point = schedule[k];
    const std::string field = absl::StrCat("data.schedule[", k, "]");
    if (!(point.at >= 0 && point.at <= 1)) {
      return Invalid(absl::StrCat(field, ".at must be in [0, 1] (got ", point.at, ")"));
    }
    if (k > 0 && !(point.at > schedule[k - 1].at)) {
      return Invalid(absl::StrCat(field, ".at must be greater than data.schedule[", k - 1,
                                  "].at (got ", point.at, " after ", schedule[k - 1].at, ")"));
    }
    double sum = 0;
    for (const auto& [name, weight] : point.weights) {
      const std::string wfield = absl::StrCat(field, ".weights.", name);
      const bool known = std::any_of(sources.begin(), sources.end(),
                                     [&](const MixtureSource& s) { return s.name == name; });
      if (!known) return Invalid(absl::StrCat(wfield, ": not a dataset of data.mixture"));
      if (!(weight >= 0) || !std::isfinite(weight)) {
        return Invalid(absl::StrCat(wfield, " must be >= 0 and finite (got ", weight, ")"));
      }
      sum += weight;
    }
    if (!(sum > 0)) return Invalid(absl::StrCat(field, ".weights must have a positive sum"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MixtureSampler> MixtureSampler::Create(MixtureOptions options,
                                                      std::vector<MixtureSource> sources) {
  RETURN_IF_ERROR(ValidateSources(sources));
  RETURN_IF_ERROR(ValidateOptions(options));
  RETURN_IF_ERROR(ValidateSchedule(options.schedule, sources));
  return MixtureSampler(std::move(options), std::move(sources));
}

MixtureSampler::MixtureSampler(MixtureOptions options, std::vector<MixtureSource> sources)
    : options_(std::move(options)), sources_(std::move(sources)) {
  for (const MixtureSource& src : sources_) name_keys_.push_back(NameKey(src.name));
  for (const MixtureSchedulePoint& point : options_.schedule) {
    std::vector<double> row(sources_.size(), 0.0);
    for (size_t s = 0; s < sources_.size(); ++s) {
      auto it = point.weights.find(sources_[s].name);
      if (it != point.weights.end()) row[s] = it->second;
    }
    schedule_weights_.push_back(std::move(row));
  }
  for (const MixtureSource& src : sources_) {
    SourceCursor c;
    c.name = src.name;
    c.num_documents = src.documents->num_documents();
    // Rank r starts at document k = r of the endless stream of passes.
    c.pass = options_.rank / c.num_documents;
    c.position = options_.rank % c.num_documents;
    cursors_.push_back(std::move(c));
  }
}

std::vector<double> MixtureSampler::WeightsAt(int64_t step) const {
  std::vector<double> w;
  const auto& at = options_.schedule;
  if (at.empty()) {
    for (const MixtureSource& src : sources_) w.push_back(src.weight);
  } else {
    const double f = static_cast<double>(step) / static_cast<double>(options_.total_steps);
    if (f <= at.front().at) {
      w = schedule_weights_.front();
    } else if (f >= at.back().at) {
      w = schedule_weights_.back();
    } else {
      size_t k = 0;
      while (!(f < at[k + 1].at)) ++k;  // at[k] <= f < at[k + 1]
      const double t = (f - at[k].at) / (at[k + 1].at - at[k].at);
      w.resize(sources_.size());
      for (size_t s = 0; s < w.size(); ++s) {
        w[s] = (1 - t) * schedule_weights_[k][s] + t * schedule_weights_[k + 1][s];
      }
    }
  }
  double sum = 0;
  for (double x : w) sum += x;
  for (double& x : w) x /= sum;
  return w;
}

int MixtureSampler::Choose(int64_t step, int64_t slot,
                           const std::vector<double>& cumulative) const {
  const uint64_t n = static_cast<uint64_t>(options_.world_size) * options_.sequences_per_rank;
  const uint64_t step_key = static_cast<uint64_t>(step);
  const uint64_t stratum = Permute(Hash({options_.seed, kTagSlots, step_key}), slot, n);
  // A golden-ratio Weyl sequence from a seeded start: over any run of steps the offsets are
  // spread evenly, so the rounding errors of consecutive steps cancel instead of adding up.
  const double offset =
      Uniform01(Hash({options_.seed, kTagOffset}) + step_key * 0x9e3779b97f4a7c15ULL);
  const double u = (static_cast<double>(stratum) + offset) / static_cast<double>(n);
  int s = 0;
  while (!(u < cumulative[s])) ++s;  // terminates: Cumulative puts +inf on a source
  return s;
}

int MixtureSampler::SourceOf(int64_t step, int32_t rank, int32_t position) const {
  return Choose(step, static_cast<int64_t>(rank) * options_.sequences_per_rank + position,
                Cumulative(WeightsAt(step)));
}

int64_t MixtureSampler::DocumentAt(int s, int64_t pass, int64_t position) const {
  const uint64_t key =
      Hash({options_.seed, kTagDocuments, name_keys_[s], static_cast<uint64_t>(pass)});
  return static_cast<int64_t>(Permute(key, position, cursors_[s].num_documents));
}

void MixtureSampler::Advance(int s, int64_t n, int32_t* out) {
  SourceCursor& c = cursors_[s];
  const DocumentSource& docs = *sources_[s].documents;
  while (n > 0) {
    const absl::Span<const uint16_t> doc = docs.document(DocumentAt(s, c.pass, c.position));
    const int64_t size = static_cast<int64_t>(doc.size());
    if (c.offset < size) {
      const int64_t m = std::min(n, size - c.offset);
      if (out != nullptr) {
        std::copy(doc.begin() + c.offset, doc.begin() + c.offset + m, out);
        out += m;
      }
      c.offset += m;
      n -= m;
    } else {  // the separator, then this rank's next document: k += world_size
      if (out != nullptr) *out++ = options_.separator_token;
      --n;
      const int64_t k = c.position + options_.world_size;
      c.pass += k / c.num_documents;
      c.position = k % c.num_documents;
      c.offset = 0;
    }
  }
}

int32_t MixtureSampler::Peek(int s) const {
  const SourceCursor& c = cursors_[s];
  const absl::Span<const uint16_t> doc =
      sources_[s].documents->document(DocumentAt(s, c.pass, c.position));
  return c.offset < static_cast<int64_t>(doc.size()) ? doc[c.offset] : options_.separator_token;
}

absl::Status MixtureSampler::NextBatch(int64_t step, absl::Span<int32_t> inputs,
                                       absl::Span<int32_t> targets,
                                       std::vector<int>* source_of_sequence) {
  if (step != next_step_) {
    return absl::FailedPreconditionError(
        absl::StrCat("mixture sampler: asked for step ", step, " but the next step is ", next_step_,
                     " (steps must be consecutive; restore a saved state to resume)"));
  }
  const int64_t len = options_.seq_len;
  const int64_t batch = options_.sequences_per_rank;
  if (inputs.size() != static_cast<size_t>(batch * len) ||
      targets.size() != static_cast<size_t>(batch * len)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mixture sampler: inputs and targets must hold sequences_per_rank * seq_len = ",
        batch * len, " tokens (got ", inputs.size(), " and ", targets.size(), ")"));
  }
  const std::vector<double> cumulative = Cumulative(WeightsAt(step));
  if (source_of_sequence != nullptr) source_of_sequence->resize(batch);
  for (int64_t i = 0; i < batch; ++i) {
    const int s = Choose(step, options_.rank * batch + i, cumulative);
    int32_t* in = inputs.data() + i * len;
    int32_t* tg = targets.data() + i * len;
    Advance(s, len, in);
    std::copy(in + 1, in + len, tg);
    tg[len - 1] = Peek(s);
    cursors_[s].tokens += len;
    cursors_[s].sequences += 1;
    if (source_of_sequence != nullptr) (*source_of_sequence)[i] = s;
  }
  ++next_step_;
  return absl::OkStatus();
}

SamplerState MixtureSampler::state() const {
  SamplerState st;
  st.seed = options_.seed;
  st.world_size = options_.world_size;
  st.rank = options_.rank;
  st.next_step = next_step_;
  st.sources = cursors_;
  return st;
}

absl::Status MixtureSampler::Restore(const SamplerState& st) {
  auto mismatch = [](const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat("mixture sampler state: ", what));
  };
  auto invalid = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("mixture sampler state: ", what));
  };
  if (st.seed != options_.seed) {
    return mismatch(absl::StrCat("seed ", st.seed, " differs from train.seed ", options_.seed));
  }
  if (st.world_size != options_.world_size || st.rank != options_.rank) {
    return mismatch(absl::StrCat("saved for rank ", st.rank, " of ", st.world_size,
                                 ", this is rank ", options_.rank, " of ", options_.world_size));
  }
  if (st.next_step < 0) return invalid(absl::StrCat("next_step ", st.next_step, " < 0"));
  std::vector<SourceCursor> restored(sources_.size());
  std::vector<bool> seen(sources_.size(), false);
  for (const SourceCursor& c : st.sources) {
    const std::string where = absl::StrCat("source '", c.name, "'");
    size_t s = 0;
    while (s < sources_.size() && sources_[s].name != c.name) ++s;
    if (s == sources_.size()) return mismatch(absl::StrCat(where, " is not in data.mixture"));
    if (seen[s]) return invalid(absl::StrCat(where, " is listed twice"));
    seen[s] = true;
    const int64_t d = cursors_[s].num_documents;
    if (c.num_documents != d) {
      return mismatch(absl::StrCat(where, " had ", c.num_documents,
                                   " training documents when saved; the dataset has ", d));
    }
    if (c.pass < 0 || c.position < 0 || c.position >= d || c.offset < 0 || c.tokens < 0 ||
        c.sequences < 0) {
      return invalid(absl::StrCat(where, ": cursor out of range (pass ", c.pass, ", position ",
                                  c.position, " of ", d, ", offset ", c.offset, ", tokens ",
                                  c.tokens, ", sequences ", c.sequences, ")"));
    }
    const int64_t w = options_.world_size;
    if (((c.pass % w) * (d % w) + c.position) % w != options_.rank) {
      return invalid(absl::StrCat(where, ": document ", c.position, " of pass ", c.pass,
                                  " belongs to another rank"));
    }
    const int64_t size = static_cast<int64_t>(
        sources_[s].documents->document(DocumentAt(s, c.pass, c.position)).size());
    if (c.offset > size) {
      return invalid(absl::StrCat(where, ": offset ", c.offset, " past the end of its ", size,
                                  "-token document"));
    }
    restored[s] = c;
  }
  for (size_t s = 0; s < sources_.size(); ++s) {
    if (!seen[s]) return mismatch(absl::StrCat("no cursor for source '", sources_[s].name, "'"));
  }
  cursors_ = std::move(restored);
  next_step_ = st.next_step;
  return absl::OkStatus();
}

}  // namespace forge::engine
