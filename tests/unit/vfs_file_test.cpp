// The sharding VFS through real SQLite connections (libsqlite3): deletion of
// every chunk, truncation, the log naming damage, pass-through temp files,
// registration.
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "test_support.h"
#include "vfs/chunk_format.h"
#include "vfs/copy.h"
#include "vfs/sharding_vfs.h"

namespace fs = std::filesystem;
using namespace aerials;

namespace {

// sqlite3_log messages, captured for the whole test program: the only
// channel through which a VFS can name the chunk file and page at fault.
std::mutex g_log_mutex;
std::vector<std::string> g_log;

void capture_log(void*, int code, const char* message) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    if (g_log.size() < 1000) g_log.push_back(std::to_string(code) + " " + message);
}

struct LogCapture {
    LogCapture() { sqlite3_config(SQLITE_CONFIG_LOG, capture_log, nullptr); }
};
BOOST_TEST_GLOBAL_FIXTURE(LogCapture);

bool logged(const std::string& needle) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    for (const auto& line : g_log) {
        if (line.find(needle) != std::string::npos) return true;
    }
    return false;
}

sqlite::Database open_vfs(const std::string& path, const std::string& params = "") {
    BOOST_REQUIRE(vfs::register_vfs() == SQLITE_OK);
    std::string query = "vfs=aerials" + (params.empty() ? "" : "&" + params);
    return sqlite::Database(vfs::file_uri(path, query), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI);
}

std::vector<fs::path> files_under(const fs::path& dir, const std::string& extension = "") {
    std::vector<fs::path> out;
    std::error_code ec;
    if (!fs::exists(dir, ec)) return out;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
        if (e.is_regular_file() && (extension.empty() || e.path().extension() == extension)) out.push_back(e.path());
    }
    return out;
}

void fill(sqlite::Database& db, int rows) {
    db.exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)");
    db.exec("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < " + std::to_string(rows) +
            ") INSERT INTO t(v) SELECT randomblob(1000) FROM n");
}

}  // namespace

BOOST_AUTO_TEST_SUITE(vfs_file)

BOOST_AUTO_TEST_CASE(registered_once_and_never_as_default) {
    BOOST_TEST(vfs::register_vfs() == SQLITE_OK);
    BOOST_TEST(vfs::register_vfs() == SQLITE_OK);
    sqlite3_vfs* ours = sqlite3_vfs_find("aerials");
    BOOST_REQUIRE(ours);
    BOOST_TEST(sqlite3_vfs_find(nullptr) != ours);
    BOOST_TEST(vfs::inner_vfs() == sqlite3_vfs_find(nullptr));
}

BOOST_AUTO_TEST_CASE(delete_removes_the_database_and_every_chunk) {
    test::TempDir dir;
    std::string path = dir.str("gone.db");
    {
        sqlite::Database db = open_vfs(path, "chunk_size=128K");
        db.exec("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0");
        fill(db, 1000);
        BOOST_TEST(files_under(path + "-chunks", ".wal").size() > 2u);
        BOOST_TEST(fs::exists(path + "-wal"));  // the WAL's header file
        db.close();
    }
    // Closing the last connection checkpointed and deleted the WAL.
    BOOST_TEST(files_under(path + "-chunks", ".wal").empty());
    sqlite3_vfs* v = sqlite3_vfs_find("aerials");
    BOOST_TEST(v->xDelete(v, path.c_str(), 0) == SQLITE_OK);
    BOOST_TEST(!fs::exists(path));
    BOOST_TEST(!fs::exists(path + "-chunks"));
    // Deleting what is not there reports it as the default VFS does.
    BOOST_TEST(v->xDelete(v, path.c_str(), 0) == SQLITE_IOERR_DELETE_NOENT);
}

BOOST_AUTO_TEST_CASE(delete_of_an_ordinary_file_passes_through) {
    test::TempDir dir;
    std::string path = dir.str("plain.txt");
    std::ofstream(path) << "not a header";
    sqlite3_vfs* v = sqlite3_vfs_find("aerials");
    BOOST_REQUIRE(vfs::register_vfs() == SQLITE_OK);
    BOOST_TEST(v->xDelete(v, path.c_str(), 0) == SQLITE_OK);
    BOOST_TEST(!fs::exists(path));
}

