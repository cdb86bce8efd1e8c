// Time source for the scheduler, injectable so tests run on a fake clock (no sleeps).
#ifndef DARTSERVE_SCHEDULER_CLOCK_H_
#define DARTSERVE_SCHEDULER_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace dartserve::scheduler {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // The process-wide real clock.
  static Clock* Real();
};

class RealClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

inline Clock* Clock::Real() {
  static RealClock clock;
  return &clock;
}

}  // namespace dartserve::scheduler

#endif  // DARTSERVE_SCHEDULER_CLOCK_H_
