#include "vfs/inspect.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "vfs/chunk_set.h"
#include "vfs/inner_file.h"
#include "vfs/sharded_file.h"
#include "vfs/vfs_error.h"

namespace aerials::vfs {
namespace {

constexpr size_t kMaxDetails = 5;
constexpr int kLockAttempts = 200;  // x 10 ms

std::string str(uint64_t v) { return std::to_string(v); }

std::optional<ChunkHeader> read_header(InnerFile& file, const std::string& path) {
    unsigned char buf[kMaxHeaderBytes];
    file.read(buf, sizeof buf, 0);
    if (!has_header_magic(buf, sizeof buf)) return {};
    return decode_header(buf, sizeof buf, path);
}

bool exists(sqlite3_vfs*, const std::string& path) { return path_exists(path); }

void add_detail(ChunkStatus& chunk, const std::string& what) {
    if (chunk.bad_pages <= static_cast<int64_t>(kMaxDetails)) {
        if (!chunk.detail.empty()) chunk.detail += "; ";
        chunk.detail += what;
    }
}

// Checks every page of one database chunk against its checksum table.
void check_database_chunk(InnerFile& file, const PageLayout& l, ChunkStatus& chunk) {
    const uint32_t page_size = l.page_size();
    const uint64_t pages = static_cast<uint64_t>(chunk.pages);
    std::vector<unsigned char> table(l.pages_per_chunk() * kChecksumBytes);
    file.read(table.data(), static_cast<int>(table.size()), 0);
    constexpr uint64_t kBatch = 64;
    std::vector<unsigned char> buf(uint64_t{page_size} * kBatch);
    for (uint64_t first = 0; first < pages; first += kBatch) {
        uint64_t n = std::min(kBatch, pages - first);
        uint64_t pgno0 = l.first_page(chunk.number) + first;
        file.read(buf.data(), static_cast<int>(n * page_size), static_cast<int64_t>(l.page_offset(pgno0)));
        for (uint64_t i = 0; i < n; ++i) {
            const unsigned char* page = buf.data() + i * page_size;
            uint64_t pgno = pgno0 + i;
            uint64_t stored = load_le64(table.data() + l.checksum_offset(pgno));
            if (stored == page_checksum(page, page_size, pgno)) continue;
            if (pgno == l.lock_page() && stored == 0 &&
                std::all_of(page, page + page_size, [](unsigned char c) { return c == 0; })) {
                continue;
            }
            ++chunk.bad_pages;
            add_detail(chunk, "page " + str(pgno) + ": checksum mismatch at offset " + str(l.page_offset(pgno)));
        }
    }
}

void inspect_chunks(sqlite3_vfs* inner, const std::string& root, const ChunkHeader& h, bool check_pages,
                    Inspection& out) {
    const bool database = h.kind == FileKind::kDatabase;
    const PageLayout l = database ? PageLayout(h.page_size, h.chunk_size) : PageLayout();
    for (uint64_t n = 0; n < h.chunk_count; ++n) {
        ChunkStatus chunk;
        chunk.kind = h.kind;
        chunk.number = n;
        chunk.path = root + "/" + chunk_relative_path(h.name, h.kind, n);
        const bool last = n + 1 == h.chunk_count;
        if (!exists(inner, chunk.path)) {
            chunk.state = "missing";
            chunk.detail = "the chunk file does not exist";
            out.problems.push_back(std::string(kind_name(h.kind)) + " chunk " + str(n) + " is missing: '" +
                                   chunk.path + "'");
            out.chunks.push_back(std::move(chunk));
            continue;
        }
        InnerFile file(inner, chunk.path);
        int rc = file.open(SQLITE_OPEN_READONLY | SQLITE_OPEN_MAIN_JOURNAL);
        if (rc != SQLITE_OK) throw VfsError(rc, "cannot open chunk file '" + chunk.path + "'");
        chunk.bytes = file.size();
        chunk.state = database ? "ok" : "present";
        if (database) {
            const uint64_t full = l.bytes_for(l.pages_per_chunk());
            chunk.pages = static_cast<int64_t>(l.pages_in(static_cast<uint64_t>(chunk.bytes)));
            // The page of the lock bytes is never written: a chunk that ends
            // just before it is complete.
            const bool lock_page_last = l.lock_page() == l.first_page(n) + l.pages_per_chunk() - 1;
            const uint64_t expected = lock_page_last ? full - h.page_size : full;
            if (chunk.bytes != 0 && static_cast<uint64_t>(chunk.bytes) != l.bytes_for(chunk.pages)) {
                chunk.state = "damaged";
                chunk.detail = "its size " + str(chunk.bytes) + " is not its checksum table and whole pages of " +
                               str(h.page_size) + " bytes";
            } else if (!last && static_cast<uint64_t>(chunk.bytes) < expected) {
                chunk.state = "short";
                chunk.detail = "it holds " + str(chunk.pages) + " pages; a chunk before the last holds " +
                               str(l.pages_per_chunk());
            }
            if (check_pages) check_database_chunk(file, l, chunk);
            if (chunk.bad_pages > 0) chunk.state = "damaged";
            out.pages += chunk.pages;
            out.bad_pages += chunk.bad_pages;
        } else if (!last && static_cast<uint64_t>(chunk.bytes) < h.chunk_size) {
            chunk.state = "short";
            chunk.detail = "it holds " + str(chunk.bytes) + " bytes; a chunk before the last holds " +
                           str(h.chunk_size);
        }
        if (chunk.state != "ok" && chunk.state != "present") {
            out.problems.push_back(std::string(kind_name(h.kind)) + " chunk " + str(n) + " '" + chunk.path +
                                   "' is " + chunk.state + ": " + chunk.detail);
        }
        out.chunks.push_back(std::move(chunk));
    }
}

}  // namespace

Inspection inspect_database(sqlite3_vfs* inner, const std::string& path, bool check_pages) {
    Inspection out;
    out.path = path;
    if (!exists(inner, path)) throw VfsError(SQLITE_CANTOPEN, "database '" + path + "' does not exist");
    // Through the wrapped VFS, so that closing this handle keeps the locks of
    // any connection of this process on the same file.
    InnerFile header_file(inner, path);
    int rc = header_file.open(SQLITE_OPEN_READONLY | SQLITE_OPEN_MAIN_DB);
    if (rc != SQLITE_OK) throw VfsError(rc, "cannot open '" + path + "'");
    sqlite3_file* anchor = header_file.get();
    bool locked = false;
    for (int i = 0; i < kLockAttempts && !locked; ++i) {
        locked = anchor->pMethods->xLock(anchor, SQLITE_LOCK_SHARED) == SQLITE_OK;
        if (!locked) inner->xSleep(inner, 10000);
    }
    if (!locked) out.problems.push_back("could not take a shared lock: a writer held the database throughout");
    try {
        std::optional<ChunkHeader> header = read_header(header_file, path);
        if (!header) {
            throw VfsError(SQLITE_NOTADB, "'" + path + "' is not a database stored by the aerials VFS");
        }
        if (header->kind != FileKind::kDatabase) {
            throw VfsError(SQLITE_NOTADB, "'" + path + "' is the header of a " + kind_name(header->kind) +
                                              " file, not of a database");
        }
        out.header = *header;
        const std::string root = resolve_chunk_root(path, header->root);
        inspect_chunks(inner, root, *header, check_pages, out);
        for (const char* suffix : {"-journal", "-wal"}) {
            std::string log_path = path + suffix;
            if (!exists(inner, log_path)) continue;
            InnerFile log(inner, log_path);
            if (log.open(SQLITE_OPEN_READONLY | SQLITE_OPEN_MAIN_JOURNAL) != SQLITE_OK) continue;
            if (log.size() == 0) continue;
            std::optional<ChunkHeader> log_header = read_header(log, log_path);
            if (!log_header) {
                out.problems.push_back("'" + log_path + "' is not a header file of the aerials VFS");
                continue;
            }
            inspect_chunks(inner, resolve_chunk_root(log_path, log_header->root), *log_header, false, out);
        }
    } catch (...) {
        if (locked) anchor->pMethods->xUnlock(anchor, SQLITE_LOCK_NONE);
        throw;
    }
    if (locked) anchor->pMethods->xUnlock(anchor, SQLITE_LOCK_NONE);
    return out;
}

}  // namespace aerials::vfs
