#include "vfs/copy.h"

#include <chrono>

#include "sqlite/database.h"
#include "vfs/sharding_vfs.h"
#include "vfs/vfs_error.h"

namespace aerials::vfs {
namespace {

// How long a copy waits, in all, for other connections' locks.
constexpr auto kBusyLimit = std::chrono::seconds(30);

bool exists(const std::string& path) {
    sqlite3_vfs* inner = sqlite3_vfs_find(nullptr);
    int found = 0;
    return inner->xAccess(inner, path.c_str(), SQLITE_ACCESS_EXISTS, &found) == SQLITE_OK && found;
}

int64_t backup(sqlite::Database& from, sqlite::Database& to) {
    sqlite3_backup* b = sqlite3_backup_init(to.get(), "main", from.get(), "main");
    if (!b) throw to.error(sqlite3_errcode(to.get()), "cannot start copying from '" + from.path() + "'");
    auto deadline = std::chrono::steady_clock::now() + kBusyLimit;
    int rc;
    // Steps of 1024 pages: another connection's write to the source between
    // steps restarts the copy, so that it stays consistent.
    while ((rc = sqlite3_backup_step(b, 1024)) == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
        if (rc != SQLITE_OK) {
            if (std::chrono::steady_clock::now() > deadline) break;
            sqlite3_sleep(10);
        }
    }
    int64_t pages = sqlite3_backup_pagecount(b);
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE) {
        throw sqlite::Error(rc, "copying '" + from.path() + "' to '" + to.path() + "' failed: " + sqlite3_errstr(rc));
    }
    return pages;
}

}  // namespace

std::string file_uri(const std::string& path, const std::string& query) {
    static const char hex[] = "0123456789ABCDEF";
    std::string uri = "file:";
    for (unsigned char c : path) {
        if (c == '%' || c == '?' || c == '#' || c <= ' ' || c >= 0x7f) {
            uri += '%';
            uri += hex[c >> 4];
            uri += hex[c & 15];
        } else {
            uri += static_cast<char>(c);
        }
    }
    if (!query.empty()) uri += "?" + query;
    return uri;
}

int64_t import_database(const std::string& source, const std::string& target, std::optional<uint64_t> chunk_size) {
    if (!exists(source)) throw VfsError(SQLITE_CANTOPEN, "cannot import '" + source + "': it does not exist");
    if (exists(target)) throw VfsError(SQLITE_CANTOPEN, "cannot import into '" + target + "': it exists already");
    std::string query = std::string("vfs=") + kVfsName;
    if (chunk_size) query += "&chunk_size=" + std::to_string(*chunk_size);
    sqlite::Database from(file_uri(source, "mode=ro"), SQLITE_OPEN_READONLY | SQLITE_OPEN_URI);
    try {
        sqlite::Database to(file_uri(target, query), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI);
        return backup(from, to);
    } catch (...) {
        delete_file(target.c_str(), 0);
        throw;
    }
}

int64_t export_database(const std::string& source, const std::string& target) {
    if (!exists(source)) throw VfsError(SQLITE_CANTOPEN, "cannot export '" + source + "': it does not exist");
    if (exists(target)) throw VfsError(SQLITE_CANTOPEN, "cannot export into '" + target + "': it exists already");
    sqlite::Database from(file_uri(source, std::string("mode=ro&vfs=") + kVfsName),
                          SQLITE_OPEN_READONLY | SQLITE_OPEN_URI);
    try {
        sqlite::Database to(target, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        return backup(from, to);
    } catch (...) {
        sqlite3_vfs* inner = sqlite3_vfs_find(nullptr);
        inner->xDelete(inner, target.c_str(), 0);
        inner->xDelete(inner, (target + "-journal").c_str(), 0);
        throw;
    }
}

}  // namespace aerials::vfs
