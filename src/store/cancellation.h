// Stopping a statement that a worker thread steps on a connection another
// thread also uses (the store's bucket connections are shared by the calling
// thread and the read pool's workers). sqlite3_interrupt() would stop every
// statement of the connection, including the caller's own; a progress handler
// that looks at a flag of the running thread's current task stops only it.
#pragma once

#include <atomic>

#include "sqlite/api.h"

namespace aerials::store {

// Asks whether the query a statement runs for was interrupted (on the
// querying thread: e.g. sqlite3_interrupt() on the caller's connection).
struct InterruptPoll {
    bool (*interrupted)(void* arg) = nullptr;
    void* arg = nullptr;
};

// While alive, statements stepped by this thread on connections with the
// cancel handler stop (SQLITE_INTERRUPT) once *flag is true, or, when a poll
// is given, once it answers yes (asked every few milliseconds).
class CancelScope {
public:
    explicit CancelScope(const std::atomic<bool>* flag, InterruptPoll poll = {});
    ~CancelScope();
    CancelScope(const CancelScope&) = delete;
    CancelScope& operator=(const CancelScope&) = delete;

private:
    const std::atomic<bool>* previous_flag_;
    InterruptPoll previous_poll_;
};

// Installs the progress handler that honours CancelScope on `db`.
void install_cancel_handler(sqlite3* db);

}  // namespace aerials::store