BOOST_AUTO_TEST_CASE(vacuum_shrinks_the_chunk_count_and_empties_the_tail) {
    test::TempDir dir;
    std::string path = dir.str("shrink.db");
    sqlite::Database db = open_vfs(path, "chunk_size=128K");
    db.exec("PRAGMA synchronous=OFF");
    fill(db, 2000);
    auto chunk_count = [&] {
        int64_t n = 0;
        for (const auto& f : files_under(path + "-chunks", ".db")) n += fs::file_size(f) > 0;
        return n;
    };
    int64_t before = chunk_count();
    db.exec("DELETE FROM t WHERE id > 200; VACUUM");
    int64_t after = chunk_count();
    BOOST_TEST(after < before / 5);
    BOOST_TEST(db.query_int("SELECT count(*) FROM t") == 200);
    BOOST_TEST(db.query_int("SELECT count(*) FROM pragma_integrity_check WHERE integrity_check = 'ok'") == 1);
    // And it grows again into the emptied chunk files.
    fill(db, 2000);
    BOOST_TEST(db.query_int("SELECT count(*) FROM t") == 2200);
    BOOST_TEST(chunk_count() >= before);
}

BOOST_AUTO_TEST_CASE(flipped_byte_is_logged_with_chunk_path_and_page) {
    test::TempDir dir;
    std::string path = dir.str("flip.db");
    {
        sqlite::Database db = open_vfs(path, "chunk_size=128K");
        fill(db, 300);
    }
    // Page 40 is the 9th page of chunk 1 (31 pages per 128K chunk).
    fs::path chunk = fs::path(path + "-chunks") / vfs::chunk_relative_path("flip.db", vfs::FileKind::kDatabase, 1);
    {
        std::fstream f(chunk, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(4096 + 8 * 4096 + 77);
        f.put('\x5a');
    }
    sqlite::Database db = open_vfs(path);
    BOOST_CHECK_EXCEPTION(db.query_int("SELECT sum(length(v)) FROM t"), sqlite::Error,
                          [](const sqlite::Error& e) { return e.code() == SQLITE_IOERR_DATA; });
    BOOST_TEST(logged("checksum mismatch in page 40 of '" + path + "': chunk 1 '" + chunk.string() + "'"));
}

BOOST_AUTO_TEST_CASE(bad_uri_parameter_fails_the_open_and_is_logged) {
    test::TempDir dir;
    BOOST_CHECK_THROW(open_vfs(dir.str("x.db"), "chunk_size=lots"), sqlite::Error);
    BOOST_TEST(logged("chunk_size='lots' is not a number of bytes"));
}

BOOST_AUTO_TEST_CASE(temp_files_pass_through) {
    test::TempDir dir;
    std::string path = dir.str("temp.db");
    sqlite::Database db = open_vfs(path, "chunk_size=128K");
    db.exec("PRAGMA temp_store=FILE; PRAGMA cache_size=10");
    fill(db, 500);
    // A sorter and a temp table spill to temp files, which are not sharded.
    BOOST_TEST(db.query_int("SELECT count(*) FROM (SELECT v FROM t ORDER BY v)") == 500);
    db.exec("CREATE TEMP TABLE tt AS SELECT * FROM t");
    BOOST_TEST(db.query_int("SELECT count(*) FROM tt") == 500);
    for (const auto& f : files_under(path + "-chunks")) {
        BOOST_TEST(f.extension() == ".db");
    }
}

BOOST_AUTO_TEST_CASE(import_then_export_keeps_every_row) {
    test::TempDir dir;
    {
        sqlite::Database plain(dir.str("in.db"), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        fill(plain, 700);
    }
    BOOST_REQUIRE(vfs::register_vfs() == SQLITE_OK);
    int64_t pages = vfs::import_database(dir.str("in.db"), dir.str("vfs.db"), 128 << 10);
    BOOST_TEST(pages > 170);
    BOOST_TEST(vfs::export_database(dir.str("vfs.db"), dir.str("out.db")) == pages);
    sqlite::Database out(dir.str("out.db"), SQLITE_OPEN_READONLY);
    BOOST_TEST(out.query_int("SELECT count(*) FROM t") == 700);
    BOOST_CHECK_THROW(vfs::import_database(dir.str("in.db"), dir.str("vfs.db")), std::exception);
    BOOST_CHECK_THROW(vfs::import_database(dir.str("missing.db"), dir.str("new.db")), std::exception);
    BOOST_TEST(!fs::exists(dir.str("new.db")));
}

BOOST_AUTO_TEST_SUITE_END()
