#include "server/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <system_error>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace dartserve::metrics {
namespace {

// Debian's Abseil (20220623) predates absl/log, so this is the CHECK of this file: a programming
// error, reported with enough context to find the offending registration.
[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "dartserve::metrics: %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

bool IsValidMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

bool IsValidLabelName(absl::string_view name) {
  if (name.empty() || absl::StartsWith(name, "__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

// Returns an empty string when `bounds` are usable histogram bounds, else what is wrong.
std::string BucketProblem(const std::vector<double>& bounds) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      return absl::StrCat("bucket bound ", FormatValue(bounds[i]), " is not finite");
    }
    if (i > 0 && !(bounds[i - 1] < bounds[i])) {
      return absl::StrCat("bucket bounds are not strictly increasing at ",
                          FormatValue(bounds[i - 1]), ", ", FormatValue(bounds[i]));
    }
  }
  return "";
}

void AddToAtomic(std::atomic<double>& a, double v) {
  // std::atomic<double>::fetch_add is a compare-exchange loop; relaxed order suffices because
  // readers only need each value to be some value the metric had.
  a.fetch_add(v, std::memory_order_relaxed);
}

// Text-format escaping: backslash and line feed everywhere, double quotes in label values only
// (HELP text keeps them as they are).
void AppendEscaped(absl::string_view text, bool quotes, std::string* out) {
  for (const char c : text) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else if (c == '"' && quotes) {
      out->append("\\\"");
    } else {
      out->push_back(c);
    }
  }
}

// Appends `{a="x",b="y"}` (nothing when there are no labels). `extra_name`/`extra_value`, when
// the name is non-empty, is appended last (the histogram "le" label).
void AppendLabels(const std::vector<std::string>& names, const std::vector<std::string>& values,
                  absl::string_view extra_name, absl::string_view extra_value, std::string* out) {
  if (names.empty() && extra_name.empty()) return;
  out->push_back('{');
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out->push_back(',');
    absl::StrAppend(out, names[i], "=\"");
    AppendEscaped(values[i], /*quotes=*/true, out);
    out->push_back('"');
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out->push_back(',');
    absl::StrAppend(out, extra_name, "=\"");
    AppendEscaped(extra_value, /*quotes=*/true, out);
    out->push_back('"');
  }
  out->push_back('}');
}

void AppendSample(absl::string_view name, const std::vector<std::string>& label_names,
                  const std::vector<std::string>& label_values, absl::string_view value,
                  std::string* out) {
  out->append(name.data(), name.size());
  AppendLabels(label_names, label_values, "", "", out);
  absl::StrAppend(out, " ", value, "\n");
}

void AppendChild(const internal::FamilyBase& family, const std::vector<std::string>& values,
                 const Counter& counter, std::string* out) {
  AppendSample(family.name(), family.label_names(), values, FormatValue(counter.Value()), out);
}

void AppendChild(const internal::FamilyBase& family, const std::vector<std::string>& values,
                 const Gauge& gauge, std::string* out) {
  AppendSample(family.name(), family.label_names(), values, FormatValue(gauge.Value()), out);
}

void AppendChild(const internal::FamilyBase& family, const std::vector<std::string>& values,
                 const Histogram& histogram, std::string* out) {
  // One snapshot of the buckets, so that the +Inf bucket and _count agree in every scrape.
  const std::vector<uint64_t> cumulative = histogram.BucketCounts();
  const std::vector<double>& bounds = histogram.upper_bounds();
  const std::string bucket_name = absl::StrCat(family.name(), "_bucket");
  for (size_t i = 0; i < cumulative.size(); ++i) {
    const std::string le = i < bounds.size() ? FormatValue(bounds[i]) : "+Inf";
    out->append(bucket_name);
    AppendLabels(family.label_names(), values, "le", le, out);
    absl::StrAppend(out, " ", cumulative[i], "\n");
  }
  AppendSample(absl::StrCat(family.name(), "_sum"), family.label_names(), values,
               FormatValue(histogram.Sum()), out);
  AppendSample(absl::StrCat(family.name(), "_count"), family.label_names(), values,
               absl::StrCat(cumulative.back()), out);
}

absl::string_view TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

template <typename T>
std::unique_ptr<T> MakeChild(const std::vector<double>& histogram_bounds) {
  if constexpr (std::is_same_v<T, Histogram>) {
    return std::make_unique<Histogram>(histogram_bounds);
  } else {
    return std::make_unique<T>();
  }
}

}  // namespace

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // std::to_chars without a precision gives the shortest text that parses back to exactly `v`
  // (e.g. "0.1", "1e-300", "123"); Prometheus parses it with Go's ParseFloat.
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), v);
  if (result.ec != std::errc()) Die("cannot format a double");  // 64 bytes always suffice
  return std::string(buffer, result.ptr);
}

