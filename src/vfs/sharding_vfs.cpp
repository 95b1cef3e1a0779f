// The C face of the VFS: sqlite3_vfs and sqlite3_io_methods tables whose
// entries forward to ShardedFile. Each callback body runs in guarded(), so no
// exception reaches SQLite and every failure is logged with what failed.
#include "vfs/sharding_vfs.h"

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "vfs/chunk_set.h"
#include "vfs/sharded_file.h"
#include "vfs/vfs_error.h"

#ifdef AERIALS_EXTENSION
#include <dlfcn.h>
#endif

namespace aerials::vfs {
namespace {

// What SQLite allocates for one of our files (szOsFile is at least this).
struct FileHandle {
    sqlite3_file base;
    ShardedFile* impl;
};

sqlite3_vfs* g_inner = nullptr;

ShardedFile& impl(sqlite3_file* f) { return *reinterpret_cast<FileHandle*>(f)->impl; }

// --- sqlite3_io_methods ---------------------------------------------------

int x_close(sqlite3_file* f) {
    return guarded(SQLITE_IOERR_CLOSE, [&] {
        auto* handle = reinterpret_cast<FileHandle*>(f);
        delete handle->impl;
        handle->impl = nullptr;
        return SQLITE_OK;
    });
}

int x_read(sqlite3_file* f, void* buf, int amt, sqlite3_int64 offset) {
    return guarded(SQLITE_IOERR_READ, [&] { return impl(f).read(buf, amt, offset); });
}

int x_write(sqlite3_file* f, const void* buf, int amt, sqlite3_int64 offset) {
    return guarded(SQLITE_IOERR_WRITE, [&] {
        impl(f).write(buf, amt, offset);
        return SQLITE_OK;
    });
}

int x_truncate(sqlite3_file* f, sqlite3_int64 size) {
    return guarded(SQLITE_IOERR_TRUNCATE, [&] {
        impl(f).truncate(size);
        return SQLITE_OK;
    });
}

int x_sync(sqlite3_file* f, int flags) {
    return guarded(SQLITE_IOERR_FSYNC, [&] {
        impl(f).sync(flags);
        return SQLITE_OK;
    });
}

int x_file_size(sqlite3_file* f, sqlite3_int64* size) {
    return guarded(SQLITE_IOERR_FSTAT, [&] {
        *size = impl(f).size();
        return SQLITE_OK;
    });
}

// Locks: SQLite's own protocol, on the header file at the database's path,
// so connections in any process that open the same path exclude each other.
int x_lock(sqlite3_file* f, int level) {
    return guarded(SQLITE_IOERR_LOCK, [&] {
        sqlite3_file* anchor = impl(f).anchor();
        int rc = anchor->pMethods->xLock(anchor, level);
        if (rc == SQLITE_OK && level == SQLITE_LOCK_SHARED) impl(f).mark_header_stale();
        return rc;
    });
}

int x_unlock(sqlite3_file* f, int level) {
    return guarded(SQLITE_IOERR_UNLOCK, [&] {
        sqlite3_file* anchor = impl(f).anchor();
        return anchor->pMethods->xUnlock(anchor, level);
    });
}

int x_check_reserved_lock(sqlite3_file* f, int* out) {
    return guarded(SQLITE_IOERR_CHECKRESERVEDLOCK, [&] {
        sqlite3_file* anchor = impl(f).anchor();
        return anchor->pMethods->xCheckReservedLock(anchor, out);
    });
}

int x_file_control(sqlite3_file* f, int op, void* arg) {
    return guarded(SQLITE_IOERR, [&] { return impl(f).file_control(op, arg); });
}

int x_sector_size(sqlite3_file* f) {
    sqlite3_file* anchor = impl(f).anchor();
    return anchor->pMethods->xSectorSize(anchor);
}

int x_device_characteristics(sqlite3_file* f) {
    sqlite3_file* anchor = impl(f).anchor();
    // Only what stays true across chunks: a write spanning two chunk files is
    // not atomic, and growth updates the header before the data arrives, so
    // appends are not "safe" either.
    return anchor->pMethods->xDeviceCharacteristics(anchor) &
           (SQLITE_IOCAP_POWERSAFE_OVERWRITE | SQLITE_IOCAP_IMMUTABLE | SQLITE_IOCAP_UNDELETABLE_WHEN_OPEN);
}

// Shared memory (the WAL index) is the wrapped VFS's, keyed on the header
// file: "big.db-shm", shared by every process that opens "big.db".
int x_shm_map(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
    return guarded(SQLITE_IOERR_SHMMAP, [&] {
        sqlite3_file* anchor = impl(f).anchor();
        return anchor->pMethods->xShmMap(anchor, region, size, extend, out);
    });
}

int x_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
    return guarded(SQLITE_IOERR_SHMLOCK, [&] {
        sqlite3_file* anchor = impl(f).anchor();
        return anchor->pMethods->xShmLock(anchor, offset, n, flags);
    });
}

void x_shm_barrier(sqlite3_file* f) {
    sqlite3_file* anchor = impl(f).anchor();
    anchor->pMethods->xShmBarrier(anchor);
}

int x_shm_unmap(sqlite3_file* f, int delete_flag) {
    return guarded(SQLITE_IOERR_SHMMAP, [&] {
        sqlite3_file* anchor = impl(f).anchor();
        return anchor->pMethods->xShmUnmap(anchor, delete_flag);
    });
}

// Version 2: no xFetch/xUnfetch, so SQLite never memory-maps a database;
// every page it reads passes the checksum test.
const sqlite3_io_methods kIoMethods = {
    2,
    x_close,
    x_read,
    x_write,
    x_truncate,
    x_sync,
    x_file_size,
    x_lock,
    x_unlock,
    x_check_reserved_lock,
    x_file_control,
    x_sector_size,
    x_device_characteristics,
    x_shm_map,
    x_shm_lock,
    x_shm_barrier,
    x_shm_unmap,
    nullptr,
    nullptr,
};

// --- sqlite3_vfs ----------------------------------------------------------

CreateOptions create_options(const char* name) {
    CreateOptions options;
    if (const char* size = sqlite3_uri_parameter(name, "chunk_size")) {
        options.chunk_size = parse_chunk_size(size);
        options.chunk_size_given = true;
    }
    if (const char* root = sqlite3_uri_parameter(name, "chunk_root")) {
        options.chunk_root = root;
        if (options.chunk_root.empty()) throw VfsError(SQLITE_CANTOPEN, "chunk_root is empty");
    }
    return options;
}

// The database whose journal or WAL SQLite is opening under `name`.
ShardedFile* main_file_of(const char* name) {
    sqlite3_file* main = sqlite3_database_file_object(name);
    if (!main || main->pMethods != &kIoMethods) return nullptr;
    return &impl(main);
}

int x_open(sqlite3_vfs* vfs, const char* name, sqlite3_file* file, int flags, int* out_flags) {
    sqlite3_vfs* inner = static_cast<sqlite3_vfs*>(vfs->pAppData);
    const bool sharded = name && (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_WAL));
    if (!sharded) return inner->xOpen(inner, name, file, flags, out_flags);
    auto* handle = reinterpret_cast<FileHandle*>(file);
    handle->base.pMethods = nullptr;
    handle->impl = nullptr;
    int ignored = 0;
    if (!out_flags) out_flags = &ignored;
    return guarded(SQLITE_CANTOPEN, [&] {
        std::unique_ptr<ShardedFile> opened;
        if (flags & SQLITE_OPEN_MAIN_DB) {
            opened = ShardedFile::open_database(inner, name, flags, out_flags, create_options(name));
        } else {
            ShardedFile* main = main_file_of(name);
            if (!main) {
                throw VfsError(SQLITE_CANTOPEN,
                               "cannot find the database that '" + std::string(name) + "' belongs to");
            }
            FileKind kind = (flags & SQLITE_OPEN_WAL) ? FileKind::kWal : FileKind::kJournal;
            opened = ShardedFile::open_log(inner, name, flags, out_flags, kind, *main);
        }
        handle->impl = opened.release();
        handle->base.pMethods = &kIoMethods;
        return SQLITE_OK;
    });
}

