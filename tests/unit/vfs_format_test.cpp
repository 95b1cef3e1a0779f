// The sharding VFS's on-disk format: header files, chunk names, chunk sizes,
// the page layout of database chunks.
#include <boost/test/unit_test.hpp>

#include "vfs/chunk_format.h"
#include "vfs/vfs_error.h"

using namespace aerials::vfs;

namespace {

bool message_contains(const VfsError& e, const std::string& needle) {
    return std::string(e.what()).find(needle) != std::string::npos;
}

ChunkHeader sample() {
    ChunkHeader h;
    h.kind = FileKind::kWal;
    h.chunk_size = 1 << 20;
    h.page_size = 4096;
    h.chunk_count = 17;
    h.name = "big.db";
    h.root = "big.db-chunks";
    return h;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(vfs_format)

BOOST_AUTO_TEST_CASE(header_round_trip) {
    std::vector<unsigned char> bytes = encode_header(sample());
    BOOST_TEST(bytes.size() < 200u);
    BOOST_TEST(has_header_magic(bytes.data(), bytes.size()));
    // Whatever follows the header (a shorter header once written over a
    // longer one, zeros of a short read) does not matter.
    bytes.resize(kMaxHeaderBytes, 0xee);
    BOOST_TEST((decode_header(bytes.data(), bytes.size(), "x") == sample()));
}

BOOST_AUTO_TEST_CASE(damaged_header_is_refused_naming_the_file) {
    std::vector<unsigned char> bytes = encode_header(sample());
    for (size_t i : {16u, 24u, 40u, 55u}) {
        std::vector<unsigned char> damaged = bytes;
        damaged[i] ^= 0x04;
        BOOST_CHECK_EXCEPTION(decode_header(damaged.data(), damaged.size(), "/d/big.db"), VfsError,
                              [](const VfsError& e) {
                                  return e.code() == SQLITE_CORRUPT || message_contains(e, "format version");
                              });
    }
    std::vector<unsigned char> damaged = bytes;
    damaged[30] ^= 1;  // the chunk size: caught by the checksum
    BOOST_CHECK_EXCEPTION(decode_header(damaged.data(), damaged.size(), "/d/big.db"), VfsError,
                          [](const VfsError& e) { return message_contains(e, "'/d/big.db' is damaged: checksum"); });
    const unsigned char sqlite_file[] = "SQLite format 3";
    BOOST_TEST(!has_header_magic(sqlite_file, sizeof sqlite_file));
}

BOOST_AUTO_TEST_CASE(newer_format_version_is_refused_with_a_reason) {
    std::vector<unsigned char> bytes = encode_header(sample());
    bytes[16] = 9;  // version 9; the checksum does not matter, the version is checked first
    BOOST_CHECK_EXCEPTION(decode_header(bytes.data(), bytes.size(), "h"), VfsError, [](const VfsError& e) {
        return message_contains(e, "format version 9; this build understands version 1");
    });
}

BOOST_AUTO_TEST_CASE(chunk_names_are_stable_and_spread) {
    // Fixed forever: existing databases are found by these names.
    BOOST_TEST(chunk_relative_path("big.db", FileKind::kDatabase, 0).size() == std::string("28/dd/1a21d3fdabf7.db").size());
    BOOST_TEST(chunk_relative_path("big.db", FileKind::kDatabase, 0) == chunk_relative_path("big.db", FileKind::kDatabase, 0));
    BOOST_TEST(chunk_relative_path("big.db", FileKind::kDatabase, 0) != chunk_relative_path("big.db", FileKind::kDatabase, 1));
    BOOST_TEST(chunk_relative_path("big.db", FileKind::kWal, 0).ends_with(".wal"));
    BOOST_TEST(chunk_relative_path("big.db", FileKind::kJournal, 3).ends_with(".journal"));
    BOOST_TEST(chunk_relative_path("a.db", FileKind::kDatabase, 0) != chunk_relative_path("b.db", FileKind::kDatabase, 0));
    BOOST_TEST(chunk_relative_path("big.db", FileKind::kDatabase, 0) == "ae/4d/cdd83e911002.db");
}

BOOST_AUTO_TEST_CASE(chunk_sizes) {
    BOOST_TEST(parse_chunk_size("64M") == 64ull << 20);
    BOOST_TEST(parse_chunk_size("131072") == 131072u);
    BOOST_TEST(parse_chunk_size("1G") == 1ull << 30);
    BOOST_TEST(parse_chunk_size("256KiB") == 256ull << 10);
    for (const char* bad : {"", "M", "12Q", "1000", "64K", "2048G", "-5"}) {
        BOOST_CHECK_THROW(parse_chunk_size(bad), VfsError);
    }
}

BOOST_AUTO_TEST_CASE(page_layout) {
    PageLayout small(4096, 128 << 10);
    BOOST_TEST(small.pages_per_chunk() == 31u);
    BOOST_TEST(small.table_bytes() == 4096u);
    BOOST_TEST(small.bytes_for(31) <= (128u << 10));
    BOOST_TEST(small.chunk_of(31) == 0u);
    BOOST_TEST(small.chunk_of(32) == 1u);
    BOOST_TEST(small.page_offset(32) == 4096u);  // first page of chunk 1, after its table
    BOOST_TEST(small.checksum_offset(33) == 8u);
    BOOST_TEST(small.pages_in(4096 + 3 * 4096 + 100) == 3u);
    BOOST_TEST(small.pages_in(100) == 0u);

    PageLayout standard(4096, kDefaultChunkSize);  // fills 64 MiB exactly
    BOOST_TEST(standard.pages_per_chunk() == 16352u);
    BOOST_TEST(standard.bytes_for(standard.pages_per_chunk()) == kDefaultChunkSize);
    BOOST_TEST(standard.lock_page() == 262145u);

    PageLayout largest(65536, kMinChunkSize);
    BOOST_TEST(largest.pages_per_chunk() == 1u);
    BOOST_TEST(PageLayout(65536, kMinChunkSize - 1).pages_per_chunk() == 0u);

    // Pages stay aligned to the page size for every page size.
    for (uint32_t p = 512; p <= 65536; p *= 2) {
        PageLayout l(p, 1 << 20);
        BOOST_TEST(l.table_bytes() % p == 0u);
        BOOST_TEST(l.bytes_for(l.pages_per_chunk()) <= (1u << 20));
        BOOST_TEST(l.table_bytes() >= l.pages_per_chunk() * kChecksumBytes);
    }
}

BOOST_AUTO_TEST_SUITE_END()