void Counter::Increment(double v) {
  // `!(v >= 0)` also rejects NaN.
  if (!(v >= 0)) return;
  AddToAtomic(value_, v);
}

double Counter::Value() const { return value_.load(std::memory_order_relaxed); }

void Gauge::Set(double v) { value_.store(v, std::memory_order_relaxed); }
void Gauge::Increment(double v) { AddToAtomic(value_, v); }
void Gauge::Decrement(double v) { AddToAtomic(value_, -v); }
double Gauge::Value() const { return value_.load(std::memory_order_relaxed); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      buckets_(new std::atomic<uint64_t>[upper_bounds_.size() + 1]) {
  if (const std::string problem = BucketProblem(upper_bounds_); !problem.empty()) {
    Die(absl::StrCat("Histogram: ", problem));
  }
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    buckets_[i].store(0, std::memory_order_relaxed);
  }
}

void Histogram::Observe(double v) {
  // lower_bound finds the first bound >= v, i.e. the "le" bucket. NaN compares false with every
  // bound, so it is sent to the +Inf bucket explicitly (as the Go client does).
  const size_t index =
      std::isnan(v)
          ? upper_bounds_.size()
          : static_cast<size_t>(std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), v) -
                                upper_bounds_.begin());
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  AddToAtomic(sum_, v);
}

uint64_t Histogram::Count() const {
  uint64_t count = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    count += buckets_[i].load(std::memory_order_relaxed);
  }
  return count;
}

double Histogram::Sum() const { return sum_.load(std::memory_order_relaxed); }

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> cumulative(upper_bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i < cumulative.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    cumulative[i] = running;
  }
  return cumulative;
}

template <typename T>
Family<T>::Family(std::string name, std::string help, MetricType type,
                  std::vector<std::string> label_names, std::vector<double> histogram_bounds)
    : internal::FamilyBase(std::move(name), std::move(help), type, std::move(label_names)),
      histogram_bounds_(std::move(histogram_bounds)) {}

template <typename T>
T& Family<T>::WithLabels(const std::vector<std::string>& values) {
  if (values.size() != label_names().size()) {
    Die(absl::StrCat("metric ", name(), " has ", label_names().size(), " label(s) (",
                     absl::StrJoin(label_names(), ", "), ") but WithLabels got ", values.size(),
                     " value(s) (", absl::StrJoin(values, ", "), ")"));
  }
  absl::MutexLock lock(&mu_);
  if (const auto it = index_.find(values); it != index_.end()) return *it->second;
  std::unique_ptr<T> child = MakeChild<T>(histogram_bounds_);
  T& result = *child;
  children_.emplace_back(values, std::move(child));
  index_.emplace(values, &result);
  return result;
}

