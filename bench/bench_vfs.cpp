// bench_vfs: a mixed SQL workload through the aerials sharding VFS and through
// the default VFS, in one run, with the ratio of their throughputs.
//
//   build/bench_vfs [--rows N] [--rounds N] [--chunk-size SIZE] [--cache-kib N]
//                   [--synchronous NORMAL|FULL|OFF] [--extension PATH] [--dir DIR] [--keep]
//
// Both sides run the same statements on a fresh database in a fresh
// temporary directory, with the same pragmas (journal_mode=WAL, the given
// synchronous, cache_size): the default side opens DIR/default.db, the
// aerials side 'file:DIR/aerials.db?vfs=aerials&chunk_size=SIZE'. Phases:
//   insert   rows in transactions of 1000:   INSERT INTO t(k, n, v) VALUES (?, ?, ?)
//            (t has indexes on k and on n)
//   lookup   point reads by an indexed text key: SELECT v FROM t WHERE k = ?
//   scan     range scans of ~1000 rows:         SELECT count(*), sum(length(v)) FROM t WHERE n BETWEEN ? AND ?
//   update   updates by rowid, 100 per transaction: UPDATE t SET v = ?, n = ? WHERE id = ?
// The cache (default 2 MiB, SQLite's own default) is smaller than the
// database, so reads reach the VFS. Sides alternate for --rounds rounds; each
// phase's median time is reported. The headline ratio is aerials throughput /
// default throughput over the whole workload (goal: >= 0.85).
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Options {
    std::string extension;
    std::string parent_dir = "/tmp";
    std::string chunk_size = "64M";
    std::string synchronous = "NORMAL";
    int64_t rows = 200'000;
    int64_t lookups = 100'000;
    int64_t scans = 2'000;
    int64_t updates = 50'000;
    int rounds = 3;
    int cache_kib = 2000;
    bool keep = false;
};

[[noreturn]] void die(const std::string& message) {
    std::fprintf(stderr, "bench_vfs: %s\n", message.c_str());
    std::exit(1);
}

void check(sqlite3* db, int rc, const char* what) {
    if (rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        die(std::string(what) + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    }
}

void exec(sqlite3* db, const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
        std::string message = sql + ": " + (err ? err : "?");
        sqlite3_free(err);
        die(message);
    }
}

class Stmt {
public:
    Stmt(sqlite3* db, const char* sql) : db_(db) { check(db, sqlite3_prepare_v2(db, sql, -1, &s_, nullptr), sql); }
    ~Stmt() { sqlite3_finalize(s_); }
    sqlite3_stmt* get() { return s_; }
    // Steps to the end; returns the number of rows.
    int run() {
        int rows = 0, rc;
        while ((rc = sqlite3_step(s_)) == SQLITE_ROW) ++rows;
        check(db_, rc, sqlite3_sql(s_));
        sqlite3_reset(s_);
        return rows;
    }

private:
    sqlite3* db_;
    sqlite3_stmt* s_ = nullptr;
};

std::string key_of(uint64_t i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "key-%016llx", static_cast<unsigned long long>(i * 0x9E3779B97F4A7C15ull));
    return buf;
}

enum Phase { kInsert, kLookup, kScan, kUpdate, kPhases };
const char* kPhaseNames[] = {"insert", "lookup", "scan", "update"};

struct Timings {
    double seconds[kPhases] = {};
};

