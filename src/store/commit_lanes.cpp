#include "store/commit_lanes.h"

#include <algorithm>

namespace aerials::store {

CommitLanes::~CommitLanes() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    work_.notify_all();
    for (auto& t : threads_) t.join();
}

bool CommitLanes::take(size_t* index) {
    if (!job_ || next_ >= size_) return false;
    *index = next_++;
    ++running_;
    return true;
}

std::vector<std::exception_ptr> CommitLanes::run(size_t n, const std::function<void(size_t)>& fn) {
    std::vector<std::exception_ptr> errors(n);
    if (n == 0) return errors;
    size_t wanted = std::min(n - 1, max_threads_);
    while (threads_.size() < wanted) threads_.emplace_back([this] { lane(); });
    std::unique_lock<std::mutex> lock(mutex_);
    job_ = &fn;
    errors_ = &errors;
    next_ = 0;
    size_ = n;
    ++generation_;
    work_.notify_all();
    size_t index;
    while (take(&index)) {
        lock.unlock();
        try {
            fn(index);
        } catch (...) {
            errors[index] = std::current_exception();
        }
        lock.lock();
        --running_;
    }
    done_.wait(lock, [&] { return next_ >= size_ && running_ == 0; });
    job_ = nullptr;
    errors_ = nullptr;
    return errors;
}

void CommitLanes::lane() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        work_.wait(lock, [&] { return stopping_ || (job_ && next_ < size_); });
        if (stopping_) return;
        size_t index;
        while (take(&index)) {
            const std::function<void(size_t)>* job = job_;
            std::vector<std::exception_ptr>* errors = errors_;
            lock.unlock();
            try {
                (*job)(index);
            } catch (...) {
                (*errors)[index] = std::current_exception();
            }
            lock.lock();
            --running_;
        }
        done_.notify_all();
    }
}

}  // namespace aerials::store
