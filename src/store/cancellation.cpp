#include "store/cancellation.h"

#include <chrono>

namespace aerials::store {
namespace {

thread_local const std::atomic<bool>* t_cancel = nullptr;
thread_local InterruptPoll t_poll;
thread_local std::chrono::steady_clock::time_point t_next_poll;

constexpr std::chrono::milliseconds kPollEvery{10};

// SQLite calls it every kOpcodes virtual machine instructions of a running
// statement; non-zero stops the statement with SQLITE_INTERRUPT.
int cancel_requested(void*) {
    if (t_cancel && t_cancel->load(std::memory_order_relaxed)) return 1;
    if (t_poll.interrupted) {
        auto now = std::chrono::steady_clock::now();
        if (now >= t_next_poll) {
            t_next_poll = now + kPollEvery;
            if (t_poll.interrupted(t_poll.arg)) return 1;
        }
    }
    return 0;
}

// Often enough to stop within a row or two even when one opcode is slow (a
// LIKE over a long text takes milliseconds): a look costs a few nanoseconds.
constexpr int kOpcodes = 32;

}  // namespace

CancelScope::CancelScope(const std::atomic<bool>* flag, InterruptPoll poll)
    : previous_flag_(t_cancel), previous_poll_(t_poll) {
    t_cancel = flag;
    t_poll = poll;
    t_next_poll = std::chrono::steady_clock::now() + kPollEvery;
}

CancelScope::~CancelScope() {
    t_cancel = previous_flag_;
    t_poll = previous_poll_;
}

void install_cancel_handler(sqlite3* db) { sqlite3_progress_handler(db, kOpcodes, cancel_requested, nullptr); }

}  // namespace aerials::store
