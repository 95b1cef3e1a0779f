// Errors inside the sharding VFS, and the one place that turns them into
// SQLite result codes.
//
// SQLite calls the VFS through C function pointers: an exception must never
// unwind into its C frames. Every callback body runs inside guarded(), which
// logs the message with sqlite3_log (the only channel a VFS has to tell the
// application *which* chunk file or page was at fault) and returns the code.
#pragma once

#include <new>
#include <stdexcept>
#include <string>

#include "sqlite/api.h"

namespace aerials::vfs {

class VfsError : public std::runtime_error {
public:
    VfsError(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
    // An SQLite (extended) result code: SQLITE_IOERR_DATA, SQLITE_CANTOPEN, ...
    int code() const { return code_; }

private:
    int code_;
};

// Runs `body`, which returns an SQLite result code. A VfsError becomes its own
// code, std::bad_alloc SQLITE_IOERR_NOMEM, anything else `fallback`; each is
// logged first. Never throws.
template <class Body>
int guarded(int fallback, Body&& body) noexcept {
    try {
        return body();
    } catch (const VfsError& e) {
        sqlite3_log(e.code(), "aerials vfs: %s", e.what());
        return e.code();
    } catch (const std::bad_alloc&) {
        sqlite3_log(SQLITE_IOERR_NOMEM, "aerials vfs: out of memory");
        return SQLITE_IOERR_NOMEM;
    } catch (const std::exception& e) {
        sqlite3_log(fallback, "aerials vfs: %s", e.what());
        return fallback;
    } catch (...) {
        sqlite3_log(fallback, "aerials vfs: unknown exception");
        return fallback;
    }
}

}  // namespace aerials::vfs