int x_delete(sqlite3_vfs*, const char* name, int sync_dir) { return delete_file(name, sync_dir); }

int x_access(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
    // Header files are real files at SQLite's paths: existence and
    // permissions are theirs.
    sqlite3_vfs* inner = static_cast<sqlite3_vfs*>(vfs->pAppData);
    return inner->xAccess(inner, name, flags, out);
}

#define AERIALS_FORWARD(vfs) static_cast<sqlite3_vfs*>((vfs)->pAppData)

int x_full_pathname(sqlite3_vfs* vfs, const char* name, int n, char* out) {
    return AERIALS_FORWARD(vfs)->xFullPathname(AERIALS_FORWARD(vfs), name, n, out);
}
void* x_dl_open(sqlite3_vfs* vfs, const char* path) { return AERIALS_FORWARD(vfs)->xDlOpen(AERIALS_FORWARD(vfs), path); }
void x_dl_error(sqlite3_vfs* vfs, int n, char* out) { AERIALS_FORWARD(vfs)->xDlError(AERIALS_FORWARD(vfs), n, out); }
void (*x_dl_sym(sqlite3_vfs* vfs, void* handle, const char* symbol))(void) {
    return AERIALS_FORWARD(vfs)->xDlSym(AERIALS_FORWARD(vfs), handle, symbol);
}
void x_dl_close(sqlite3_vfs* vfs, void* handle) { AERIALS_FORWARD(vfs)->xDlClose(AERIALS_FORWARD(vfs), handle); }
int x_randomness(sqlite3_vfs* vfs, int n, char* out) {
    return AERIALS_FORWARD(vfs)->xRandomness(AERIALS_FORWARD(vfs), n, out);
}
int x_sleep(sqlite3_vfs* vfs, int micros) { return AERIALS_FORWARD(vfs)->xSleep(AERIALS_FORWARD(vfs), micros); }
int x_current_time(sqlite3_vfs* vfs, double* out) {
    return AERIALS_FORWARD(vfs)->xCurrentTime(AERIALS_FORWARD(vfs), out);
}
int x_get_last_error(sqlite3_vfs* vfs, int n, char* out) {
    return AERIALS_FORWARD(vfs)->xGetLastError(AERIALS_FORWARD(vfs), n, out);
}
int x_current_time_int64(sqlite3_vfs* vfs, sqlite3_int64* out) {
    return AERIALS_FORWARD(vfs)->xCurrentTimeInt64(AERIALS_FORWARD(vfs), out);
}
int x_set_system_call(sqlite3_vfs* vfs, const char* name, sqlite3_syscall_ptr call) {
    return AERIALS_FORWARD(vfs)->xSetSystemCall(AERIALS_FORWARD(vfs), name, call);
}
sqlite3_syscall_ptr x_get_system_call(sqlite3_vfs* vfs, const char* name) {
    return AERIALS_FORWARD(vfs)->xGetSystemCall(AERIALS_FORWARD(vfs), name);
}
const char* x_next_system_call(sqlite3_vfs* vfs, const char* name) {
    return AERIALS_FORWARD(vfs)->xNextSystemCall(AERIALS_FORWARD(vfs), name);
}

