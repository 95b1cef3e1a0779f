#include "vfs/sharded_file.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "vfs/vfs_error.h"

namespace aerials::vfs {
namespace {

std::string str(uint64_t v) { return std::to_string(v); }

uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

bool all_zero(const unsigned char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        if (p[i]) return false;
    }
    return true;
}

}  // namespace

std::string base_name(const std::string& path) {
    size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string resolve_chunk_root(const std::string& header_path, const std::string& root) {
    if (!root.empty() && root[0] == '/') return root;
    size_t slash = header_path.find_last_of('/');
    std::string dir = slash == std::string::npos ? "." : header_path.substr(0, std::max<size_t>(slash, 1));
    return dir == "/" ? "/" + root : dir + "/" + root;
}

ShardedFile::ShardedFile(sqlite3_vfs* inner, std::unique_ptr<InnerFile> header_file)
    : inner_(inner), header_file_(std::move(header_file)) {}

std::unique_ptr<ShardedFile> ShardedFile::open_database(sqlite3_vfs* inner, const char* path, int flags,
                                                        int* out_flags, const CreateOptions& options) {
    auto header_file = std::make_unique<InnerFile>(inner, path, path);
    int rc = header_file->open(flags, out_flags);
    if (rc != SQLITE_OK) throw VfsError(rc, "cannot open the header file '" + std::string(path) + "'");
    std::unique_ptr<ShardedFile> file(new ShardedFile(inner, std::move(header_file)));
    bool readonly = (*out_flags & SQLITE_OPEN_READONLY) != 0;
    if (file->header_file_->size() == 0) {
        // A new database (SQLite creates the file before it writes a page).
        file->header_.kind = FileKind::kDatabase;
        file->header_.chunk_size = options.chunk_size;
        file->header_.name = base_name(path);
        file->header_.root = options.chunk_root.empty() ? file->header_.name + "-chunks" : options.chunk_root;
        if (!readonly) file->write_header();
    } else {
        file->load_header();
        const ChunkHeader& h = file->header_;
        if (h.kind != FileKind::kDatabase) {
            throw VfsError(SQLITE_CANTOPEN, "'" + std::string(path) + "' is the header of a " + kind_name(h.kind) +
                                                " file, not of a database");
        }
        if (options.chunk_size_given && options.chunk_size != h.chunk_size) {
            throw VfsError(SQLITE_CANTOPEN, "'" + std::string(path) + "' was created with chunk_size=" +
                                                str(h.chunk_size) + "; the URI asks for " + str(options.chunk_size));
        }
        if (!options.chunk_root.empty() && options.chunk_root != h.root) {
            throw VfsError(SQLITE_CANTOPEN, "'" + std::string(path) + "' keeps its chunks in '" + h.root +
                                                "'; the URI names chunk_root '" + options.chunk_root + "'");
        }
    }
    file->attach_chunks(readonly);
    return file;
}

std::unique_ptr<ShardedFile> ShardedFile::open_log(sqlite3_vfs* inner, const char* path, int flags, int* out_flags,
                                                   FileKind kind, const ShardedFile& main) {
    auto header_file = std::make_unique<InnerFile>(inner, path, path);
    int rc = header_file->open(flags, out_flags);
    if (rc != SQLITE_OK) throw VfsError(rc, "cannot open the header file '" + std::string(path) + "'");
    std::unique_ptr<ShardedFile> file(new ShardedFile(inner, std::move(header_file)));
    bool readonly = (*out_flags & SQLITE_OPEN_READONLY) != 0;
    if (file->header_file_->size() == 0) {
        file->header_.kind = kind;
        file->header_.chunk_size = main.header_.chunk_size;
        file->header_.name = main.header_.name;
        file->header_.root = main.header_.root;
        if (!readonly) {
            // A new journal or WAL: chunk files of an earlier one whose
            // deletion a crash interrupted must not become part of it.
            ChunkSet::remove_files(inner, main.chunk_root_, main.header_.name, kind, 0);
            file->write_header();
        }
    } else {
        file->load_header();
        if (file->header_.kind != kind || file->header_.name != main.header_.name) {
            throw VfsError(SQLITE_CANTOPEN, "'" + std::string(path) + "' is not the " + kind_name(kind) +
                                                " header of database '" + main.path() + "'");
        }
    }
    file->attach_chunks(readonly);
    return file;
}

void ShardedFile::attach_chunks(bool readonly) {
    chunk_root_ = resolve_chunk_root(path(), header_.root);
    chunks_ = std::make_unique<ChunkSet>(inner_, chunk_root_, header_.name, header_.kind, readonly);
}

void ShardedFile::load_header() {
    unsigned char buf[kMaxHeaderBytes];
    header_file_->read(buf, sizeof buf, 0);  // a short header is zero-filled, then refused by decode
    if (!has_header_magic(buf, sizeof buf) && std::memcmp(buf, "SQLite format 3", 16) == 0) {
        throw VfsError(SQLITE_CANTOPEN, "'" + path() +
                                            "' is an ordinary SQLite database, not one stored by the aerials VFS: "
                                            "copy it in with aerials_vfs_import()");
    }
    ChunkHeader h = decode_header(buf, sizeof buf, path());
    if (chunks_ && (h.kind != header_.kind || h.name != header_.name || h.root != header_.root ||
                    h.chunk_size != header_.chunk_size)) {
        throw VfsError(SQLITE_IOERR, "header file '" + path() + "' was replaced by another database's while open");
    }
    header_ = std::move(h);
    header_stale_ = false;
}

void ShardedFile::write_header() {
    std::vector<unsigned char> bytes = encode_header(header_);
    // One write of a few dozen bytes at offset 0: a crash leaves the old or
    // the new header, and a torn one fails its checksum rather than lying.
    header_file_->write(bytes.data(), static_cast<int>(bytes.size()), 0);
    header_dirty_ = true;
}

int ShardedFile::read(void* buf, int amt, int64_t offset) {
    refresh_header_if_stale();
    auto* out = static_cast<unsigned char*>(buf);
    return header_.kind == FileKind::kDatabase ? read_database(out, amt, offset) : read_log(out, amt, offset);
}

void ShardedFile::write(const void* buf, int amt, int64_t offset) {
    refresh_header_if_stale();
    auto* in = static_cast<const unsigned char*>(buf);
    if (header_.kind == FileKind::kDatabase) {
        write_database(in, amt, offset);
    } else {
        write_log(in, amt, offset);
    }
}

// --- database files: aligned pages and a checksum table per chunk ----------

int ShardedFile::read_database(unsigned char* out, int amt, int64_t offset) {
    if (header_.page_size == 0) load_header();
    if (header_.page_size == 0) {  // nothing written yet
        std::memset(out, 0, amt);
        return SQLITE_IOERR_SHORT_READ;
    }
    const PageLayout l = layout();
    const uint32_t page_size = header_.page_size;
    while (amt > 0) {
        uint64_t pgno = static_cast<uint64_t>(offset) / page_size + 1;
        uint32_t in_page = static_cast<uint32_t>(offset % page_size);
        int n = static_cast<int>(std::min<uint64_t>(page_size - in_page, amt));
        // Whole pages (nearly every read) go straight into SQLite's buffer
        // and are checked. Parts of page 1 (the 100-byte header, the change
        // counter) are not: SQLite reads them before it recovers from a
        // crash, and a crash between writing a page and its checksum leaves
        // page 1 failing its check until the recovery rewrites it.
        const bool whole = in_page == 0 && n == static_cast<int>(page_size);
        if (!whole) page_.resize(page_size);
        unsigned char* dest = whole ? out : page_.data();
        if (!read_page(pgno, l, dest, whole)) {
            std::memset(out, 0, amt);
            return SQLITE_IOERR_SHORT_READ;
        }
        if (!whole) std::memcpy(out, page_.data() + in_page, n);
        out += n;
        amt -= n;
        offset += n;
    }
    return SQLITE_OK;
}

// Reads page `pgno` into `dest` and (if `verify`) checks it; false if it lies
// beyond the end of the file.
bool ShardedFile::read_page(uint64_t pgno, const PageLayout& l, unsigned char* dest, bool verify) {
    const uint64_t number = l.chunk_of(pgno);
    if (number >= header_.chunk_count) {
        load_header();  // another connection may have grown the file
        if (number >= header_.chunk_count) return false;
    }
    InnerFile* chunk = chunks_->find(number);
    if (!chunk) {
        throw VfsError(SQLITE_IOERR_READ, "chunk " + str(number) + " of '" + path() + "' is missing: '" +
                                              chunks_->path(number) + "' (needed for page " + str(pgno) + ")");
    }
    const uint32_t page_size = header_.page_size;
    const uint64_t offset = l.page_offset(pgno);
    if (!chunk->read(dest, static_cast<int>(page_size), static_cast<int64_t>(offset))) {
        int64_t have = chunk->size();
        if (number + 1 == header_.chunk_count && static_cast<uint64_t>(have) <= offset) return false;
        // SQLite never writes the page of the lock bytes, nor reads it.
        if (pgno == l.lock_page()) return true;
        throw VfsError(SQLITE_IOERR_DATA, "page " + str(pgno) + " of '" + path() + "' is missing: chunk " +
                                              str(number) + " '" + chunk->path() + "' ends at byte " + str(have) +
                                              ", before the page's end at " + str(offset + page_size));
    }
    if (!verify) return true;
    const uint64_t actual = page_checksum(dest, page_size, pgno);
    if (actual == stored_checksum(*chunk, number, pgno, l, false)) return true;
    // Our copy of the checksum table may be older than the page (another
    // connection rewrote both): read the entry again before crying damage.
    const uint64_t stored = stored_checksum(*chunk, number, pgno, l, true);
    if (actual == stored) return true;
    if (pgno == l.lock_page() && stored == 0 && all_zero(dest, page_size)) return true;
    throw VfsError(SQLITE_IOERR_DATA, "checksum mismatch in page " + str(pgno) + " of '" + path() + "': chunk " +
                                          str(number) + " '" + chunk->path() + "', offset " + str(offset));
}

uint64_t ShardedFile::stored_checksum(InnerFile& chunk, uint64_t number, uint64_t pgno, const PageLayout& l,
                                      bool reread) {
    std::vector<unsigned char>& table = checksum_tables_[number];
    const uint64_t at = l.checksum_offset(pgno);
    if (table.empty()) {
        // The whole table of a chunk at its first use (one read of 8 bytes
        // per page of the chunk); a cache bounded like the open chunks.
        if (checksum_tables_.size() > kMaxCachedTables) {
            checksum_tables_.clear();
            return stored_checksum(chunk, number, pgno, l, reread);
        }
        table.resize(l.pages_per_chunk() * kChecksumBytes);
        chunk.read(table.data(), static_cast<int>(table.size()), 0);
    } else if (reread) {
        chunk.read(table.data() + at, static_cast<int>(kChecksumBytes), static_cast<int64_t>(at));
    }
    return load_le64(table.data() + at);
}

void ShardedFile::write_database(const unsigned char* in, int amt, int64_t offset) {
    if (header_.page_size == 0) load_header();
    if (header_.page_size == 0) {
        // The first page written fixes the page size (SQLite writes whole
        // pages at page-aligned offsets, and nothing else, to a database).
        if (!valid_page_size(amt) || offset % amt != 0) {
            throw VfsError(SQLITE_IOERR_WRITE, "the first write to '" + path() + "' (" + str(amt) +
                                                   " bytes at offset " + str(offset) + ") is not a database page");
        }
        if (PageLayout(static_cast<uint32_t>(amt), header_.chunk_size).pages_per_chunk() == 0) {
            throw VfsError(SQLITE_IOERR_WRITE, "chunk_size " + str(header_.chunk_size) + " of '" + path() +
                                                   "' cannot hold a page of " + str(amt) + " bytes");
        }
        header_.page_size = static_cast<uint32_t>(amt);
        checksum_tables_.clear();
        write_header();
    }
    const uint32_t page_size = header_.page_size;
    if (static_cast<uint32_t>(amt) != page_size || offset % page_size != 0) {
        throw VfsError(SQLITE_IOERR_WRITE,
                       "'" + path() + "' has pages of " + str(page_size) + " bytes; a write of " + str(amt) +
                           " bytes at offset " + str(offset) +
                           " cannot be stored (the page size of a database in the aerials VFS is fixed once it "
                           "holds data: export, change, import)");
    }
    const PageLayout l = layout();
    const uint64_t pgno = static_cast<uint64_t>(offset) / page_size + 1;
    const uint64_t number = l.chunk_of(pgno);
    InnerFile& chunk = chunk_for_write(number);
    unsigned char sum[kChecksumBytes];
    store_le64(sum, page_checksum(in, page_size, pgno));
    // Page, then checksum. A crash between the two leaves a page that fails
    // its check; SQLite's recovery (journal rollback, WAL checkpoint) writes
    // that page again before anyone reads it.
    chunk.write(in, amt, static_cast<int64_t>(l.page_offset(pgno)));
    chunk.write(sum, sizeof sum, static_cast<int64_t>(l.checksum_offset(pgno)));
    auto cached = checksum_tables_.find(number);
    if (cached != checksum_tables_.end() && !cached->second.empty()) {
        std::memcpy(cached->second.data() + l.checksum_offset(pgno), sum, sizeof sum);
    }
    chunks_->mark_dirty(number);
}

InnerFile& ShardedFile::chunk_for_write(uint64_t number) {
    if (number >= header_.chunk_count) load_header();
    if (number >= header_.chunk_count) {
        // Grow: empty chunk files first, then the header that counts them. A
        // crash in between leaves files the header does not count, which the
        // next growth empties again.
        for (uint64_t n = header_.chunk_count; n <= number; ++n) chunks_->create_empty(n);
        header_.chunk_count = number + 1;
        write_header();
    }
    InnerFile* chunk = chunks_->find(number);
    if (!chunk) {
        throw VfsError(SQLITE_IOERR_WRITE, "chunk " + str(number) + " of '" + path() + "' is missing: '" +
                                               chunks_->path(number) + "'");
    }
    return *chunk;
}

// --- journal and WAL files: plain bytes -------------------------------------

int ShardedFile::read_log(unsigned char* out, int amt, int64_t offset) {
    const uint64_t capacity = header_.chunk_size;
    while (amt > 0) {
        const uint64_t number = static_cast<uint64_t>(offset) / capacity;
        const uint64_t within = static_cast<uint64_t>(offset) % capacity;
        const int n = static_cast<int>(std::min<uint64_t>(capacity - within, amt));
        if (number >= header_.chunk_count) load_header();
        if (number >= header_.chunk_count) {
            std::memset(out, 0, amt);
            return SQLITE_IOERR_SHORT_READ;
        }
        InnerFile* chunk = chunks_->find(number);
        if (!chunk) {
            throw VfsError(SQLITE_IOERR_READ, "chunk " + str(number) + " of '" + path() + "' is missing: '" +
                                                  chunks_->path(number) + "'");
        }
        if (!chunk->read(out, n, static_cast<int64_t>(within))) {
            if (number + 1 == header_.chunk_count) {
                std::memset(out + n, 0, amt - n);
                return SQLITE_IOERR_SHORT_READ;
            }
            throw VfsError(SQLITE_IOERR_READ, "chunk " + str(number) + " of '" + path() + "' ('" + chunk->path() +
                                                  "') is shorter than chunk_size although later chunks exist");
        }
        out += n;
        amt -= n;
        offset += n;
    }
    return SQLITE_OK;
}

void ShardedFile::write_log(const unsigned char* in, int amt, int64_t offset) {
    const uint64_t capacity = header_.chunk_size;
    while (amt > 0) {
        const uint64_t number = static_cast<uint64_t>(offset) / capacity;
        const uint64_t within = static_cast<uint64_t>(offset) % capacity;
        const int n = static_cast<int>(std::min<uint64_t>(capacity - within, amt));
        chunk_for_write(number).write(in, n, static_cast<int64_t>(within));
        chunks_->mark_dirty(number);
        in += n;
        amt -= n;
        offset += n;
    }
}

// --- size, truncation, sync -------------------------------------------------

int64_t ShardedFile::size() {
    load_header();
    if (header_.chunk_count == 0) return 0;
    const uint64_t last = header_.chunk_count - 1;
    InnerFile* chunk = chunks_->find(last);
    // A missing last chunk counts as full: the file keeps its size, and reads
    // of the missing pages fail naming the chunk, rather than the file
    // silently losing its tail.
    if (header_.kind == FileKind::kDatabase) {
        const PageLayout l = layout();
        uint64_t pages = chunk ? l.pages_in(static_cast<uint64_t>(chunk->size())) : l.pages_per_chunk();
        return static_cast<int64_t>((last * l.pages_per_chunk() + pages) * header_.page_size);
    }
    uint64_t bytes = chunk ? static_cast<uint64_t>(chunk->size()) : header_.chunk_size;
    return static_cast<int64_t>(last * header_.chunk_size + bytes);
}

void ShardedFile::truncate(int64_t size) {
    load_header();
    const uint64_t old_count = header_.chunk_count;
    uint64_t new_count = 0;
    uint64_t last_bytes = 0;
    if (header_.kind == FileKind::kDatabase) {
        if (header_.page_size == 0) return;
        const PageLayout l = layout();
        uint64_t pages = ceil_div(static_cast<uint64_t>(size), header_.page_size);
        new_count = ceil_div(pages, l.pages_per_chunk());
        if (new_count > 0) last_bytes = l.bytes_for(pages - (new_count - 1) * l.pages_per_chunk());
    } else {
        new_count = ceil_div(static_cast<uint64_t>(size), header_.chunk_size);
        if (new_count > 0) last_bytes = static_cast<uint64_t>(size) - (new_count - 1) * header_.chunk_size;
    }
    if (new_count > old_count) return;  // SQLite extends files by writing, never by truncating
    checksum_tables_.clear();
    if (new_count < old_count) {
        // The header first: a crash then leaves uncounted chunk files, which
        // are emptied when the file grows into them again.
        header_.chunk_count = new_count;
        if (new_count == 0 && header_.kind == FileKind::kDatabase) header_.page_size = 0;
        write_header();
        for (uint64_t n = new_count; n < old_count; ++n) {
            if (InnerFile* chunk = chunks_->find(n)) {
                chunk->truncate(0);
                chunks_->mark_dirty(n);
            }
        }
    }
    if (new_count > 0) {
        if (InnerFile* chunk = chunks_->find(new_count - 1)) {
            if (static_cast<uint64_t>(chunk->size()) > last_bytes) {
                chunk->truncate(static_cast<int64_t>(last_bytes));
                chunks_->mark_dirty(new_count - 1);
            }
        }
    }
}

void ShardedFile::sync(int flags) {
    chunks_->sync(flags);
    if (header_dirty_) {
        header_file_->sync(flags);
        header_dirty_ = false;
    }
}

int ShardedFile::file_control(int op, void* arg) {
    switch (op) {
        case SQLITE_FCNTL_VFSNAME:
            *static_cast<char**>(arg) = sqlite3_mprintf("aerials/%s", inner_->zName);
            return SQLITE_OK;
        case SQLITE_FCNTL_PRAGMA: {
            // PRAGMA page_size=N on a database that already holds pages would
            // make the next VACUUM write pages of another size, which the
            // chunk layout (fixed per database) cannot hold: refuse it up
            // front, with the reason.
            char** args = static_cast<char**>(arg);
            if (header_.kind == FileKind::kDatabase && args[1] && args[2] &&
                sqlite3_stricmp(args[1], "page_size") == 0) {
                load_header();
                long wanted = std::strtol(args[2], nullptr, 10);
                if (header_.chunk_count > 0 && header_.page_size != 0 && wanted != header_.page_size) {
                    args[0] = sqlite3_mprintf(
                        "the aerials VFS keeps the page size of '%s' at %u bytes once it holds data; "
                        "export it, change the page size, and import it again",
                        path().c_str(), header_.page_size);
                    return SQLITE_ERROR;
                }
            }
            return SQLITE_NOTFOUND;
        }
        case SQLITE_FCNTL_SIZE_HINT:
        case SQLITE_FCNTL_CHUNK_SIZE:
            return SQLITE_OK;  // chunk files grow as they are written
        case SQLITE_FCNTL_LOCKSTATE:
        case SQLITE_FCNTL_LAST_ERRNO:
        case SQLITE_FCNTL_HAS_MOVED:
        case SQLITE_FCNTL_LOCK_TIMEOUT:
        case SQLITE_FCNTL_TEMPFILENAME:
        case SQLITE_FCNTL_EXTERNAL_READER:
        case SQLITE_FCNTL_PERSIST_WAL:
        case SQLITE_FCNTL_POWERSAFE_OVERWRITE:
            return anchor()->pMethods->xFileControl(anchor(), op, arg);
        default:
            return SQLITE_NOTFOUND;
    }
}

}  // namespace aerials::vfs
