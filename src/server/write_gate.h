// Writes pass the gate shared, for as long as their transaction and its
// replication take; a catch-up or repair closes it to see (or make) a state
// with no write in flight. Closing has priority: once a closer waits, new
// writers wait behind it (glibc's rwlock prefers readers, so a steady stream
// of writes would starve a std::shared_mutex closer forever).
// Satisfies SharedLockable: use std::shared_lock / std::unique_lock.
#pragma once

#include <condition_variable>
#include <mutex>

namespace aerials::server {

class WriteGate {
public:
    void lock_shared() {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return !closed_ && closers_ == 0; });
        ++writers_;
    }
    void unlock_shared() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--writers_ == 0) changed_.notify_all();
    }
    void lock() {
        std::unique_lock<std::mutex> lock(mutex_);
        ++closers_;
        changed_.wait(lock, [&] { return !closed_ && writers_ == 0; });
        --closers_;
        closed_ = true;
    }
    void unlock() {
        std::lock_guard<std::mutex> lock(mutex_);
        closed_ = false;
        changed_.notify_all();
    }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    int writers_ = 0;
    int closers_ = 0;
    bool closed_ = false;
};

}  // namespace aerials::server