#undef AERIALS_FORWARD

// Registered VFS objects must live as long as the process; so must the code
// they point to. A loadable extension is unloaded (dlclose) when the
// connection that loaded it closes, so pin the library in memory.
void pin_library() {
#ifdef AERIALS_EXTENSION
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&register_vfs), &info) && info.dli_fname) {
        // The handle is never closed on purpose.
        (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    }
#endif
}

// --- deletion ---------------------------------------------------------------

// The header at `path`, or nothing if the file is missing or not ours.
std::optional<ChunkHeader> read_header_at(sqlite3_vfs* inner, const std::string& path) {
    int exists = 0;
    if (inner->xAccess(inner, path.c_str(), SQLITE_ACCESS_EXISTS, &exists) != SQLITE_OK || !exists) return {};
    InnerFile file(inner, path);
    if (file.open(SQLITE_OPEN_READONLY | SQLITE_OPEN_MAIN_JOURNAL) != SQLITE_OK) return {};
    unsigned char buf[kMaxHeaderBytes];
    file.read(buf, sizeof buf, 0);
    if (!has_header_magic(buf, sizeof buf)) return {};
    return decode_header(buf, sizeof buf, path);
}

int delete_sharded(sqlite3_vfs* inner, const std::string& path, int sync_dir) {
    std::optional<ChunkHeader> header = read_header_at(inner, path);
    if (!header) return inner->xDelete(inner, path.c_str(), sync_dir);
    // The header first: once it is gone the file no longer exists for
    // SQLite (deleting a journal commits a transaction), and chunk files left
    // by a crash here are swept when a file of that name is created again.
    int rc = inner->xDelete(inner, path.c_str(), sync_dir);
    if (rc != SQLITE_OK) return rc;
    std::string root = resolve_chunk_root(path, header->root);
    ChunkSet::remove_files(inner, root, header->name, header->kind, header->chunk_count);
    if (header->kind == FileKind::kDatabase) {
        for (const char* suffix : {"-journal", "-wal"}) {
            int sub = delete_sharded(inner, path + suffix, sync_dir);
            if (sub != SQLITE_OK && sub != SQLITE_IOERR_DELETE_NOENT) return sub;
        }
        ::rmdir(root.c_str());  // only if empty: another database may share a chosen root
    }
    return SQLITE_OK;
}

