// Progress of long transfers, for the SQL faces to show: a process-wide list
// of transfers in progress (read by the aerials_transfers table from any
// connection, e.g. a second Python thread), and an optional line on stderr
// about once a second (what the sqlite3 shell can show while it waits).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace aerials::files {

struct TransferInfo {
    int64_t id = 0;
    std::string root;
    std::string direction;  // "put", "get", "part"
    std::string bucket;
    std::string key;
    int64_t done = 0;
    int64_t total = -1;  // -1 when unknown (a pipe)
    int64_t started = 0;  // Unix ms
};

// Registers a transfer for its lifetime.
class Transfer {
public:
    Transfer(std::string root, std::string direction, std::string bucket, std::string key, int64_t total);
    ~Transfer();
    Transfer(const Transfer&) = delete;
    Transfer& operator=(const Transfer&) = delete;
    void add(int64_t bytes);
    void set_total(int64_t total);

    struct State;

private:
    std::shared_ptr<State> state_;
    std::chrono::steady_clock::time_point last_report_;
};

std::vector<TransferInfo> transfers_in_progress();
// Whether transfers print a progress line to stderr about once a second.
void set_progress_to_stderr(bool on);
bool progress_to_stderr();

}  // namespace aerials::files
