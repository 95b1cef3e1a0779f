// The on-disk format of the sharding VFS: header files, chunk names, and the
// page layout of database chunks. Pure functions, no I/O.
//
// A database "big.db" stored through the VFS is:
//   big.db                  header file: format version, kind, chunk size,
//                           page size, chunk count, chunk name seed and root.
//                           Locks and the WAL index (big.db-shm) anchor on it.
//   big.db-journal, -wal    the same kind of header file for the rollback
//                           journal and the WAL, present exactly when SQLite
//                           believes those files exist.
//   big.db-chunks/28/dd/1a21d3fdabf7.db    chunk files in a hashed tree.
//
// Database chunks hold whole pages and a table of their 8-byte checksums
// (PageLayout): XXH3-64 of the page with the page number as seed, so a page
// read back from the wrong place fails too. Journal and WAL chunks hold plain
// bytes: both formats carry their own checksums. No chunk file grows beyond
// the chunk size. docs/decisions/0005-sharding-vfs.md says why.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace aerials::vfs {

enum class FileKind : uint32_t { kDatabase = 1, kJournal = 2, kWal = 3 };

// "db", "journal", "wal": the chunk file extension and the name in listings.
const char* kind_name(FileKind kind);

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint64_t kDefaultChunkSize = 64ull << 20;
// Large enough for one page of the largest size (65536) and its checksum table.
inline constexpr uint64_t kMinChunkSize = 128ull << 10;
inline constexpr uint64_t kMaxChunkSize = 1ull << 40;
inline constexpr size_t kChecksumBytes = 8;
// A header is written with one write of at most this many bytes.
inline constexpr size_t kMaxHeaderBytes = 4096;

struct ChunkHeader {
    FileKind kind = FileKind::kDatabase;
    // No chunk file of this file grows beyond this many bytes.
    uint64_t chunk_size = kDefaultChunkSize;
    // Database only: SQLite's page size, learnt from the first write; 0 while
    // the database is empty.
    uint32_t page_size = 0;
    // Chunks 0 .. chunk_count-1 hold the file; files numbered higher are
    // leftovers of a truncation (kept at length 0, see chunk_set.h).
    uint64_t chunk_count = 0;
    // The database's file name when it was created: seeds the chunk names, so
    // that renaming the header file keeps its chunks.
    std::string name;
    // The chunk directory, relative to the header file's directory unless
    // absolute. Default: "<name>-chunks".
    std::string root;

    bool operator==(const ChunkHeader&) const = default;
};

std::vector<unsigned char> encode_header(const ChunkHeader& header);
// True if `data` starts with the header magic (whatever else it holds).
bool has_header_magic(const unsigned char* data, size_t size);
// Throws VfsError(SQLITE_CORRUPT) naming `path` if the bytes are not a valid
// header (bad magic, newer format version, checksum mismatch, bad fields).
ChunkHeader decode_header(const unsigned char* data, size_t size, const std::string& path);

// "28/dd/1a21d3fdabf7.db": the path of chunk `number` relative to the chunk
// root. XXH3-64 of "<name>:<kind>:<number>" spreads chunks over 65536 folders.
std::string chunk_relative_path(std::string_view name, FileKind kind, uint64_t number);

// Parses a chunk size as given in a URI: bytes, or with a K, M or G suffix
// (powers of 1024). Throws VfsError naming the value if it is malformed or
// outside [kMinChunkSize, kMaxChunkSize].
uint64_t parse_chunk_size(std::string_view text);

// Where the pages of a database with a given page and chunk size live. A
// database chunk is a table of 8-byte checksums, one per page, padded to a
// whole page, then the pages themselves: pages stay aligned to the page size
// in the file, so reading one is one aligned read, as without the VFS.
class PageLayout {
public:
    PageLayout() = default;
    PageLayout(uint32_t page_size, uint64_t chunk_size);

    uint32_t page_size() const { return page_size_; }
    // As many pages as fit, with their checksum table, in chunk_size bytes.
    uint64_t pages_per_chunk() const { return pages_per_chunk_; }
    uint64_t table_bytes() const { return table_bytes_; }
    // Page numbers are SQLite's: 1-based.
    uint64_t chunk_of(uint64_t pgno) const { return (pgno - 1) / pages_per_chunk_; }
    uint64_t index_of(uint64_t pgno) const { return (pgno - 1) % pages_per_chunk_; }
    uint64_t page_offset(uint64_t pgno) const { return table_bytes_ + index_of(pgno) * page_size_; }
    uint64_t checksum_offset(uint64_t pgno) const { return index_of(pgno) * kChecksumBytes; }
    uint64_t first_page(uint64_t chunk) const { return chunk * pages_per_chunk_ + 1; }
    // Pages held by a chunk file of `bytes` bytes, and the size of one
    // holding `pages` pages.
    uint64_t pages_in(uint64_t bytes) const { return bytes <= table_bytes_ ? 0 : (bytes - table_bytes_) / page_size_; }
    uint64_t bytes_for(uint64_t pages) const { return table_bytes_ + pages * page_size_; }
    // SQLite never writes the page holding the lock bytes (at 1 GiB), nor
    // reads it: its place stays a hole, its checksum 0.
    uint64_t lock_page() const { return (uint64_t{1} << 30) / page_size_ + 1; }

private:
    uint32_t page_size_ = 0;
    uint64_t pages_per_chunk_ = 0;
    uint64_t table_bytes_ = 0;
};

bool valid_page_size(uint64_t size);

// The checksum stored after page `pgno`.
uint64_t page_checksum(const unsigned char* page, uint32_t page_size, uint64_t pgno);

void store_le64(unsigned char* out, uint64_t v);
uint64_t load_le64(const unsigned char* in);

}  // namespace aerials::vfs
