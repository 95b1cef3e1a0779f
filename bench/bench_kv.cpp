// bench_kv: throughput of the aerials key-value table against plain SQLite.
//
//   build/bench_kv [--quick] [--only=a,b,c,d,e] [--synchronous=NORMAL]
//                  [--extension PATH] [--dir DIR] [--autocommit-n N] [--keep]
//
// Both sides are driven the same way: prepared statements through the SQL API
// of a sqlite3 connection of this program's own libsqlite3, in fresh temporary
// directories, with the same pragmas (journal_mode=WAL and synchronous=FULL, or
// NORMAL with --synchronous=NORMAL).
//   aerials:  the extension loaded at run time into the connection, then
//             CREATE VIRTUAL TABLE kv USING aerials(root='DIR', ...)
//   sqlite:   CREATE TABLE kv(key TEXT PRIMARY KEY, subkey NOT NULL DEFAULT '', value) WITHOUT ROWID
// Both run  INSERT INTO kv(key, value) VALUES (?1, ?2)
//           SELECT value FROM kv WHERE key = ?1
//           SELECT count(*) FROM kv
//
// Workloads (see print_usage): (a) bulk insert in one transaction, (b)
// autocommit inserts, (c) random point reads, (d) full scans, (e) point reads
// on a store of few buckets against one of many buckets.
//
// Every setup step is timed and printed too, so that no cost is hidden.
#include <sqlite3.h>
#include <sys/resource.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <unordered_map>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_common.h"

namespace {

using namespace bench;

constexpr int kValueBytes = 100;
constexpr uint64_t kSeed = 0x5eed'a371a15ULL;  // fixed: same data and key sequences on every run

// ---------------------------------------------------------------------------
// Options

struct Options : CommonOptions {
    std::string baseline = "key";   // "key" or "key-subkey": the baseline table's primary key

