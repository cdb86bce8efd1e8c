// A small fixed pool of threads that runs posted jobs in FIFO order. The service uses it to
// encode PNGs and start gRPC writes off both the engine thread and gRPC's callback threads.
#ifndef DARTSERVE_SERVER_WORK_QUEUE_H_
#define DARTSERVE_SERVER_WORK_QUEUE_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dartserve::server {

class WorkQueue {
 public:
  explicit WorkQueue(int threads);
  // Runs every job already posted, then joins the threads.
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Never blocks. Jobs must not throw.
  void Post(std::function<void()> job);

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace dartserve::server

#endif  // DARTSERVE_SERVER_WORK_QUEUE_H_
