// Threads that run one job per bucket of a commit at once: each bucket's
// COMMIT waits for its own fsync, and issuing them together lets the file
// system batch them. The threads live as long as the Store, so a commit does
// not pay for starting threads.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace aerials::store {

class CommitLanes {
public:
    explicit CommitLanes(size_t max_threads) : max_threads_(max_threads) {}
    ~CommitLanes();
    CommitLanes(const CommitLanes&) = delete;
    CommitLanes& operator=(const CommitLanes&) = delete;

    // Runs fn(0..n-1), the caller's thread taking part; returns the failures
    // by index. REQUIRES: not called concurrently (a Store is used by one
    // thread at a time).
    std::vector<std::exception_ptr> run(size_t n, const std::function<void(size_t)>& fn);

private:
    void lane();
    // Takes the next index of the current job; false when none is left.
    bool take(size_t* index);

    const size_t max_threads_;
    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable work_;
    std::condition_variable done_;
    const std::function<void(size_t)>* job_ = nullptr;
    std::vector<std::exception_ptr>* errors_ = nullptr;
    size_t next_ = 0, size_ = 0, running_ = 0;
    uint64_t generation_ = 0;
    bool stopping_ = false;
};

}  // namespace aerials::store