    int64_t rows = 100'000;          // (a), (c), (d)
    int64_t autocommit_n = 2'000;    // (b)
    int64_t txn_rows = 20'000;       // (f), (g): rows of the store
    int64_t txns = 1'000;            // (f), (g): transactions per side
    int64_t reads = 200'000;         // (c)
    int scans = 5;                   // (d)
    int a_repeats = 3;               // (a): loads per side
    int64_t e_rows = 100'000;        // (e)
    int64_t e_reads = 200'000;       // (e), each store
    int e_few = 128;                 // (e) buckets of the small store
    int e_many = 16'384;             // (e) buckets of the large store
    int e_max_open = 20'000;         // (e) max_open of both stores
    int e_thrash_max_open = 64;      // (e) the information-only run with a small cache
    int64_t e_thrash_reads = -1;     // (e) reads of that run; -1: a tenth of e_reads (each read may open a bucket)
};

void print_usage() {
    std::printf(
        "usage: bench_kv [options]\n"
        "  --extension PATH      aerials extension to load (default: aerials.so next to this program)\n"
        "  --dir DIR             parent of the temporary directory (default /tmp); removed at the end\n"
        "  --keep                keep the temporary directory\n"
        "  --synchronous=MODE    FULL (default) or NORMAL, on both sides\n"
        "  --baseline=SCHEMA     key (default): PRIMARY KEY(key); key-subkey: PRIMARY KEY(key, subkey),\n"
        "                        the schema of one aerials bucket\n"
        "  --only=a,b,...        run only these workloads\n"
        "  --quick               a smoke run, about 10x smaller\n"
        "  --rows N              rows of (a), read by (c) and (d) (default 100000)\n"
        "  --a-repeats N         loads per side in (a), each on a fresh directory (default 3)\n"
        "  --autocommit-n N      inserts of (b) (default 2000)\n"
        "  --reads N             point reads of (c) (default 200000)\n"
        "  --scans N             full scans of (d) (default 5)\n"
        "  --e-rows N            rows of (e) (default 100000)\n"
        "  --e-reads N           point reads of (e) per store (default 200000)\n"
        "  --e-few N             buckets of (e)'s small store (default 128)\n"
        "  --e-many N            buckets of (e)'s large store (default 16384)\n"
        "  --e-thrash-reads N    reads of (e)'s max_open=64 run, 0 to skip it (default: a tenth of --e-reads,\n"
        "                        as nearly every read reopens a bucket file)\n"
        "  --txn-rows N          rows of the stores of (f) and (g) (default 20000)\n"
        "  --txns N              transactions of (f) and (g) per side (default 1000)\n"
        "workloads:\n"
        "  a  inserts in one transaction (BEGIN ... COMMIT), default store settings\n"
        "  b  autocommit single-row inserts, each its own transaction\n"
        "  c  uniform random point reads by key on the data of (a)\n"
        "  d  full scans SELECT count(*) FROM kv on the data of (a) (and, for information,\n"
        "     SELECT sum(length(value)) FROM kv, which reads every value)\n"
        "  e  point reads on a store of few buckets against the same rows in many buckets\n"
        "  f  transactions of 10 UPDATEs of rows in 10 different buckets (atomic multi-bucket commit)\n"
        "  g  transactions of 10 UPDATEs of rows in one bucket (a single-bucket commit)\n");
}

Options parse_options(int argc, char** argv) {
    Options o;
    std::optional<int64_t> a_repeats, autocommit_n, rows, reads, scans, e_rows, e_reads, e_few, e_many, e_thrash,
        txn_rows, txns;
    parse_args(argc, argv, o, 'a', 'g', "--only=a,c", print_usage, [&](const std::string& name, auto&& take) {
        if (name == "--baseline") {
            o.baseline = take();
            if (o.baseline != "key" && o.baseline != "key-subkey") {
                throw std::invalid_argument("--baseline must be key or key-subkey");
            }
        } else if (name == "--a-repeats") {
            a_repeats = parse_int(name, take(), 1);
        } else if (name == "--autocommit-n") {
            autocommit_n = parse_int(name, take(), 1);
        } else if (name == "--rows") {
            rows = parse_int(name, take(), 1);
        } else if (name == "--reads") {
            reads = parse_int(name, take(), 1);
        } else if (name == "--scans") {
            scans = parse_int(name, take(), 1);
        } else if (name == "--e-rows") {
            e_rows = parse_int(name, take(), 1);
        } else if (name == "--e-reads") {
            e_reads = parse_int(name, take(), 1);
        } else if (name == "--e-few") {
            e_few = parse_int(name, take(), 1);
        } else if (name == "--e-many") {
            e_many = parse_int(name, take(), 1);
        } else if (name == "--e-thrash-reads") {
            e_thrash = parse_int(name, take(), 0);
        } else if (name == "--txn-rows") {
            txn_rows = parse_int(name, take(), 1000);
        } else if (name == "--txns") {
            txns = parse_int(name, take(), 1);
        } else {
            return false;
        }
        return true;
    });
    if (o.quick) {
        o.rows = 10'000;
        o.autocommit_n = 200;
        o.reads = 20'000;
        o.e_rows = 10'000;
        o.e_reads = 20'000;
        o.e_few = 16;
        o.e_many = 2'048;
        o.txns = 100;
    }
    if (rows) o.rows = *rows;
    if (a_repeats) o.a_repeats = static_cast<int>(*a_repeats);
    if (autocommit_n) o.autocommit_n = *autocommit_n;
    if (reads) o.reads = *reads;
    if (scans) o.scans = static_cast<int>(*scans);
    if (e_rows) o.e_rows = *e_rows;
    if (e_reads) o.e_reads = *e_reads;
    if (e_few) o.e_few = static_cast<int>(*e_few);
    if (e_many) o.e_many = static_cast<int>(*e_many);
    if (txn_rows) o.txn_rows = *txn_rows;
    if (txns) o.txns = *txns;
    // initial_buckets is rounded up to a power of two by the extension.
    for (int* n : {&o.e_few, &o.e_many}) {
        if (*n < 1 || *n > 65536 || (*n & (*n - 1)) != 0) {
            throw std::invalid_argument("--e-few and --e-many must be powers of two from 1 to 65536");
        }
    }
    o.e_thrash_reads = e_thrash ? *e_thrash : std::max<int64_t>(1, o.e_reads / 10);
    return o;
}

// ---------------------------------------------------------------------------
// Output

Results g_results("ops/s", whole_rate);

void report(const Result& r) { g_results.report(r); }

// ---------------------------------------------------------------------------
// Data: keys 'key:%08d' and 100 random bytes per row, the same on both sides.

struct Data {
    std::vector<std::string> keys;
    std::vector<unsigned char> values;  // kValueBytes per key

