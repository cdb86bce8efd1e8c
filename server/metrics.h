// A small Prometheus metrics library: counters, gauges and fixed-bucket histograms in labelled
// families, and the text exposition format 0.0.4 (DESIGN.md §5).
//
// prometheus-cpp is not packaged in Debian 12, so the project carries this instead. The names
// mirror prometheus-cpp's concepts (Registry -> Family<T> -> child metric selected by label
// values) so that swapping it in later is mechanical.
//
// Contracts:
//  - Metric updates (Increment, Set, Observe) are lock-free atomics: cheap and thread-safe, meant
//    for hot paths. Family::WithLabels takes a mutex and a map lookup: in hot paths, look the
//    child up once and keep the reference.
//  - Families and children are never removed: references returned by Add* and WithLabels stay
//    valid for the registry's lifetime.
//  - Programming errors (invalid metric or label names, a wrong number of label values,
//    conflicting registrations, unsorted buckets) abort with a message naming the metric: they are
//    deterministic, so any test that registers the metrics catches them.
//  - Counters only go up: negative and NaN increments are ignored (as in prometheus-cpp), because
//    counters are updated from hot paths where aborting on, say, a clock going backwards would be
//    worse than dropping one sample.
// Thread-safety: everything here is thread-safe.
#ifndef DARTSERVE_SERVER_METRICS_H_
#define DARTSERVE_SERVER_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace dartserve::metrics {

// A value that only goes up (requests served, bytes sent). Name it with a `_total` suffix:
// `promtool check metrics` rejects counters without it.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds `v`; ignored when `v` is negative or NaN (see the file comment).
  void Increment(double v = 1);
  double Value() const;

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down (queue length, memory in use).
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double v);
  void Increment(double v = 1);
  void Decrement(double v = 1);
  double Value() const;

 private:
  std::atomic<double> value_{0};
};

// Counts observations into fixed buckets (aggregatable across replicas, unlike summaries).
// A value lands in the first bucket whose upper bound is >= the value ("le"); values above the
// last bound, and NaN, land only in the implicit +Inf bucket. NaN also makes Sum() NaN.
class Histogram {
 public:
  // `upper_bounds` must be finite and strictly increasing (checked by Registry::AddHistogram).
  explicit Histogram(std::vector<double> upper_bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void Observe(double v);
  // The number of observations. Equal to BucketCounts().back() when read without concurrent
  // Observe calls; with them, each read is a consistent-enough snapshot (as in other clients).
  uint64_t Count() const;
  double Sum() const;
  // Cumulative counts per upper bound, then the +Inf bucket (== the count) last.
  std::vector<uint64_t> BucketCounts() const;
  const std::vector<double>& upper_bounds() const { return upper_bounds_; }

 private:
  const std::vector<double> upper_bounds_;
  // Non-cumulative counts: one per upper bound, then the +Inf overflow. Cumulated when read, so
  // Observe touches a single bucket.
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0};
};

enum class MetricType { kCounter, kGauge, kHistogram };

namespace internal {

// What Registry needs from a family regardless of its metric type.
class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  // Appends "# HELP", "# TYPE" and one line per sample to `out`; nothing when the family has no
  // children yet (as the Go client does).
  virtual void AppendTo(std::string* out) const = 0;

 protected:
  FamilyBase(std::string name, std::string help, MetricType type,
             std::vector<std::string> label_names)
      : name_(std::move(name)),
        help_(std::move(help)),
        type_(type),
        label_names_(std::move(label_names)) {}

 private:
  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
};

}  // namespace internal

// All children of one metric name, one per combination of label values.
// T is Counter, Gauge or Histogram.
template <typename T>
class Family final : public internal::FamilyBase {
 public:
  Family(const Family&) = delete;
  Family& operator=(const Family&) = delete;

