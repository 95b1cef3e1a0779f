// The worker pool of the HTTP server: a fixed number of threads, and a bound
// on accepted connections waiting for one. When the bound is reached,
// enqueue() blocks the accept loop, so further clients wait in the kernel's
// listen backlog instead of in an unbounded queue in memory.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <httplib.h>

namespace aerials::server {

class BoundedPool : public httplib::TaskQueue {
public:
    BoundedPool(size_t threads, size_t max_waiting) : max_waiting_(max_waiting) {
        for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
    }
    ~BoundedPool() override { shutdown(); }

    void enqueue(std::function<void()> fn) override {
        std::unique_lock<std::mutex> lock(mutex_);
        has_room_.wait(lock, [&] { return jobs_.size() < max_waiting_ || stopping_; });
        jobs_.push_back(std::move(fn));
        has_job_.notify_one();
    }

    // Runs what was accepted, then joins the threads: in-flight requests end
    // normally (draining on SIGTERM).
    void shutdown() override {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (stopping_ && threads_.empty()) return;
            stopping_ = true;
        }
        has_job_.notify_all();
        has_room_.notify_all();
        for (std::thread& t : threads_) t.join();
        threads_.clear();
    }

private:
    void work() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                has_job_.wait(lock, [&] { return !jobs_.empty() || stopping_; });
                if (jobs_.empty()) return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
                has_room_.notify_one();
            }
            job();
        }
    }

    size_t max_waiting_;
    std::mutex mutex_;
    std::condition_variable has_job_, has_room_;
    std::deque<std::function<void()>> jobs_;
    std::vector<std::thread> threads_;
    bool stopping_ = false;
};

}  // namespace aerials::server
