#include "vfs/chunk_set.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "vfs/vfs_error.h"

namespace aerials::vfs {
namespace {

std::string parent_of(const std::string& path) {
    size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

// Directories are not files SQLite locks, so opening one by hand is safe.
void sync_directory(const std::string& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;  // best effort: durability against power loss only
    ::fsync(fd);
    ::close(fd);
}

}  // namespace

bool path_exists(const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) return true;
    if (errno == ENOENT || errno == ENOTDIR) return false;
    throw VfsError(SQLITE_IOERR_ACCESS, "cannot check whether '" + path + "' exists: " + std::strerror(errno));
}

void ensure_directory(const std::string& dir) {
    struct stat st;
    if (::stat(dir.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) throw VfsError(SQLITE_CANTOPEN, "chunk folder '" + dir + "' is not a directory");
        return;
    }
    std::string parent = parent_of(dir);
    if (parent != dir) ensure_directory(parent);
    if (::mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST) {
        throw VfsError(SQLITE_CANTOPEN, "cannot create chunk folder '" + dir + "': " + std::strerror(errno));
    }
    sync_directory(parent);
}

ChunkSet::ChunkSet(sqlite3_vfs* inner, std::string root, std::string name, FileKind kind, bool readonly)
    : inner_(inner), root_(std::move(root)), name_(std::move(name)), kind_(kind), readonly_(readonly) {}

std::string ChunkSet::path(uint64_t number) const {
    return root_ + "/" + chunk_relative_path(name_, kind_, number);
}

InnerFile* ChunkSet::find(uint64_t number) {
    auto it = open_.find(number);
    if (it != open_.end()) {
        it->second.last_use = ++clock_;
        return it->second.file.get();
    }
    return open_chunk(number, false);
}

InnerFile& ChunkSet::create_empty(uint64_t number) {
    if (readonly_) throw VfsError(SQLITE_READONLY, "cannot create chunk '" + path(number) + "': opened read-only");
    InnerFile* file = find(number);
    if (!file) file = open_chunk(number, true);
    if (file->size() != 0) file->truncate(0);
    mark_dirty(number);
    return *file;
}

InnerFile* ChunkSet::open_chunk(uint64_t number, bool create) {
    std::string chunk_path = path(number);
    if (create) {
        ensure_directory(parent_of(chunk_path));
    } else if (!path_exists(chunk_path)) {
        return nullptr;
    }
    if (open_.size() >= kMaxOpen) evict_one();
    auto file = std::make_unique<InnerFile>(inner_, chunk_path);
    // Opened as a journal: the unix VFS then syncs the folder of a newly
    // created file at its first sync, making the new name durable.
    int flags = SQLITE_OPEN_MAIN_JOURNAL |
                (readonly_ ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0));
    int rc = file->open(flags);
    if (rc != SQLITE_OK) {
        throw VfsError(rc == SQLITE_CANTOPEN ? SQLITE_IOERR_READ : rc, "cannot open chunk file '" + chunk_path + "'");
    }
    InnerFile* raw = file.get();
    open_[number] = Open{std::move(file), ++clock_};
    return raw;
}

void ChunkSet::evict_one() {
    auto victim = open_.begin();
    for (auto it = open_.begin(); it != open_.end(); ++it) {
        if (it->second.last_use < victim->second.last_use) victim = it;
    }
    if (dirty_.erase(victim->first)) victim->second.file->sync(last_sync_flags_);
    open_.erase(victim);
}

void ChunkSet::sync(int flags) {
    last_sync_flags_ = flags;
    while (!dirty_.empty()) {
        uint64_t number = *dirty_.begin();
        auto it = open_.find(number);
        if (it != open_.end()) it->second.file->sync(flags);
        dirty_.erase(dirty_.begin());
    }
}

void ChunkSet::close_all() {
    open_.clear();
    dirty_.clear();
}

void ChunkSet::remove_files(sqlite3_vfs* inner, const std::string& root, const std::string& name, FileKind kind,
                            uint64_t count) {
    for (uint64_t n = 0;; ++n) {
        std::string p = root + "/" + chunk_relative_path(name, kind, n);
        if (!path_exists(p)) {
            if (n >= count) return;
            continue;
        }
        int rc = inner->xDelete(inner, p.c_str(), 0);
        if (rc != SQLITE_OK && rc != SQLITE_IOERR_DELETE_NOENT) {
            throw VfsError(rc, "cannot delete chunk file '" + p + "'");
        }
        // Remove the hashed folders when they become empty; ignore failure
        // (another chunk still lives there).
        std::string dir = parent_of(p);
        if (::rmdir(dir.c_str()) == 0) ::rmdir(parent_of(dir).c_str());
    }
}

}  // namespace aerials::vfs