sqlite3_vfs g_vfs = {};
std::mutex g_register_mutex;

}  // namespace

sqlite3_vfs* inner_vfs() { return g_inner; }

int delete_file(const char* path, int sync_dir) {
    return guarded(SQLITE_IOERR_DELETE, [&] { return delete_sharded(g_inner, path, sync_dir); });
}

int register_vfs() {
    std::lock_guard<std::mutex> lock(g_register_mutex);
    if (g_inner) return SQLITE_OK;
    if (sqlite3_vfs_find(kVfsName)) {
        sqlite3_log(SQLITE_WARNING, "aerials vfs: another VFS named '%s' is registered already", kVfsName);
        return SQLITE_OK;
    }
    sqlite3_vfs* inner = sqlite3_vfs_find(nullptr);
    if (!inner) return SQLITE_ERROR;
    g_vfs.iVersion = std::min(inner->iVersion, 3);
    g_vfs.szOsFile = std::max<int>(sizeof(FileHandle), inner->szOsFile);
    g_vfs.mxPathname = inner->mxPathname;
    g_vfs.zName = kVfsName;
    g_vfs.pAppData = inner;
    g_vfs.xOpen = x_open;
    g_vfs.xDelete = x_delete;
    g_vfs.xAccess = x_access;
    g_vfs.xFullPathname = x_full_pathname;
    g_vfs.xDlOpen = x_dl_open;
    g_vfs.xDlError = x_dl_error;
    g_vfs.xDlSym = x_dl_sym;
    g_vfs.xDlClose = x_dl_close;
    g_vfs.xRandomness = x_randomness;
    g_vfs.xSleep = x_sleep;
    g_vfs.xCurrentTime = x_current_time;
    g_vfs.xGetLastError = x_get_last_error;
    g_vfs.xCurrentTimeInt64 = x_current_time_int64;
    g_vfs.xSetSystemCall = x_set_system_call;
    g_vfs.xGetSystemCall = x_get_system_call;
    g_vfs.xNextSystemCall = x_next_system_call;
    pin_library();
    int rc = sqlite3_vfs_register(&g_vfs, 0);
    if (rc == SQLITE_OK) g_inner = inner;
    return rc;
}

}  // namespace aerials::vfs