Timings run_side(const Options& o, const std::string& open_name, bool uri) {
    sqlite3* db = nullptr;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | (uri ? SQLITE_OPEN_URI : 0);
    check(db, sqlite3_open_v2(open_name.c_str(), &db, flags, nullptr), open_name.c_str());
    exec(db, "PRAGMA journal_mode=WAL");
    exec(db, "PRAGMA synchronous=" + o.synchronous);
    exec(db, "PRAGMA cache_size=-" + std::to_string(o.cache_kib));
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, n INTEGER NOT NULL, v BLOB)");
    exec(db, "CREATE INDEX t_k ON t(k)");
    exec(db, "CREATE INDEX t_n ON t(n)");
    Timings t;
    std::mt19937_64 rng(42);  // same sequences on both sides
    std::vector<unsigned char> value(120);

    auto start = Clock::now();
    {
        Stmt insert(db, "INSERT INTO t(k, n, v) VALUES (?1, ?2, ?3)");
        for (int64_t i = 0; i < o.rows; ++i) {
            if (i % 1000 == 0) exec(db, "BEGIN");
            for (auto& b : value) b = static_cast<unsigned char>(rng());
            std::string k = key_of(static_cast<uint64_t>(i));
            sqlite3_bind_text(insert.get(), 1, k.c_str(), -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(insert.get(), 2, static_cast<int64_t>(rng() % static_cast<uint64_t>(o.rows * 10)));
            sqlite3_bind_blob(insert.get(), 3, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
            insert.run();
            if (i % 1000 == 999 || i + 1 == o.rows) exec(db, "COMMIT");
        }
    }
    t.seconds[kInsert] = std::chrono::duration<double>(Clock::now() - start).count();

    start = Clock::now();
    {
        Stmt lookup(db, "SELECT v FROM t WHERE k = ?1");
        for (int64_t i = 0; i < o.lookups; ++i) {
            std::string k = key_of(rng() % static_cast<uint64_t>(o.rows));
            sqlite3_bind_text(lookup.get(), 1, k.c_str(), -1, SQLITE_TRANSIENT);
            if (lookup.run() != 1) die("lookup found no row");
        }
    }
    t.seconds[kLookup] = std::chrono::duration<double>(Clock::now() - start).count();

    start = Clock::now();
    {
        Stmt scan(db, "SELECT count(*), sum(length(v)) FROM t WHERE n BETWEEN ?1 AND ?1 + 10000");
        for (int64_t i = 0; i < o.scans; ++i) {
            sqlite3_bind_int64(scan.get(), 1, static_cast<int64_t>(rng() % static_cast<uint64_t>(o.rows * 10)));
            scan.run();
        }
    }
    t.seconds[kScan] = std::chrono::duration<double>(Clock::now() - start).count();

    start = Clock::now();
    {
        Stmt update(db, "UPDATE t SET v = ?1, n = ?2 WHERE id = ?3");
        for (int64_t i = 0; i < o.updates; ++i) {
            if (i % 100 == 0) exec(db, "BEGIN");
            for (auto& b : value) b = static_cast<unsigned char>(rng());
            sqlite3_bind_blob(update.get(), 1, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
            sqlite3_bind_int64(update.get(), 2, static_cast<int64_t>(rng() % static_cast<uint64_t>(o.rows * 10)));
            sqlite3_bind_int64(update.get(), 3, static_cast<int64_t>(rng() % static_cast<uint64_t>(o.rows)) + 1);
            update.run();
            if (i % 100 == 99 || i + 1 == o.updates) exec(db, "COMMIT");
        }
    }
    t.seconds[kUpdate] = std::chrono::duration<double>(Clock::now() - start).count();
    check(db, sqlite3_close(db), "close");
    return t;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void print_usage() {
    std::printf(
        "usage: bench_vfs [options]\n"
        "  --rows N           rows inserted (default 200000); lookups N/2, scans N/100, updates N/4\n"
        "  --rounds N         rounds, sides alternating; medians are reported (default 3)\n"
        "  --chunk-size SIZE  chunk_size of the aerials database (default 64M)\n"
        "  --cache-kib N      cache_size of both sides in KiB (default 2000, SQLite's default)\n"
        "  --synchronous S    NORMAL (default), FULL or OFF, both sides\n"
        "  --extension PATH   aerials extension (default: aerials.so next to this program)\n"
        "  --dir DIR          parent of the temporary directory (default /tmp)\n"
        "  --keep             keep the databases\n");
}

Options parse(int argc, char** argv) {
    Options o;
    std::error_code ec;
    fs::path self = fs::read_symlink("/proc/self/exe", ec);
    o.extension = (self.parent_path() / "aerials.so").string();
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto take = [&]() -> std::string {
            if (i + 1 >= argc) die(a + " needs a value");
            return argv[++i];
        };
        if (a == "--rows") {
            o.rows = std::stoll(take());
            o.lookups = o.rows / 2;
            o.scans = std::max<int64_t>(1, o.rows / 100);
            o.updates = o.rows / 4;
        } else if (a == "--rounds") {
            o.rounds = std::stoi(take());
        } else if (a == "--chunk-size") {
            o.chunk_size = take();
        } else if (a == "--cache-kib") {
            o.cache_kib = std::stoi(take());
        } else if (a == "--synchronous") {
            o.synchronous = take();
        } else if (a == "--extension") {
            o.extension = take();
        } else if (a == "--dir") {
            o.parent_dir = take();
        } else if (a == "--keep") {
            o.keep = true;
        } else if (a == "--help" || a == "-h") {
            print_usage();
            std::exit(0);
        } else {
            print_usage();
            die("unknown option " + a);
        }
    }
    if (o.rows < 1000 || o.rounds < 1) die("--rows must be at least 1000 and --rounds at least 1");
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    Options o = parse(argc, argv);
    // Loading the extension into any connection registers the VFS for the
    // process; this connection stays open for the whole run.
    sqlite3* loader = nullptr;
    check(loader, sqlite3_open(":memory:", &loader), ":memory:");
    sqlite3_enable_load_extension(loader, 1);
    char* err = nullptr;
    if (sqlite3_load_extension(loader, o.extension.c_str(), nullptr, &err) != SQLITE_OK) {
        die("cannot load " + o.extension + ": " + (err ? err : "?"));
    }
    std::string pattern = (fs::path(o.parent_dir) / "bench-vfs-XXXXXX").string();
    if (!mkdtemp(pattern.data())) die("mkdtemp failed in " + o.parent_dir);
    fs::path dir = pattern;

    std::printf("bench_vfs: SQLite %s, %lld rows, %lld lookups, %lld scans, %lld updates, %d rounds\n",
                sqlite3_libversion(), static_cast<long long>(o.rows), static_cast<long long>(o.lookups),
                static_cast<long long>(o.scans), static_cast<long long>(o.updates), o.rounds);
    std::printf("pragmas: journal_mode=WAL synchronous=%s cache_size=-%d; aerials chunk_size=%s; dir %s\n",
                o.synchronous.c_str(), o.cache_kib, o.chunk_size.c_str(), dir.c_str());

    std::vector<double> times[2][kPhases];
    for (int round = 0; round < o.rounds; ++round) {
        for (int side = 0; side < 2; ++side) {
            std::string name = (dir / ("r" + std::to_string(round) + (side ? "-aerials.db" : "-default.db"))).string();
            Timings t = side ? run_side(o, "file:" + name + "?vfs=aerials&chunk_size=" + o.chunk_size, true)
                             : run_side(o, name, false);
            for (int p = 0; p < kPhases; ++p) times[side][p].push_back(t.seconds[p]);
        }
    }
    const int64_t ops[kPhases] = {o.rows, o.lookups, o.scans, o.updates};
    std::printf("\n%-8s %14s %14s %8s\n", "phase", "default ops/s", "aerials ops/s", "ratio");
    double total[2] = {0, 0};
    for (int p = 0; p < kPhases; ++p) {
        double d = median(times[0][p]), a = median(times[1][p]);
        total[0] += d;
        total[1] += a;
        std::printf("%-8s %14.0f %14.0f %8.3f\n", kPhaseNames[p], ops[p] / d, ops[p] / a, d / a);
    }
    std::printf("%-8s %13.2fs %13.2fs %8.3f   (aerials throughput / default, whole workload; goal >= 0.85)\n",
                "total", total[0], total[1], total[0] / total[1]);
    sqlite3_close(loader);
    if (!o.keep) fs::remove_all(dir);
    return 0;
}
