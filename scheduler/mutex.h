// A mutex and condition variable that both of the project's race checkers understand.
//
// Clang's thread-safety analysis (-Wthread-safety, see scripts/test.sh) needs a mutex type that is
// an annotated capability, and libstdc++'s std::mutex is not one. absl::Mutex is, but Debian's
// abseil is not built with ThreadSanitizer, so TSan cannot see its locking and reports every
// access it guards as a data race (the scheduler's tests run under TSan). These thin wrappers over
// std::mutex and std::condition_variable give both: the annotations for clang, and pthread calls
// that TSan intercepts.
//
// Use like absl::Mutex: ABSL_GUARDED_BY(mu_) on members, MutexLock for scopes, and a loop around
// CondVar::Wait for conditions, so that the analysis sees the predicate read under the lock.
// Thread-safety: thread-safe (it is a mutex). Not recursive.
#ifndef DARTSERVE_SCHEDULER_MUTEX_H_
#define DARTSERVE_SCHEDULER_MUTEX_H_

#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace dartserve::scheduler {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds `*mu` for its scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  // Releases `*mu`, blocks until signalled (or spuriously: wait in a loop that re-checks the
  // condition), and holds `*mu` again on return.
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(*mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();  // the caller still holds it
  }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace dartserve::scheduler

#endif  // DARTSERVE_SCHEDULER_MUTEX_H_
