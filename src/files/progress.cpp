#include "files/progress.h"

#include <cstdio>
#include <mutex>

#include "files/clock.h"

namespace aerials::files {

struct Transfer::State {
    TransferInfo info;
    std::atomic<int64_t> done{0};
    std::atomic<int64_t> total{-1};
};

namespace {

std::mutex registry_mutex;
std::vector<std::shared_ptr<Transfer::State>>& registry() {
    static auto* list = new std::vector<std::shared_ptr<Transfer::State>>();
    return *list;
}
std::atomic<int64_t> next_id{1};
std::atomic<bool> to_stderr{false};

void print(const TransferInfo& info, int64_t done, int64_t total, bool final) {
    constexpr double kMiB = 1024.0 * 1024.0;
    if (total >= 0) {
        std::fprintf(stderr, "aerials: %s %s/%s: %.1f of %.1f MiB (%d%%)%s\n", info.direction.c_str(),
                     info.bucket.c_str(), info.key.c_str(), done / kMiB, total / kMiB,
                     total > 0 ? static_cast<int>(100.0 * done / total) : 100, final ? ", done" : "");
    } else {
        std::fprintf(stderr, "aerials: %s %s/%s: %.1f MiB%s\n", info.direction.c_str(), info.bucket.c_str(),
                     info.key.c_str(), done / kMiB, final ? ", done" : "");
    }
}

}  // namespace

Transfer::Transfer(std::string root, std::string direction, std::string bucket, std::string key, int64_t total)
    : state_(std::make_shared<State>()), last_report_(std::chrono::steady_clock::now()) {
    state_->info = {next_id++, std::move(root), std::move(direction), std::move(bucket), std::move(key), 0, total,
                    unix_now_ms()};
    state_->total = total;
    std::lock_guard lock(registry_mutex);
    registry().push_back(state_);
}

Transfer::~Transfer() {
    if (to_stderr) print(state_->info, state_->done, state_->total, true);
    std::lock_guard lock(registry_mutex);
    auto& list = registry();
    for (auto it = list.begin(); it != list.end(); ++it) {
        if (*it == state_) {
            list.erase(it);
            break;
        }
    }
}

void Transfer::add(int64_t bytes) {
    int64_t done = state_->done += bytes;
    if (to_stderr) {
        auto now = std::chrono::steady_clock::now();
        if (now - last_report_ >= std::chrono::seconds(1)) {
            last_report_ = now;
            print(state_->info, done, state_->total, false);
        }
    }
}

void Transfer::set_total(int64_t total) { state_->total = total; }

std::vector<TransferInfo> transfers_in_progress() {
    std::lock_guard lock(registry_mutex);
    std::vector<TransferInfo> out;
    for (const auto& s : registry()) {
        TransferInfo info = s->info;
        info.done = s->done;
        info.total = s->total;
        out.push_back(std::move(info));
    }
    return out;
}

void set_progress_to_stderr(bool on) { to_stderr = on; }
bool progress_to_stderr() { return to_stderr; }

}  // namespace aerials::files
