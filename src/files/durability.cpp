#include "files/durability.h"

#include <fcntl.h>
#include "sqlite/api.h"
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "store/bucket_file.h"

namespace aerials::files {

namespace {

std::string upper(const std::string& text) {
    std::string out;
    for (char c : text) out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    return out;
}

// fsync of `path`. A missing file is fine: a WAL that its last connection
// checkpointed (with syncs) and removed, or a bucket file that split after
// our commits (its rows were copied into children that the splitter synced
// before removing it).
void sync_path(const std::string& path, bool directory) {
    int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return;
        throw std::runtime_error("cannot open '" + path + "' to make its chunks durable: " + std::strerror(errno));
    }
    int rc;
    do {
        rc = ::fsync(fd);
    } while (rc != 0 && errno == EINTR);
    int saved = errno;
    ::close(fd);
    if (rc != 0) throw std::runtime_error("cannot fsync '" + path + "': " + std::strerror(saved));
}

// Copies the WAL into the database file on a connection of its own. Only
// an optimisation: the fsyncs after it are the guarantee, so its failures
// (a bucket being split, a checkpoint already running) are ignored.
void checkpoint(const std::string& path) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) == SQLITE_OK) {
        // A read opens the WAL (the checkpoint alone may not).
        sqlite3_exec(db, "PRAGMA schema_version", nullptr, nullptr, nullptr);
        sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    }
    sqlite3_close(db);
}

void make_durable(const std::string& path) {
    checkpoint(path);
    sync_path(path + "-wal", false);
    sync_path(path, false);
    sync_path(std::filesystem::path(path).parent_path().string(), true);
}

// In parallel lanes: the device takes several files' writes at once, and a
// lane mostly waits for it.
void make_all_durable(const std::vector<std::string>& paths) {
    constexpr size_t kLanes = 4;
    std::vector<std::future<void>> lanes;
    for (size_t lane = 1; lane < std::min(kLanes, paths.size()); ++lane) {
        lanes.push_back(std::async(std::launch::async, [&paths, lane] {
            for (size_t i = lane; i < paths.size(); i += kLanes) make_durable(paths[i]);
        }));
    }
    std::exception_ptr first;
    try {
        for (size_t i = 0; i < paths.size(); i += kLanes) make_durable(paths[i]);
    } catch (...) {
        first = std::current_exception();
    }
    for (auto& lane : lanes) {
        try {
            lane.get();
        } catch (...) {
            if (!first) first = std::current_exception();
        }
    }
    if (first) std::rethrow_exception(first);
}

}  // namespace

bool defers_chunk_syncs(const std::string& synchronous) {
    std::string s = upper(synchronous);
    return s == "FULL" || s == "EXTRA" || s == "2" || s == "3";
}

RelaxedCommits::RelaxedCommits(std::shared_ptr<store::BucketFile> file, const std::string& restore)
    : file_(std::move(file)), restore_(restore) {
    // SQLite refuses the change inside a transaction (a read snapshot held
    // on the connection): the commit then syncs as usual, which is correct.
    relaxed_ = sqlite3_exec(file_->db().get(), "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr) == SQLITE_OK;
}

RelaxedCommits::~RelaxedCommits() {
    if (!relaxed_) return;
    // The owner ends the transaction first (commit or rollback): outside
    // one, setting this PRAGMA does not fail. Logged, as a destructor cannot
    // throw.
    int rc = sqlite3_exec(file_->db().get(), ("PRAGMA synchronous=" + restore_).c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) {
        sqlite3_log(rc, "aerials: could not restore synchronous=%s on '%s'", restore_.c_str(), file_->path().c_str());
    }
}

DurabilityBarrier::~DurabilityBarrier() {
    // On an error path: the flush may still use nothing of ours but its own
    // copy of the paths; it is waited for so that no thread outlives the put.
    if (in_flight_.valid()) in_flight_.wait();
}

void DurabilityBarrier::flush() {
    if (in_flight_.valid()) in_flight_.get();
    if (pending_.empty()) return;
    std::vector<std::string> paths(pending_.begin(), pending_.end());
    pending_.clear();
    in_flight_ = std::async(std::launch::async, [paths = std::move(paths)] { make_all_durable(paths); });
}

void DurabilityBarrier::sync() {
    if (in_flight_.valid()) in_flight_.get();
    std::vector<std::string> paths(pending_.begin(), pending_.end());
    make_all_durable(paths);
    pending_.clear();
}

}  // namespace aerials::files