template <typename T>
void Family<T>::AppendTo(std::string* out) const {
  absl::MutexLock lock(&mu_);
  if (children_.empty()) return;
  absl::StrAppend(out, "# HELP ", name(), " ");
  AppendEscaped(help(), /*quotes=*/false, out);
  absl::StrAppend(out, "\n# TYPE ", name(), " ", TypeName(type()), "\n");
  // Reading the children under the family's lock only blocks child creation, never updates.
  for (const auto& [values, child] : children_) AppendChild(*this, values, *child, out);
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

internal::FamilyBase& Registry::Add(const std::string& name, const std::string& help,
                                    MetricType type, std::vector<std::string> label_names,
                                    std::vector<double> buckets) {
  if (!IsValidMetricName(name)) {
    Die(absl::StrCat("invalid metric name \"", name, "\": must match [a-zA-Z_:][a-zA-Z0-9_:]*"));
  }
  for (size_t i = 0; i < label_names.size(); ++i) {
    const std::string& label = label_names[i];
    if (!IsValidLabelName(label)) {
      Die(absl::StrCat("metric ", name, ": invalid label name \"", label,
                       "\": must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __"));
    }
    if (type == MetricType::kHistogram && label == "le") {
      Die(absl::StrCat("histogram ", name, ": the label name \"le\" is reserved for buckets"));
    }
    if (std::find(label_names.begin(), label_names.begin() + i, label) != label_names.begin() + i) {
      Die(absl::StrCat("metric ", name, ": duplicate label name \"", label, "\""));
    }
  }
  if (type == MetricType::kHistogram) {
    // The +Inf bucket is implicit; accept it written out, as the other clients do.
    if (!buckets.empty() && std::isinf(buckets.back()) && buckets.back() > 0) buckets.pop_back();
    if (const std::string problem = BucketProblem(buckets); !problem.empty()) {
      Die(absl::StrCat("histogram ", name, ": ", problem));
    }
  }

  std::vector<std::string> sample_names = {name};
  if (type == MetricType::kHistogram) {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      sample_names.push_back(absl::StrCat(name, suffix));
    }
  }

  absl::MutexLock lock(&mu_);
  if (const auto it = families_.find(name); it != families_.end()) {
    internal::FamilyBase& existing = *it->second;
    const bool same_buckets =
        type != MetricType::kHistogram ||
        static_cast<const Family<Histogram>&>(existing).histogram_bounds_ == buckets;
    if (existing.type() != type || existing.help() != help ||
        existing.label_names() != label_names || !same_buckets) {
      Die(absl::StrCat("metric ", name, " is already registered as a ", TypeName(existing.type()),
                       " with labels (", absl::StrJoin(existing.label_names(), ", "),
                       "); a second registration must have the same type, help, labels and "
                       "buckets"));
    }
    return existing;
  }
  for (const std::string& sample_name : sample_names) {
    if (const auto it = sample_names_.find(sample_name); it != sample_names_.end()) {
      Die(absl::StrCat("metric ", name, " would expose ", sample_name, ", which metric family ",
                       it->second, " already exposes"));
    }
  }

  std::unique_ptr<internal::FamilyBase> family;
  const bool unlabelled = label_names.empty();
  switch (type) {
    case MetricType::kCounter: {
      auto counters = std::unique_ptr<Family<Counter>>(
          new Family<Counter>(name, help, type, std::move(label_names), {}));
      if (unlabelled) counters->WithLabels({});
      family = std::move(counters);
      break;
    }
    case MetricType::kGauge: {
      auto gauges = std::unique_ptr<Family<Gauge>>(
          new Family<Gauge>(name, help, type, std::move(label_names), {}));
      if (unlabelled) gauges->WithLabels({});
      family = std::move(gauges);
      break;
    }
    case MetricType::kHistogram: {
      auto histograms = std::unique_ptr<Family<Histogram>>(
          new Family<Histogram>(name, help, type, std::move(label_names), std::move(buckets)));
      if (unlabelled) histograms->WithLabels({});
      family = std::move(histograms);
      break;
    }
  }
  for (const std::string& sample_name : sample_names) sample_names_.emplace(sample_name, name);
  internal::FamilyBase& result = *family;
  families_.emplace(name, std::move(family));
  return result;
}

Family<Counter>& Registry::AddCounter(const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names) {
  return static_cast<Family<Counter>&>(
      Add(name, help, MetricType::kCounter, std::move(label_names), {}));
}

Family<Gauge>& Registry::AddGauge(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names) {
  return static_cast<Family<Gauge>&>(
      Add(name, help, MetricType::kGauge, std::move(label_names), {}));
}

Family<Histogram>& Registry::AddHistogram(const std::string& name, const std::string& help,
                                          std::vector<double> buckets,
                                          std::vector<std::string> label_names) {
  return static_cast<Family<Histogram>&>(
      Add(name, help, MetricType::kHistogram, std::move(label_names), std::move(buckets)));
}

void Registry::AddCollectHook(std::function<void()> hook) {
  absl::MutexLock lock(&mu_);
  hooks_.push_back(std::move(hook));
}

std::string Registry::Serialize() const {
  absl::MutexLock collect_lock(&collect_mu_);
  std::vector<std::function<void()>> hooks;
  {
    absl::MutexLock lock(&mu_);
    hooks = hooks_;
  }
  // Hooks run without mu_ held, so they may create children or even register families.
  for (const std::function<void()>& hook : hooks) hook();

  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, family] : families_) family->AppendTo(&out);
  return out;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1) {
    Die(absl::StrCat("ExponentialBuckets(", start, ", ", factor, ", ", count,
                     "): needs start > 0, factor > 1, count >= 1"));
  }
  std::vector<double> buckets;
  buckets.reserve(count);
  double bound = start;
  for (int i = 0; i < count; ++i) {
    buckets.push_back(bound);
    bound *= factor;
  }
  return buckets;
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  if (!(width > 0) || count < 1 || !std::isfinite(start)) {
    Die(absl::StrCat("LinearBuckets(", start, ", ", width, ", ", count,
                     "): needs a finite start, width > 0, count >= 1"));
  }
  std::vector<double> buckets;
  buckets.reserve(count);
  for (int i = 0; i < count; ++i) buckets.push_back(start + i * width);
  return buckets;
}

}  // namespace dartserve::metrics
