#include "store/process_owner.h"

#include <cerrno>
#include <csignal>
#include <fstream>
#include <mutex>
#include <sstream>
#include <sys/types.h>
#include <unistd.h>

namespace aerials::store {
namespace {

struct ProcessStat {
    char state = '?';        // field 3: 'Z' zombie, 'X' dead
    std::string start_time;  // field 22: clock ticks since boot
};

// The command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
ProcessStat stat_of(long pid) {
    ProcessStat result;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return result;
    size_t close = line.rfind(')');
    if (close == std::string::npos || close + 2 > line.size()) return result;
    std::istringstream fields(line.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 22 && fields >> field; ++i) {
        if (i == 3) result.state = field.empty() ? '?' : field[0];
        if (i == 22) result.start_time = field;
    }
    return result;
}

}  // namespace

std::string this_process_owner() {
    // Computed once per process; a forked child (another pid) computes its own.
    static std::mutex mutex;
    static std::string owner;
    static long owner_pid = 0;
    long pid = static_cast<long>(::getpid());
    std::lock_guard<std::mutex> lock(mutex);
    if (pid != owner_pid) {
        owner = std::to_string(pid) + ":" + stat_of(pid).start_time;
        owner_pid = pid;
    }
    return owner;
}

bool owner_alive(const std::string& owner) {
    size_t colon = owner.find(':');
    if (colon == std::string::npos || colon == 0) return false;
    long pid = 0;
    try {
        pid = std::stol(owner.substr(0, colon));
    } catch (...) {
        return false;
    }
    if (pid <= 0) return false;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
    ProcessStat stat = stat_of(pid);
    if (stat.state == 'Z' || stat.state == 'X') return false;  // killed, not yet reaped
    // A process we may not inspect: only a differing start time proves that
    // the owner is gone.
    return stat.start_time.empty() || stat.start_time == owner.substr(colon + 1);
}

}  // namespace aerials::store