  // The child for these label values, positional, matching the family's label names (created on
  // first use; the same reference afterwards; thread-safe). Aborts on a wrong number of values:
  // that is a programming error.
  T& WithLabels(const std::vector<std::string>& values);

  void AppendTo(std::string* out) const override;

 private:
  friend class Registry;

  // Only Registry creates families. `histogram_bounds` is used only when T is Histogram.
  Family(std::string name, std::string help, MetricType type, std::vector<std::string> label_names,
         std::vector<double> histogram_bounds);

  const std::vector<double> histogram_bounds_;
  mutable absl::Mutex mu_;
  // Children in creation order (the exposition order), and an index by label values. Children
  // are heap-allocated so references stay valid as the vector grows.
  std::vector<std::pair<std::vector<std::string>, std::unique_ptr<T>>> children_
      ABSL_GUARDED_BY(mu_);
  std::map<std::vector<std::string>, T*> index_ ABSL_GUARDED_BY(mu_);
};

// Defined in metrics.cc for exactly these types.
extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;

// Owns metric families and renders them in the Prometheus text format.
//
// Names must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* and not start
// with "__"; histograms may not use the label "le". Registering a name again with the same type,
// help, labels (and buckets) returns the existing family, as in prometheus-cpp; any other clash,
// including with a histogram's derived _bucket/_sum/_count names, aborts.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Families without labels get their single child at once, so they are exposed (as 0) from the
  // first scrape: rate() and absent() then behave from the start.
  Family<Counter>& AddCounter(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names = {});
  // `buckets`: finite, strictly increasing upper bounds; a trailing +Inf is allowed and dropped
  // (the +Inf bucket is always implicit).
  Family<Histogram>& AddHistogram(const std::string& name, const std::string& help,
                                  std::vector<double> buckets,
                                  std::vector<std::string> label_names = {});

  // Runs before each Serialize(): refreshes gauges that mirror live state (queue length, KV use).
  // Hooks run in registration order, on the serializing thread, never concurrently with each
  // other. A hook must not call Serialize() (it would deadlock).
  void AddCollectHook(std::function<void()> hook);

  // Prometheus text exposition format 0.0.4: # HELP / # TYPE lines, families sorted by name,
  // children in creation order, label values escaped (\\, \", \n), histograms as _bucket{le=...}
  // (cumulative, ending with le="+Inf"), _sum and _count; counters named with _total as given.
  // Numbers round-trip exactly; infinities and NaN are spelled +Inf, -Inf and NaN.
  std::string Serialize() const;

 private:
  // Returns the family registered as `name`, creating it if needed; aborts on conflicts.
  internal::FamilyBase& Add(const std::string& name, const std::string& help, MetricType type,
                            std::vector<std::string> label_names, std::vector<double> buckets);

  // Serializes Serialize() calls, so collect hooks never run concurrently.
  mutable absl::Mutex collect_mu_;
  mutable absl::Mutex mu_ ABSL_ACQUIRED_AFTER(collect_mu_);
  std::map<std::string, std::unique_ptr<internal::FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
  // Every sample name in use (a histogram "x" also takes x_bucket, x_sum and x_count), so that
  // two families cannot expose the same series name.
  std::map<std::string, std::string> sample_names_ ABSL_GUARDED_BY(mu_);  // -> owning family
  std::vector<std::function<void()>> hooks_ ABSL_GUARDED_BY(mu_);
};

// `count` upper bounds start, start*factor, start*factor^2, ... (start > 0, factor > 1,
// count >= 1; aborts otherwise).
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// `count` upper bounds start, start+width, start+2*width, ... (width > 0, count >= 1).
std::vector<double> LinearBuckets(double start, double width, int count);

// Formats a sample value as Prometheus parses it: shortest text that round-trips, or +Inf, -Inf,
// NaN. Exposed for tests and for other exposition code.
std::string FormatValue(double v);

}  // namespace dartserve::metrics

#endif  // DARTSERVE_SERVER_METRICS_H_