    explicit Data(int64_t n) {
        keys.reserve(static_cast<size_t>(n));
        char buf[32];
        for (int64_t i = 0; i < n; ++i) {
            std::snprintf(buf, sizeof buf, "key:%08" PRId64, i);
            keys.emplace_back(buf);
        }
        values.resize(static_cast<size_t>(n) * kValueBytes);
        uint64_t state = kSeed;
        for (size_t i = 0; i < values.size(); i += 8) {
            uint64_t r = splitmix64(state);
            std::memcpy(&values[i], &r, std::min<size_t>(8, values.size() - i));
        }
    }
    const unsigned char* value(int64_t i) const { return &values[static_cast<size_t>(i) * kValueBytes]; }
};

// ---------------------------------------------------------------------------
// The two sides

struct Env {
    Options options;
    fs::path tmp;  // the run's temporary directory
    std::string baseline_sql;
};

// Opens (creating if needed) one side in `dir`. `vtab_args` are extra aerials
// arguments after root and synchronous. `main_db` names the aerials
// connection's own database file.
SideHandle open_side(const Env& env, Side side, const fs::path& dir, const std::string& vtab_args = "",
                     const std::string& synchronous = "", const std::string& main_db = "main.db") {
    const std::string sync = synchronous.empty() ? env.options.synchronous : synchronous;
    fs::create_directories(dir);
    SideHandle h{side, dir, nullptr, ""};
    if (side == Side::kSqlite) {
        h.conn = std::make_unique<Connection>((dir / "kv.db").string());
        set_pragmas(*h.conn, sync);
        h.conn->exec(env.baseline_sql);
        return h;
    }
    h.conn = std::make_unique<Connection>((dir / main_db).string());
    set_pragmas(*h.conn, sync);
    h.conn->load_extension(env.options.extension);
    h.store_root = (dir / "store").string();
    std::string args = "root=" + sql_quote(h.store_root) + ", synchronous=" + sql_quote(sync);
    if (!vtab_args.empty()) args += ", " + vtab_args;
    h.conn->exec("CREATE VIRTUAL TABLE IF NOT EXISTS kv USING aerials(" + args + ")");
    return h;
}

std::string aerials_stats(SideHandle& h) {
    if (h.side != Side::kAerials) return "";
    return h.conn->query_text("SELECT aerials_stats(" + sql_quote(h.store_root) + ")");
}

// --- the timed operations, identical SQL on both sides ---------------------

// Inserts rows [from, to); in one transaction per `batch` rows (0: autocommit,
// each row its own transaction). Returns seconds, COMMIT included.
double insert_rows(Connection& conn, const Data& data, int64_t from, int64_t to, int64_t batch,
                   double* commit_seconds = nullptr) {
    Statement insert(conn, "INSERT INTO kv(key, value) VALUES (?1, ?2)");
    Statement begin(conn, "BEGIN");
    Statement commit(conn, "COMMIT");
    auto start = Clock::now();
    int64_t in_batch = 0;
    for (int64_t i = from; i < to; ++i) {
        if (batch > 0 && in_batch == 0) {
            begin.step();
            begin.reset();
        }
        const std::string& key = data.keys[static_cast<size_t>(i)];
        sqlite3_bind_text(insert.get(), 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
        sqlite3_bind_blob(insert.get(), 2, data.value(i), kValueBytes, SQLITE_STATIC);
        insert.step();
        insert.reset();
        if (batch > 0 && ++in_batch == batch) {
            auto commit_start = Clock::now();
            commit.step();
            commit.reset();
            if (commit_seconds) *commit_seconds += seconds_since(commit_start);
            in_batch = 0;
        }
    }
    if (batch > 0 && in_batch > 0) {
        auto commit_start = Clock::now();
        commit.step();
        commit.reset();
        if (commit_seconds) *commit_seconds += seconds_since(commit_start);
    }
    return seconds_since(start);
}

// Point reads of data.keys[indices[i]]; every value is checked against the
// bytes written. Returns seconds.
double point_reads(Connection& conn, const Data& data, const uint32_t* begin, const uint32_t* end) {
    Statement select(conn, "SELECT value FROM kv WHERE key = ?1");
    int64_t missing = 0, wrong = 0;
    auto start = Clock::now();
    for (const uint32_t* p = begin; p != end; ++p) {
        const uint32_t i = *p;
        const std::string& key = data.keys[i];
        sqlite3_bind_text(select.get(), 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
        if (select.step()) {
            const void* blob = sqlite3_column_blob(select.get(), 0);
            int bytes = sqlite3_column_bytes(select.get(), 0);
            if (bytes != kValueBytes || std::memcmp(blob, data.value(i), kValueBytes) != 0) ++wrong;
        } else {
            ++missing;
        }
        select.reset();
    }
    double seconds = seconds_since(start);
    if (missing || wrong) {
        throw std::runtime_error("point reads: " + std::to_string(missing) + " keys missing, " +
                                 std::to_string(wrong) + " values wrong");
    }
    return seconds;
}

double point_reads(Connection& conn, const Data& data, const std::vector<uint32_t>& indices) {
    return point_reads(conn, data, indices.data(), indices.data() + indices.size());
}

// Runs `sql` (one integer result) `times` times; checks the result.
double repeated_query(Connection& conn, const std::string& sql, int times, int64_t expect) {
    Statement stmt(conn, sql);
    auto start = Clock::now();
    for (int i = 0; i < times; ++i) {
        if (!stmt.step()) throw std::runtime_error(sql + ": no row");
        int64_t got = sqlite3_column_int64(stmt.get(), 0);
        stmt.reset();
        if (got != expect) {
            throw std::runtime_error(sql + ": " + std::to_string(got) + ", expected " + std::to_string(expect));
        }
    }
    return seconds_since(start);
}

void verify_count(SideHandle& h, int64_t expect) {
    int64_t n = h.conn->query_int("SELECT count(*) FROM kv");
    if (n != expect) {
        throw std::runtime_error(std::string(side_name(h.side)) + ": count(*) is " + std::to_string(n) + ", expected " +
                                 std::to_string(expect));
    }
}

constexpr int kRounds = 10;

// ---------------------------------------------------------------------------
// Workloads

// One bulk load: `rows` inserts in one transaction on a fresh side with
// default store settings. Returns the seconds of BEGIN ... COMMIT.
double load_bulk(const Env& env, Side side, const fs::path& dir, const Data& data, int64_t rows,
                 const std::string& label) {
    auto start = Clock::now();
    SideHandle h = open_side(env, side, dir);
    setup_step(label + "/" + side_name(side) + ": open, create table", seconds_since(start));
    double commit_seconds = 0;
    double seconds = insert_rows(*h.conn, data, 0, rows, rows, &commit_seconds);
    time_line(label + "/" + side_name(side) + ": " + with_commas(rows) + " inserts, BEGIN ... COMMIT", seconds);
    line("         of which the COMMIT statement%s: %.3f s",
         side == Side::kAerials ? " (bucket commits, then splits)" : "", commit_seconds);
    start = Clock::now();
    verify_count(h, rows);
    setup_step(label + "/" + side_name(side) + ": check count(*) (untimed check)", seconds_since(start));
    if (side == Side::kAerials) line("         aerials stats after load: %s", aerials_stats(h).c_str());
    return seconds;
}

// (a): `repeats` bulk loads per side on fresh directories, the sides
// alternating which goes first; the rate is total rows over total seconds. The
// last load of each side is the data of (c) and (d). Without (a) selected,
// one load per side is made as the setup of (c) and (d).
void workload_a(const Env& env, const Data& data, bool as_setup) {
    const int64_t n = env.options.rows;
    const int repeats = as_setup ? 1 : env.options.a_repeats;
    if (!as_setup) {
        line("\n(a) %s inserts of %d-byte values in one transaction, default store settings;", with_commas(n).c_str(),
             kValueBytes);
        line("    %d loads per side, each on a fresh directory, alternating which side goes first", repeats);
    } else {
        line("\n(load) the data of (a) for (c) and (d), one load per side as in (a) (setup, not a result)");
    }
    double total[2] = {0, 0};
    for (int r = 0; r < repeats; ++r) {
        bool last = r == repeats - 1;
        std::string label = as_setup ? "load" : "a";
        if (!as_setup && repeats > 1) label.append("#").append(std::to_string(r + 1));
        for (int k = 0; k < 2; ++k) {
            int side_index = (r + k) % 2;  // 0 aerials, 1 sqlite
            Side side = side_index == 0 ? Side::kAerials : Side::kSqlite;
            std::string dir_name = "a";
            if (!last) dir_name.append(std::to_string(r + 1));
            fs::path dir = env.tmp / dir_name.append("-").append(side_name(side));
            total[side_index] += load_bulk(env, side, dir, data, n, label);
            if (!last) fs::remove_all(dir);
        }
    }
    if (!as_setup) {
        report({"a", "insert, one transaction", "aerials", n * repeats / total[0], "sqlite", n * repeats / total[1],
                0.5});
    }
}

void workload_b(const Env& env, const Data& data) {
    const int64_t n = env.options.autocommit_n;
    line("\n(b) %s autocommit single-row inserts (each its own transaction), fresh tables;", with_commas(n).c_str());
    line("    the two sides take turns in %d rounds of %s inserts, alternating which goes first", kRounds,
         with_commas(n / kRounds).c_str());
    SideHandle h[2];
    for (Side side : {Side::kAerials, Side::kSqlite}) {
        auto start = Clock::now();
        h[side == Side::kAerials ? 0 : 1] = open_side(env, side, env.tmp / (std::string("b-") + side_name(side)));
        setup_step(std::string("b/") + side_name(side) + ": open, create table", seconds_since(start));
    }
    auto [t_aerials, t_sqlite] = interleaved(n, kRounds, [&](int side, int64_t from, int64_t to) {
        return insert_rows(*h[side].conn, data, from, to, 0);
    });
    for (int side = 0; side < 2; ++side) {
        time_line(std::string("b/") + side_name(h[side].side) + ": " + with_commas(n) + " autocommit inserts",
                  side == 0 ? t_aerials : t_sqlite);
        verify_count(h[side], n);
    }
    line("         aerials stats: %s", aerials_stats(h[0]).c_str());
    report({"b", "insert, autocommit", "aerials", n / t_aerials, "sqlite", n / t_sqlite, 0.8});
}

// --- (f), (g): transactions of 10 row updates -------------------------------

// Keys of a store, grouped by the bucket that holds them (from its commit log).
std::map<std::string, std::vector<int64_t>> keys_by_bucket(SideHandle& h, const Data& data, int64_t rows) {
    std::unordered_map<std::string, int64_t> index;
    for (int64_t i = 0; i < rows; ++i) index[data.keys[static_cast<size_t>(i)]] = i;
    std::map<std::string, std::vector<int64_t>> groups;
    Statement rows_of(*h.conn, "SELECT key, bucket FROM aerials_log(" + sql_quote(h.store_root) +
                                   ") WHERE change_type = '00'");
    while (rows_of.step()) {
        std::string key = reinterpret_cast<const char*>(sqlite3_column_text(rows_of.get(), 0));
        groups[reinterpret_cast<const char*>(sqlite3_column_text(rows_of.get(), 1))].push_back(index.at(key));
    }
    return groups;
}

// Runs `txns[from, to)`: each BEGIN, one UPDATE per key, COMMIT. Returns seconds.
double update_transactions(Connection& conn, const Data& data, const std::vector<std::vector<int64_t>>& txns,
                           int64_t from, int64_t to) {
    Statement update(conn, "UPDATE kv SET value = ?2 WHERE key = ?1");
    Statement begin(conn, "BEGIN");
    Statement commit(conn, "COMMIT");
    auto start = Clock::now();
    for (int64_t t = from; t < to; ++t) {
        begin.step();
        begin.reset();
        for (int64_t i : txns[static_cast<size_t>(t)]) {
            const std::string& key = data.keys[static_cast<size_t>(i)];
            sqlite3_bind_text(update.get(), 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
            sqlite3_bind_blob(update.get(), 2, data.value((i + t) % static_cast<int64_t>(data.keys.size())),
                              kValueBytes, SQLITE_STATIC);
            update.step();
            if (sqlite3_changes(conn.get()) != 1) throw std::runtime_error("update of " + key + " changed no row");
            update.reset();
        }
        commit.step();
        commit.reset();
    }
    return seconds_since(start);
}

// (f) 10 rows in 10 different buckets per transaction; (g) 10 rows of one
// bucket per transaction (the single-bucket path: no change records).
void workload_fg(const Env& env, const Data& data, bool spread) {
    const char* id = spread ? "f" : "g";
    const int64_t rows = env.options.txn_rows, n = env.options.txns;
    line("\n(%s) %s transactions of 10 UPDATEs each %s, over %s rows (a store of 64 buckets);", id,
         with_commas(n).c_str(), spread ? "in 10 different buckets" : "in one bucket", with_commas(rows).c_str());
    line("    the same transactions on both sides, taking turns in %d rounds", kRounds);
    SideHandle h[2];
    for (Side side : {Side::kAerials, Side::kSqlite}) {
        auto start = Clock::now();
        SideHandle& handle = h[side == Side::kAerials ? 0 : 1];
        handle = open_side(env, side, env.tmp / (std::string(id) + "-" + side_name(side)));
        insert_rows(*handle.conn, data, 0, rows, 10'000);
        setup_step(std::string(id) + "/" + side_name(side) + ": open, load " + with_commas(rows) + " rows",
                   seconds_since(start));
    }
    std::map<std::string, std::vector<int64_t>> groups = keys_by_bucket(h[0], data, rows);
    std::vector<std::vector<int64_t>*> buckets;
    for (auto& [name, keys] : groups) {
        if (keys.size() >= 10) buckets.push_back(&keys);
    }
    if (buckets.size() < 10) throw std::runtime_error("fewer than 10 buckets hold 10 keys: load more rows");
    std::mt19937_64 rng(kSeed + (spread ? 5 : 6));
    std::vector<std::vector<int64_t>> txns(static_cast<size_t>(n));
    for (auto& txn : txns) {
        if (spread) {
            std::vector<size_t> order(buckets.size());
            for (size_t i = 0; i < order.size(); ++i) order[i] = i;
            std::shuffle(order.begin(), order.end(), rng);
            for (int k = 0; k < 10; ++k) {
                const std::vector<int64_t>& keys = *buckets[order[static_cast<size_t>(k)]];
                txn.push_back(keys[rng() % keys.size()]);
            }
        } else {
            const std::vector<int64_t>& keys = *buckets[rng() % buckets.size()];
            std::vector<int64_t> pick = keys;
            std::shuffle(pick.begin(), pick.end(), rng);
            txn.assign(pick.begin(), pick.begin() + 10);
        }
    }
    auto [t_aerials, t_sqlite] = interleaved(n, kRounds, [&](int side, int64_t from, int64_t to) {
        return update_transactions(*h[side].conn, data, txns, from, to);
    });
    for (int side = 0; side < 2; ++side) {
        time_line(std::string(id) + "/" + side_name(h[side].side) + ": " + with_commas(n) + " transactions",
                  side == 0 ? t_aerials : t_sqlite);
        verify_count(h[side], rows);
    }
    line("         aerials stats: %s", aerials_stats(h[0]).c_str());
    Result r{id, spread ? "txn: 10 rows, 10 buckets" : "txn: 10 rows, 1 bucket", "aerials", n / t_aerials, "sqlite",
             n / t_sqlite, spread ? 0.25 : 0};
    r.unit = "txn/s";
    report(r);
}

void workload_c(const Env& env, const Data& data) {
    const int64_t n = env.options.rows, reads = env.options.reads;
    line("\n(c) %s uniform random point reads over the %s keys of (a), same key sequence on both sides;",
         with_commas(reads).c_str(), with_commas(n).c_str());
    line("    the two sides take turns in %d rounds, alternating which goes first", kRounds);
    std::vector<uint32_t> seq = random_indices(reads, n, kSeed + 1);
    SideHandle h[2];
    for (Side side : {Side::kAerials, Side::kSqlite}) {
        auto start = Clock::now();
        h[side == Side::kAerials ? 0 : 1] = open_side(env, side, env.tmp / (std::string("a-") + side_name(side)));
        setup_step(std::string("c/") + side_name(side) + ": reopen the connection on the data of (a)",
                   seconds_since(start));
    }
    auto [t_aerials, t_sqlite] = interleaved(reads, kRounds, [&](int side, int64_t from, int64_t to) {
        return point_reads(*h[side].conn, data, seq.data() + from, seq.data() + to);
    });
    for (int side = 0; side < 2; ++side) {
        time_line(std::string("c/") + side_name(h[side].side) + ": " + with_commas(reads) +
                      " point reads (values checked)",
                  side == 0 ? t_aerials : t_sqlite);
    }
    line("         aerials stats: %s", aerials_stats(h[0]).c_str());
    report({"c", "random point reads", "aerials", reads / t_aerials, "sqlite", reads / t_sqlite, 0.5});
}

void workload_d(const Env& env) {
    const int64_t n = env.options.rows;
    const int scans = env.options.scans;
    line("\n(d) full scans of the %s rows of (a), %d times each, the sides taking turns scan by scan; rows/s",
         with_commas(n).c_str(), scans);
    struct Query {
        const char* id;
        const char* name;
        std::string sql;
        int64_t expect;
    };
    std::vector<Query> queries = {
        {"d", "scan: SELECT count(*)", "SELECT count(*) FROM kv", n},
        {"d2", "scan: SELECT sum(length(value))", "SELECT sum(length(value)) FROM kv", n * kValueBytes},
    };
    SideHandle h[2];
    for (Side side : {Side::kAerials, Side::kSqlite}) {
        auto start = Clock::now();
        h[side == Side::kAerials ? 0 : 1] = open_side(env, side, env.tmp / (std::string("a-") + side_name(side)));
        setup_step(std::string("d/") + side_name(side) + ": reopen the connection on the data of (a)",
                   seconds_since(start));
    }
    for (const Query& q : queries) {
        auto [t_aerials, t_sqlite] = interleaved(scans, scans, [&](int side, int64_t from, int64_t to) {
            return repeated_query(*h[side].conn, q.sql, static_cast<int>(to - from), q.expect);
        });
        for (int side = 0; side < 2; ++side) {
            time_line(std::string(q.id) + "/" + side_name(h[side].side) + ": " + std::to_string(scans) + " x " + q.sql,
                      side == 0 ? t_aerials : t_sqlite);
        }
        Result r{q.id, q.name, "aerials", n * scans / t_aerials, "sqlite", n * scans / t_sqlite, 0};
        r.unit = "rows/s";
        report(r);
    }
}

// --- (e) --------------------------------------------------------------------

// Raises RLIMIT_NOFILE so that `wanted` descriptors fit: the soft limit to the
// hard limit, and the hard limit too if this process may (root). Returns the
// soft limit now in force.
rlim_t raise_fd_limit(rlim_t wanted) {
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    rlimit before = lim;
    if (lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < wanted) {
        rlimit higher{wanted, wanted};
        if (setrlimit(RLIMIT_NOFILE, &higher) == 0) {
            lim = higher;
        } else {
            line("         cannot raise the hard RLIMIT_NOFILE to %llu: %s", (unsigned long long)wanted,
                 std::strerror(errno));
        }
    }
    getrlimit(RLIMIT_NOFILE, &lim);
    line("         RLIMIT_NOFILE: soft %llu -> %llu, hard %llu -> %llu (wanted %llu: 3 per open bucket in WAL, plus margin)",
         (unsigned long long)before.rlim_cur, (unsigned long long)lim.rlim_cur, (unsigned long long)before.rlim_max,
         (unsigned long long)lim.rlim_max, (unsigned long long)wanted);
    return lim.rlim_cur;
}

struct EStore {
    fs::path dir;
    int buckets;
};

// Creates a store of `buckets` buckets (limits that never split) and loads
// rows [0, rows) into it with synchronous=OFF, in transactions of `batch` rows.
EStore build_e_store(const Env& env, const Data& data, const std::string& dir_name, const std::string& label,
                     int buckets, int max_open, int64_t batch) {
    const int64_t rows = env.options.e_rows;
    EStore s{env.tmp / dir_name, buckets};
    std::string args = "initial_buckets=" + std::to_string(buckets) +
                       ", max_records=1000000000, max_open=" + std::to_string(max_open);
    auto start = Clock::now();
    SideHandle h = open_side(env, Side::kAerials, s.dir, args, "OFF", "load-main.db");
    setup_step("e/" + label + ": create store of " + with_commas(buckets) + " buckets (synchronous=OFF)",
               seconds_since(start));
    double seconds = insert_rows(*h.conn, data, 0, rows, batch);
    setup_step("e/" + label + ": load " + with_commas(rows) + " rows, " + with_commas(batch) +
                   " per transaction (synchronous=OFF)",
               seconds);
    std::string stats = aerials_stats(h);
    start = Clock::now();
    h.conn.reset();
    setup_step("e/" + label + ": close the load connection", seconds_since(start));
    line("         load stats: %s", stats.c_str());
    return s;
}

// Opens a new connection on the store with the default synchronous and
// `max_open`; with `warm_up`, reads every key once (which opens every bucket).
SideHandle open_e_reader(const Env& env, const Data& data, const EStore& s, const std::string& label, int max_open,
                         bool warm_up) {
    std::string main_db = "read-main-" + std::to_string(max_open) + ".db";
    auto start = Clock::now();
    SideHandle h = open_side(env, Side::kAerials, s.dir, "max_open=" + std::to_string(max_open), "", main_db);
    setup_step("e/" + label + ": open a read connection, max_open=" + std::to_string(max_open) + ", synchronous=" +
                   env.options.synchronous,
               seconds_since(start));
    if (warm_up) {
        std::vector<uint32_t> all(static_cast<size_t>(env.options.e_rows));
        for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint32_t>(i);
        double w = point_reads(*h.conn, data, all);
        setup_step("e/" + label + ": warm-up, every key read once (opens every bucket)", w);
        line("         aerials stats after warm-up: %s", aerials_stats(h).c_str());
    }
    return h;
}

void workload_e(const Env& env, const Data& data) {
    const Options& o = env.options;
    line("\n(e) %s random point reads on %s rows: %d buckets against %d buckets (no splits), max_open=%d",
         with_commas(o.e_reads).c_str(), with_commas(o.e_rows).c_str(), o.e_few, o.e_many, o.e_max_open);
    line("    both stores are loaded the same way, with synchronous=OFF (bulk load only); the reads run on new");
    line("    connections with the defaults (journal_mode=WAL, synchronous=%s), after a warm-up that reads every",
         o.synchronous.c_str());
    line("    key once, so that the timed reads measure buckets kept open (the warm-up time is printed too);");
    line("    the two stores take turns in %d rounds of the same key sequence, alternating which goes first", kRounds);
    // Each open bucket holds its file, -wal and -shm: 3 descriptors; both
    // read connections are open at once.
    rlim_t limit = raise_fd_limit(static_cast<rlim_t>(o.e_many + o.e_few) * 3 + 256);
    int max_open = o.e_max_open;
    int64_t fits = (static_cast<int64_t>(limit) - 256) / 3 - o.e_few;
    if (fits < std::min<int64_t>(max_open, o.e_many)) {
        max_open = static_cast<int>(std::max<int64_t>(fits, 1));
        line("         WARNING: only %s buckets fit in %llu descriptors: max_open lowered to %d, so the %d-bucket",
             with_commas(fits).c_str(), (unsigned long long)limit, max_open, o.e_many);
        line("         store cannot keep every bucket open and its reads include reopening buckets");
    }
    // The load holds every bucket it touched open until COMMIT: one
    // transaction when every bucket fits, else batches that fit.
    int64_t batch_many = o.e_many <= max_open ? o.e_rows : max_open;
    int64_t batch_few = o.e_few <= max_open ? o.e_rows : max_open;

    std::vector<uint32_t> seq = random_indices(o.e_reads, o.e_rows, kSeed + 2);
    const std::string few_label = std::to_string(o.e_few) + "-buckets";
    const std::string many_label = std::to_string(o.e_many) + "-buckets";

    EStore few = build_e_store(env, data, "e-few", few_label, o.e_few, max_open, batch_few);
    EStore many = build_e_store(env, data, "e-many", many_label, o.e_many, max_open, batch_many);
    {
        SideHandle h[2] = {open_e_reader(env, data, many, many_label, max_open, true),
                           open_e_reader(env, data, few, few_label, max_open, true)};
        auto [t_many, t_few] = interleaved(o.e_reads, kRounds, [&](int side, int64_t from, int64_t to) {
            return point_reads(*h[side].conn, data, seq.data() + from, seq.data() + to);
        });
        time_line("e/" + many_label + ": " + with_commas(o.e_reads) + " point reads, max_open=" +
                      std::to_string(max_open),
                  t_many);
        time_line("e/" + few_label + ": " + with_commas(o.e_reads) + " point reads, max_open=" +
                      std::to_string(max_open),
                  t_few);
        line("         aerials stats %s: %s", many_label.c_str(), aerials_stats(h[0]).c_str());
        line("         aerials stats %s: %s", few_label.c_str(), aerials_stats(h[1]).c_str());
        report({"e", "point reads, " + std::to_string(o.e_many) + " vs " + std::to_string(o.e_few) + " buckets",
                std::to_string(o.e_many) + " buckets", o.e_reads / t_many, std::to_string(o.e_few) + " buckets",
                o.e_reads / t_few, 0.8});
        auto start = Clock::now();
        h[0].conn.reset();
        h[1].conn.reset();
        setup_step("e: close both read connections", seconds_since(start));
    }

    if (o.e_thrash_reads > 0) {
        const double few_rate = g_results.back().reference;
        line("    information: the %d-bucket store read with max_open=%d (LRU far smaller than the store; no warm-up,",
             o.e_many, o.e_thrash_max_open);
        line("    which could not help), the first %s reads of the same sequence (fewer reads: nearly each one reopens",
             with_commas(o.e_thrash_reads).c_str());
        line("    a bucket file; the rate is what matters); reference: the %d-bucket rate above", o.e_few);
        std::vector<uint32_t> thrash_seq = random_indices(o.e_thrash_reads, o.e_rows, kSeed + 2);
        SideHandle h = open_e_reader(env, data, many, many_label, o.e_thrash_max_open, false);
        double t = point_reads(*h.conn, data, thrash_seq);
        time_line("e/" + many_label + ": " + with_commas(o.e_thrash_reads) + " point reads, max_open=" +
                      std::to_string(o.e_thrash_max_open),
                  t);
        line("         aerials stats: %s", aerials_stats(h).c_str());
        report({"e64", "point reads, " + std::to_string(o.e_many) + " buckets, max_open=" +
                           std::to_string(o.e_thrash_max_open),
                std::to_string(o.e_many) + " buckets", o.e_thrash_reads / t, std::to_string(o.e_few) + " buckets",
                few_rate, 0});
    }
}

// ---------------------------------------------------------------------------

int run(const Options& o) {
    Env env{o, {}, {}};
    check_extension(o);
    env.baseline_sql = o.baseline == "key"
                           ? "CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, subkey NOT NULL DEFAULT '', value) "
                             "WITHOUT ROWID"
                           : "CREATE TABLE IF NOT EXISTS kv(key NOT NULL, subkey NOT NULL DEFAULT '', value, "
                             "PRIMARY KEY(key, subkey)) WITHOUT ROWID";
    RunDirectory directory(o.parent_dir, "aerials-bench-", o.keep);
    env.tmp = directory.path();

    print_banner("bench_kv: aerials key-value table against plain SQLite", o);
    line("  directory  %s (fresh subdirectories per workload and side)", env.tmp.c_str());
    line("  pragmas    both sides: journal_mode=WAL, synchronous=%s; other pragmas at their defaults",
         o.synchronous.c_str());
    line("             aerials: on its connection's own main.db, and aerials(..., synchronous='%s') for the",
         o.synchronous.c_str());
    line("             catalog and every bucket (buckets set cache_size=-1024 themselves)");
    line("  aerials    CREATE VIRTUAL TABLE kv USING aerials(root='DIR/store', synchronous='%s'[, ...])",
         o.synchronous.c_str());
    line("  sqlite     %s", env.baseline_sql.c_str());
    line("  SQL        INSERT INTO kv(key, value) VALUES (?1, ?2) / SELECT value FROM kv WHERE key = ?1 (prepared)");
    line("  data       keys 'key:%%08d' inserted in ascending order, values %d random bytes bound as blobs", kValueBytes);
    line("             (the same bytes on both sides, fixed seed); every read value is compared with what was written");
    line("  order      the two sides take turns (whole loads in (a), rounds in (b)-(e)), alternating which goes");
    line("             first, so that both meet the same load of this (shared) machine");

    Data data(std::max({o.rows, o.autocommit_n, o.e_rows, o.txn_rows}));

    bool need_a_data = o.only.count('c') || o.only.count('d');
    if (o.only.count('a')) workload_a(env, data, false);
    else if (need_a_data) workload_a(env, data, true);
    if (o.only.count('b')) workload_b(env, data);
    if (o.only.count('c')) workload_c(env, data);
    if (o.only.count('d')) workload_d(env);
    if (o.only.count('e')) workload_e(env, data);
    if (o.only.count('f')) workload_fg(env, data, true);
    if (o.only.count('g')) workload_fg(env, data, false);

    g_results.print_table("Summary (ratio = measured / reference; aerials / sqlite for a-d, many / few buckets for e)",
                          44, 14, 18, "reference");
    g_results.print_verdict();
    return 0;
}

}  // namespace

int main(int argc, char** argv) { return bench::run_main("bench_kv", argc, argv, parse_options, run); }
