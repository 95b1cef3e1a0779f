// bench_tables: queries on a sharded aerials table against plain SQLite.
//
//   build/bench_tables [--quick] [--rows N] [--only=f,g,h] [--initial-buckets N]
//                      [--synchronous=NORMAL] [--extension PATH] [--dir DIR] [--keep]
//
// Both sides are driven the same way: prepared statements through the SQL API
// of a sqlite3 connection of this program's own libsqlite3, in fresh temporary
// directories, with the same pragmas (journal_mode=WAL and synchronous=FULL, or
// NORMAL with --synchronous=NORMAL), holding the same rows.
//   aerials:  the extension loaded at run time into the connection, then
//             CREATE VIRTUAL TABLE orders USING aerials(root='DIR', shard_key=customer_id,
//                 order_id INTEGER, customer_id INTEGER NOT NULL, total REAL, placed_at TEXT,
//                 PRIMARY KEY(customer_id, order_id), INDEX(placed_at)[, initial_buckets=256])
//   sqlite:   CREATE TABLE orders(order_id INTEGER, customer_id INTEGER NOT NULL, total REAL,
//                 placed_at TEXT, PRIMARY KEY(customer_id, order_id));
//             CREATE INDEX orders_placed_at ON orders(placed_at)
//
// Workloads (see print_usage): (f) a selective query on the indexed non-shard
// column placed_at, (g) ORDER BY placed_at DESC LIMIT 10, (h) a GROUP BY
// aggregate, on aerials through aerials_map (and, for information, directly
// on the virtual table).
//
// Every setup step is timed and printed too, so that no cost is hidden.
#include <sqlite3.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench_common.h"

namespace {

using namespace bench;

constexpr uint64_t kSeed = 0x5eed'7ab1e5ULL;  // fixed: same rows and query sequences on every run
constexpr int kRounds = 10;
constexpr int kGroups = 100;                  // customer_id % 100 in (h)
constexpr int kRowsPerMinute = 5;             // placed_at: about this many rows share a minute

// ---------------------------------------------------------------------------
// Options

struct Options : CommonOptions {
    int64_t rows = 1'000'000;
    int64_t customers = -1;         // -1: rows / 10
    int64_t batch = 100'000;        // rows per load transaction
    int initial_buckets = 256;      // 0: the store's default (64, then splits at max_records)
    std::string aerials_args;       // more aerials module arguments, e.g. "max_open=512" (default none)
    int64_t f_queries = 1'000;
    int64_t g_queries = 500;
    int h_runs = 10;
};

void print_usage() {
    std::printf(
        "usage: bench_tables [options]\n"
        "  --extension PATH      aerials extension to load (default: aerials.so next to this program)\n"
        "  --dir DIR             parent of the temporary directory (default /tmp); removed at the end\n"
        "  --keep                keep the temporary directory\n"
        "  --synchronous=MODE    FULL (default) or NORMAL, on both sides\n"
        "  --only=f,g,h          run only these workloads (the load always runs)\n"
        "  --quick               a smoke run, 10x smaller\n"
        "  --rows N              rows of the table (default 1000000)\n"
        "  --customers N         distinct customer_id values (default rows / 10)\n"
        "  --batch N             rows per load transaction, both sides (default 100000)\n"
        "  --initial-buckets N   aerials initial_buckets (default 256, so that the load does not split);\n"
        "                        0: the store's default (64 buckets, split at 5000 records)\n"
        "  --aerials-args TEXT   more aerials module arguments, e.g. 'max_open=512, workers=2' (default none:\n"
        "                        the store's defaults; for experiments, printed in the output)\n"
        "  --f-queries N         queries of (f) per side (default 1000)\n"
        "  --g-queries N         queries of (g) per side (default 500)\n"
        "  --h-runs N            runs of each (h) query per side (default 10; --quick: 5)\n"
        "workloads:\n"
        "  f  SELECT order_id, total FROM orders WHERE placed_at = ?1, random existing placed_at values\n"
        "     (each matches a handful of rows); the index on placed_at, a column that is not the shard key\n"
        "  g  SELECT order_id, placed_at FROM orders ORDER BY placed_at DESC LIMIT 10\n"
        "  h  GROUP BY customer_id %% 100 with count(*) and sum(total): on aerials through aerials_map (every\n"
        "     bucket aggregates in parallel, the outer query adds up) against the plain query on SQLite;\n"
        "     h2, for information: the same plain query on the aerials virtual table\n"
        "     h3, for information: (h) again, now that the connection has used the table `orders` (h2)\n");
}

Options parse_options(int argc, char** argv) {
    Options o;
    std::optional<int64_t> rows, customers, batch, initial_buckets, f_queries, g_queries, h_runs;
    parse_args(argc, argv, o, 'f', 'h', "--only=f,h", print_usage, [&](const std::string& name, auto&& take) {
        if (name == "--rows") {
            rows = parse_int(name, take(), 1);
        } else if (name == "--customers") {
            customers = parse_int(name, take(), 1);
        } else if (name == "--batch") {
            batch = parse_int(name, take(), 1);
        } else if (name == "--initial-buckets") {
            initial_buckets = parse_int(name, take(), 0);
        } else if (name == "--aerials-args") {
            o.aerials_args = take();
        } else if (name == "--f-queries") {
            f_queries = parse_int(name, take(), 1);
        } else if (name == "--g-queries") {
            g_queries = parse_int(name, take(), 1);
        } else if (name == "--h-runs") {
            h_runs = parse_int(name, take(), 1);
        } else {
            return false;
        }
        return true;
    });
    if (o.quick) {
        o.rows /= 10;
        o.batch /= 10;
        o.f_queries /= 10;
        o.g_queries /= 10;
        o.h_runs = 5;
    }
    if (rows) o.rows = *rows;
    if (customers) o.customers = *customers;
    if (batch) o.batch = *batch;
    if (initial_buckets) o.initial_buckets = static_cast<int>(*initial_buckets);
    if (f_queries) o.f_queries = *f_queries;
    if (g_queries) o.g_queries = *g_queries;
    if (h_runs) o.h_runs = static_cast<int>(*h_runs);
    if (o.customers < 0) o.customers = std::max<int64_t>(1, o.rows / 10);
    if (o.initial_buckets < 0 || o.initial_buckets > 65536) {
        throw std::invalid_argument("--initial-buckets must be from 0 to 65536");
    }
    return o;
}

// ---------------------------------------------------------------------------
// Output

Results g_results("queries/s", rate);

void report(const Result& r) { g_results.report(r); }

// ---------------------------------------------------------------------------
// Data: the same orders on both sides.

// order_id i + 1 (inserted in ascending order), customer_id uniform in
// [1, customers], total a whole number of cents from 1.00 to 999.99,
// placed_at a minute 'YYYY-MM-DD HH:MM' uniform over rows / 5 minutes from
// 2024-01-01 00:00, so that a minute holds about 5 orders.
struct Data {
    std::vector<int64_t> customer;
    std::vector<double> total;
    std::vector<std::string> placed_at;
    int64_t minutes = 0;

    Data(int64_t rows, int64_t customers) {
        customer.resize(static_cast<size_t>(rows));
        total.resize(static_cast<size_t>(rows));
        placed_at.resize(static_cast<size_t>(rows));
        minutes = std::max<int64_t>(1, rows / kRowsPerMinute);
        const time_t base = 1704067200;  // 2024-01-01 00:00:00 UTC
        uint64_t state = kSeed;
        char buf[32];
        for (int64_t i = 0; i < rows; ++i) {
            size_t k = static_cast<size_t>(i);
            customer[k] = 1 + static_cast<int64_t>(below(state, static_cast<uint64_t>(customers)));
            total[k] = static_cast<double>(100 + below(state, 99'900)) / 100.0;
            time_t t = base + static_cast<time_t>(below(state, static_cast<uint64_t>(minutes))) * 60;
            tm parts{};
            gmtime_r(&t, &parts);
            std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &parts);
            placed_at[k] = buf;
        }
    }
    int64_t rows() const { return static_cast<int64_t>(customer.size()); }
    static int64_t order_id(int64_t i) { return i + 1; }
};

// ---------------------------------------------------------------------------
// The two sides

const char* const kColumns =
    "order_id INTEGER, customer_id INTEGER NOT NULL, total REAL, placed_at TEXT, PRIMARY KEY(customer_id, order_id)";

struct Env {
    Options options;
    fs::path tmp;  // the run's temporary directory
};

std::string aerials_create_sql(const Env& env, const std::string& root) {
    std::string sql = "CREATE VIRTUAL TABLE IF NOT EXISTS orders USING aerials(root=" + sql_quote(root) +
                      ", synchronous=" + sql_quote(env.options.synchronous) + ", shard_key=customer_id, " + kColumns +
                      ", INDEX(placed_at)";
    if (env.options.initial_buckets > 0) sql += ", initial_buckets=" + std::to_string(env.options.initial_buckets);
    if (!env.options.aerials_args.empty()) sql.append(", ").append(env.options.aerials_args);
    return sql + ")";
}

std::string sqlite_create_sql() {
    return std::string("CREATE TABLE IF NOT EXISTS orders(") + kColumns +
           "); CREATE INDEX IF NOT EXISTS orders_placed_at ON orders(placed_at)";
}

// Opens (creating if needed) one side in `dir`.
SideHandle open_side(const Env& env, Side side, const fs::path& dir) {
    fs::create_directories(dir);
    SideHandle h{side, dir, nullptr, ""};
    if (side == Side::kSqlite) {
        h.conn = std::make_unique<Connection>((dir / "orders.db").string());
        set_pragmas(*h.conn, env.options.synchronous);
        h.conn->exec(sqlite_create_sql());
        return h;
    }
    h.conn = std::make_unique<Connection>((dir / "main.db").string());
    set_pragmas(*h.conn, env.options.synchronous);
    h.conn->load_extension(env.options.extension);
    h.store_root = (dir / "store").string();
    h.conn->exec(aerials_create_sql(env, h.store_root));
    return h;
}

std::string aerials_stats(SideHandle& h) {
    if (h.side != Side::kAerials) return "";
    try {
        return h.conn->query_text("SELECT aerials_stats(" + sql_quote(h.store_root) + ")");
    } catch (const std::exception& e) {
        return std::string("(none: ") + e.what() + ")";
    }
}

int64_t bucket_count(SideHandle& h) {
    return h.conn->query_int("SELECT count(*) FROM aerials_buckets(" + sql_quote(h.store_root) + ")");
}

void print_plan(SideHandle& h, const std::string& sql) {
    Statement s(*h.conn, "EXPLAIN QUERY PLAN " + sql);
    while (s.step()) {
        line("         plan %-7s %s", side_name(h.side), column_text(s.get(), 3).c_str());
    }
}

// Per-query latencies of one side, for the printed percentiles.
struct Latencies {
    std::vector<double> seconds;
    std::string summary() {
        if (seconds.empty()) return "-";
        std::sort(seconds.begin(), seconds.end());
        auto at = [&](double q) {
            return seconds[std::min(seconds.size() - 1, static_cast<size_t>(q * static_cast<double>(seconds.size())))];
        };
        double sum = 0;
        for (double s : seconds) sum += s;
        char buf[160];
        std::snprintf(buf, sizeof buf, "mean %.3f ms, p50 %.3f ms, p99 %.3f ms, max %.3f ms",
                      1e3 * sum / static_cast<double>(seconds.size()), 1e3 * at(0.5), 1e3 * at(0.99),
                      1e3 * seconds.back());
        return buf;
    }
};

// ---------------------------------------------------------------------------
// The load

// Inserts rows [from, to) in one transaction. Returns seconds, COMMIT
// included; adds the COMMIT's own seconds to *commit_seconds.
double insert_rows(Connection& conn, const Data& data, int64_t from, int64_t to, double* commit_seconds) {
    Statement insert(conn, "INSERT INTO orders(order_id, customer_id, total, placed_at) VALUES (?1, ?2, ?3, ?4)");
    Statement begin(conn, "BEGIN");
    Statement commit(conn, "COMMIT");
    auto start = Clock::now();
    begin.step();
    for (int64_t i = from; i < to; ++i) {
        size_t k = static_cast<size_t>(i);
        sqlite3_bind_int64(insert.get(), 1, Data::order_id(i));
        sqlite3_bind_int64(insert.get(), 2, data.customer[k]);
        sqlite3_bind_double(insert.get(), 3, data.total[k]);
        const std::string& placed = data.placed_at[k];
        sqlite3_bind_text(insert.get(), 4, placed.data(), static_cast<int>(placed.size()), SQLITE_STATIC);
        insert.step();
        insert.reset();
    }
    auto commit_start = Clock::now();
    commit.step();
    *commit_seconds += seconds_since(commit_start);
    return seconds_since(start);
}

// The checks after the load: the same count, sums and distinct customers as
// the data (untimed; the time is printed as a setup step).
void verify_load(SideHandle& h, const Data& data) {
    int64_t sum_ids = 0, cents = 0;
    std::set<int64_t> customers;
    for (int64_t i = 0; i < data.rows(); ++i) {
        sum_ids += Data::order_id(i);
        cents += static_cast<int64_t>(std::llround(data.total[static_cast<size_t>(i)] * 100));
    }
    Statement s(*h.conn, "SELECT count(*), sum(order_id), sum(CAST(round(total * 100) AS INTEGER)), "
                         "count(DISTINCT placed_at), max(placed_at) FROM orders");
    if (!s.step()) throw std::runtime_error("verify: no row");
    int64_t n = sqlite3_column_int64(s.get(), 0), ids = sqlite3_column_int64(s.get(), 1),
            got_cents = sqlite3_column_int64(s.get(), 2);
    if (n != data.rows() || ids != sum_ids || got_cents != cents) {
        throw std::runtime_error(std::string(side_name(h.side)) + ": after the load count(*) " + std::to_string(n) +
                                 ", sum(order_id) " + std::to_string(ids) + ", total cents " +
                                 std::to_string(got_cents) + "; expected " + std::to_string(data.rows()) + ", " +
                                 std::to_string(sum_ids) + ", " + std::to_string(cents));
    }
}

void load(const Env& env, const Data& data) {
    const Options& o = env.options;
    const int64_t rounds64 = (o.rows + o.batch - 1) / o.batch;
    line("\n(load) %s rows on both sides, %s rows per transaction (BEGIN ... COMMIT), the sides taking turns",
         with_commas(o.rows).c_str(), with_commas(o.batch).c_str());
    line("    transaction by transaction, alternating which goes first (setup for f-h; printed, not a goal)");
    if (o.initial_buckets > 0) {
        line("    aerials: initial_buckets=%d, so that the store does not split during the load (%s rows per bucket)",
             o.initial_buckets, with_commas(o.rows / o.initial_buckets).c_str());
    } else {
        line("    aerials: the store's default buckets (64), splitting at its default max_records (5000) as it fills");
    }
    SideHandle h[2];
    for (Side side : {Side::kAerials, Side::kSqlite}) {
        auto start = Clock::now();
        h[side == Side::kAerials ? 0 : 1] = open_side(env, side, env.tmp / side_name(side));
        setup_step(std::string("load/") + side_name(side) + ": open, create table" +
                       (side == Side::kSqlite ? " and index" : " (creates the store)"),
                   seconds_since(start));
    }
    double commits[2] = {0, 0};
    auto [t_aerials, t_sqlite] = interleaved(rounds64, static_cast<int>(rounds64), [&](int side, int64_t from, int64_t to) {
        double s = 0;
        for (int64_t r = from; r < to; ++r) {
            s += insert_rows(*h[side].conn, data, r * o.batch, std::min(o.rows, (r + 1) * o.batch), &commits[side]);
        }
        return s;
    });
    double t[2] = {t_aerials, t_sqlite};
    for (int side = 0; side < 2; ++side) {
        time_line(std::string("load/") + side_name(h[side].side) + ": " + with_commas(o.rows) + " inserts in " +
                      with_commas(rounds64) + " transactions",
                  t[side]);
        line("         of which COMMIT statements%s: %.3f s",
             side == 0 ? " (bucket commits, then any splits)" : "", commits[side]);
    }
    for (int side = 0; side < 2; ++side) {
        auto start = Clock::now();
        verify_load(h[side], data);
        setup_step(std::string("load/") + side_name(h[side].side) +
                       ": check count, sum(order_id), sum(total) (untimed check)",
                   seconds_since(start));
    }
    line("         aerials buckets after the load: %s", with_commas(bucket_count(h[0])).c_str());
    line("         aerials stats after the load: %s", aerials_stats(h[0]).c_str());
    auto size_of = [](const fs::path& dir) {
        uintmax_t bytes = 0;
        for (const auto& e : fs::recursive_directory_iterator(dir)) {
            if (e.is_regular_file()) bytes += e.file_size();
        }
        return bytes;
    };
    for (int side = 0; side < 2; ++side) {
        auto start = Clock::now();
        fs::path dir = h[side].dir;
        h[side].conn.reset();  // checkpoints the WALs
        setup_step(std::string("load/") + side_name(side == 0 ? Side::kAerials : Side::kSqlite) +
                       ": close the load connection",
                   seconds_since(start));
        line("         %s files: %.1f MiB", side == 0 ? "aerials" : "sqlite",
             static_cast<double>(size_of(dir)) / (1024.0 * 1024.0));
    }
    Result r{"L", "load, " + with_commas(std::min(o.batch, o.rows)) + " rows per transaction", "aerials",
             o.rows / t_aerials, "sqlite", o.rows / t_sqlite, 0};
    r.unit = "rows/s";
    report(r);
}

// Fresh connections on the loaded data, as an application would open them.
void reopen(const Env& env, SideHandle (&h)[2], const std::string& label) {
    for (Side side : {Side::kAerials, Side::kSqlite}) {
        auto start = Clock::now();
        h[side == Side::kAerials ? 0 : 1] = open_side(env, side, env.tmp / side_name(side));
        setup_step(label + "/" + side_name(side) + ": open a connection on the loaded data", seconds_since(start));
    }
}

// ---------------------------------------------------------------------------
// (f): WHERE placed_at = ?1

struct Expected {
    int64_t rows = 0;
    int64_t sum_ids = 0;
};

void workload_f(const Env& env, const Data& data) {
    const Options& o = env.options;
    const std::string sql = "SELECT order_id, total FROM orders WHERE placed_at = ?1";
    std::unordered_map<std::string, Expected> expected;
    expected.reserve(static_cast<size_t>(data.minutes) * 2);
    for (int64_t i = 0; i < data.rows(); ++i) {
        Expected& e = expected[data.placed_at[static_cast<size_t>(i)]];
        ++e.rows;
        e.sum_ids += Data::order_id(i);
    }
    std::vector<uint32_t> picks = random_indices(o.f_queries, data.rows(), kSeed + 1);
    int64_t matched = 0;
    for (uint32_t i : picks) matched += expected[data.placed_at[i]].rows;
    line("\n(f) %s queries %s", with_commas(o.f_queries).c_str(), sql.c_str());
    line("    ?1: the placed_at of a random row (%s distinct minutes; these queries match %.2f rows on average),",
         with_commas(static_cast<int64_t>(expected.size())).c_str(),
         static_cast<double>(matched) / static_cast<double>(o.f_queries));
    line("    the same sequence on both sides; every result checked (row count and sum of order_id);");
    line("    the two sides take turns in %d rounds, alternating which goes first", kRounds);
    SideHandle h[2];
    reopen(env, h, "f");
    for (auto& side : h) print_plan(side, sql);

    Latencies lat[2];
    auto run = [&](int side, int64_t from, int64_t to, Latencies* record) {
        Statement select(*h[side].conn, sql);
        int64_t wrong = 0;
        auto start = Clock::now();
        for (int64_t q = from; q < to; ++q) {
            auto q_start = Clock::now();
            const std::string& placed = data.placed_at[picks[static_cast<size_t>(q)]];
            sqlite3_bind_text(select.get(), 1, placed.data(), static_cast<int>(placed.size()), SQLITE_STATIC);
            Expected got;
            while (select.step()) {
                ++got.rows;
                got.sum_ids += sqlite3_column_int64(select.get(), 0);
                (void)sqlite3_column_double(select.get(), 1);
            }
            select.reset();
            if (record) record->seconds.push_back(seconds_since(q_start));
            const Expected& want = expected[placed];
            if (got.rows != want.rows || got.sum_ids != want.sum_ids) ++wrong;
        }
        double seconds = seconds_since(start);
        if (wrong) {
            throw std::runtime_error(std::string("(f) ") + side_name(h[side].side) + ": " + std::to_string(wrong) +
                                     " wrong results");
        }
        return seconds;
    };
    // Warm-up: the first queries open files (every bucket on aerials).
    const int64_t warm = std::min<int64_t>(o.f_queries, 100);
    for (int side = 0; side < 2; ++side) {
        setup_step(std::string("f/") + side_name(h[side].side) + ": warm-up, the first " + std::to_string(warm) +
                       " queries of the sequence (untimed)",
                   run(side, 0, warm, nullptr));
    }
    auto [t_aerials, t_sqlite] = interleaved(o.f_queries, kRounds, [&](int side, int64_t from, int64_t to) {
        return run(side, from, to, &lat[side]);
    });
    double t[2] = {t_aerials, t_sqlite};
    for (int side = 0; side < 2; ++side) {
        time_line(std::string("f/") + side_name(h[side].side) + ": " + with_commas(o.f_queries) + " queries", t[side]);
        line("         latency %-7s %s", side_name(h[side].side), lat[side].summary().c_str());
    }
    line("         aerials stats: %s", aerials_stats(h[0]).c_str());
    report({"f", "WHERE placed_at = ? (indexed, not shard key)", "aerials", o.f_queries / t_aerials, "sqlite",
            o.f_queries / t_sqlite, 0.5});
}

// ---------------------------------------------------------------------------
// (g): ORDER BY placed_at DESC LIMIT 10

void workload_g(const Env& env, const Data& data) {
    const Options& o = env.options;
    const std::string sql = "SELECT order_id, placed_at FROM orders ORDER BY placed_at DESC LIMIT 10";
    // The expected placed_at sequence (ties among equal placed_at may come
    // in any order of order_id, so each row is checked against its order).
    std::vector<std::string> top(data.placed_at);
    size_t k = std::min<size_t>(10, top.size());
    std::partial_sort(top.begin(), top.begin() + static_cast<long>(k), top.end(), std::greater<>());
    top.resize(k);
    line("\n(g) %s queries %s", with_commas(o.g_queries).c_str(), sql.c_str());
    line("    every result checked: the 10 largest placed_at in order, each order_id with its own placed_at;");
    line("    the two sides take turns in %d rounds, alternating which goes first", kRounds);
    SideHandle h[2];
    reopen(env, h, "g");
    for (auto& side : h) print_plan(side, sql);

    Latencies lat[2];
    auto run = [&](int side, int64_t from, int64_t to, Latencies* record) {
        Statement select(*h[side].conn, sql);
        int64_t wrong = 0;
        auto start = Clock::now();
        for (int64_t q = from; q < to; ++q) {
            auto q_start = Clock::now();
            size_t n = 0;
            bool ok = true;
            while (select.step()) {
                int64_t id = sqlite3_column_int64(select.get(), 0);
                const char* placed = reinterpret_cast<const char*>(sqlite3_column_text(select.get(), 1));
                if (n >= top.size() || !placed || top[n] != placed || id < 1 || id > data.rows() ||
                    data.placed_at[static_cast<size_t>(id - 1)] != placed) {
                    ok = false;
                }
                ++n;
            }
            select.reset();
            if (record) record->seconds.push_back(seconds_since(q_start));
            if (!ok || n != top.size()) ++wrong;
        }
        double seconds = seconds_since(start);
        if (wrong) {
            throw std::runtime_error(std::string("(g) ") + side_name(h[side].side) + ": " + std::to_string(wrong) +
                                     " wrong results");
        }
        return seconds;
    };
    const int64_t warm = std::min<int64_t>(o.g_queries, 10);
    for (int side = 0; side < 2; ++side) {
        setup_step(std::string("g/") + side_name(h[side].side) + ": warm-up, " + std::to_string(warm) +
                       " queries (untimed)",
                   run(side, 0, warm, nullptr));
    }
    auto [t_aerials, t_sqlite] = interleaved(o.g_queries, kRounds, [&](int side, int64_t from, int64_t to) {
        return run(side, from, to, &lat[side]);
    });
    double t[2] = {t_aerials, t_sqlite};
    for (int side = 0; side < 2; ++side) {
        time_line(std::string("g/") + side_name(h[side].side) + ": " + with_commas(o.g_queries) + " queries", t[side]);
        line("         latency %-7s %s", side_name(h[side].side), lat[side].summary().c_str());
    }
    line("         aerials stats: %s", aerials_stats(h[0]).c_str());
    report({"g", "ORDER BY placed_at DESC LIMIT 10", "aerials", o.g_queries / t_aerials, "sqlite",
            o.g_queries / t_sqlite, 0.5});
}

// ---------------------------------------------------------------------------
// (h): GROUP BY customer_id % 100

struct Group {
    int64_t count = 0;
    double sum = 0;
};

using Groups = std::map<int64_t, Group>;

Groups run_groups(Statement& s) {
    Groups out;
    while (s.step()) {
        int64_t g = sqlite3_column_int64(s.get(), 0);
        Group& group = out[g];
        group.count += sqlite3_column_int64(s.get(), 1);
        group.sum += sqlite3_column_double(s.get(), 2);
    }
    s.reset();
    return out;
}

// Counts must be equal; sums of reals added in another order may differ in
// the last bits: equal within 1e-9 relative.
std::string compare_groups(const Groups& got, const Groups& want) {
    if (got.size() != want.size()) {
        return std::to_string(got.size()) + " groups, expected " + std::to_string(want.size());
    }
    for (const auto& [g, w] : want) {
        auto it = got.find(g);
        if (it == got.end()) return "group " + std::to_string(g) + " missing";
        if (it->second.count != w.count) {
            return "group " + std::to_string(g) + ": count " + std::to_string(it->second.count) + ", expected " +
                   std::to_string(w.count);
        }
        if (std::fabs(it->second.sum - w.sum) > 1e-9 * std::max(1.0, std::fabs(w.sum))) {
            char buf[160];
            std::snprintf(buf, sizeof buf, "group %" PRId64 ": sum %.6f, expected %.6f", g, it->second.sum, w.sum);
            return buf;
        }
    }
    return "";
}

void workload_h(const Env& env, const Data& data) {
    const Options& o = env.options;
    const std::string plain = "SELECT customer_id % 100, count(*), sum(total) FROM orders GROUP BY 1";
    SideHandle h[2];
    line("\n(h) GROUP BY aggregate over all %s rows, %d runs per side, the sides taking turns run by run;",
         with_commas(o.rows).c_str(), o.h_runs);
    line("    every result checked against the data (counts equal, sums within 1e-9 relative) and the two sides'");
    line("    results against each other");
    reopen(env, h, "h");
    const std::string mapped = "SELECT c0, sum(c1), sum(c2) FROM aerials_map(" + sql_quote(h[0].store_root) +
                               ", 'SELECT customer_id % 100 AS g, count(*), sum(total) FROM orders GROUP BY 1') "
                               "GROUP BY 1";
    line("    aerials: %s", mapped.c_str());
    line("    sqlite:  %s", plain.c_str());
    line("    h2 (information): the sqlite query, unchanged, on the aerials virtual table");
    line("    h3 (information): h again, on the same connection, now that h2 has used the table `orders` (h runs");
    line("    first, on a connection that has not touched `orders` since it was opened)");

    Groups want;
    {
        std::vector<long double> sums(kGroups, 0);
        for (int64_t i = 0; i < data.rows(); ++i) {
            size_t k = static_cast<size_t>(i);
            Group& g = want[data.customer[k] % kGroups];
            ++g.count;
            sums[static_cast<size_t>(data.customer[k] % kGroups)] += data.total[k];
        }
        for (auto& [g, group] : want) group.sum = static_cast<double>(sums[static_cast<size_t>(g)]);
    }
    print_plan(h[0], mapped);
    print_plan(h[1], plain);

    struct Query {
        const char* id;
        const char* name;
        std::string aerials_sql;
        double goal;
    };
    std::vector<Query> queries = {
        {"h", "GROUP BY: aerials_map vs one file", mapped, 1.5},
        {"h2", "GROUP BY: virtual table (no map) vs one file", plain, 0},
        {"h3", "GROUP BY: aerials_map after h2 vs one file", mapped, 0},
    };
    for (const Query& q : queries) {
        Statement stmts[2] = {Statement(*h[0].conn, q.aerials_sql), Statement(*h[1].conn, plain)};
        Groups last[2];
        auto run = [&](int side, int64_t from, int64_t to) {
            auto start = Clock::now();
            for (int64_t r = from; r < to; ++r) last[side] = run_groups(stmts[side]);
            double seconds = seconds_since(start);
            std::string problem = compare_groups(last[side], want);
            if (!problem.empty()) {
                throw std::runtime_error(std::string("(") + q.id + ") " + side_name(h[side].side) + ": " + problem);
            }
            return seconds;
        };
        for (int side = 0; side < 2; ++side) {
            setup_step(std::string(q.id) + "/" + side_name(h[side].side) + ": warm-up, one run (untimed)",
                       run(side, 0, 1));
        }
        auto [t_aerials, t_sqlite] = interleaved(o.h_runs, o.h_runs, run);
        std::string between = compare_groups(last[0], last[1]);
        if (!between.empty()) throw std::runtime_error(std::string("(") + q.id + ") aerials against sqlite: " + between);
        line("         %s: both sides gave the same %zu groups (e.g. group 7: count %s, sum(total) %.2f)", q.id,
             last[0].size(), with_commas(last[0][7].count).c_str(), last[0][7].sum);
        time_line(std::string(q.id) + "/aerials: " + std::to_string(o.h_runs) + " runs", t_aerials);
        time_line(std::string(q.id) + "/sqlite:  " + std::to_string(o.h_runs) + " runs", t_sqlite);
        line("         per run: aerials %.1f ms, sqlite %.1f ms; rows aggregated per second: aerials %s, sqlite %s",
             1e3 * t_aerials / o.h_runs, 1e3 * t_sqlite / o.h_runs, rate(o.rows * o.h_runs / t_aerials).c_str(),
             rate(o.rows * o.h_runs / t_sqlite).c_str());
        report({q.id, q.name, "aerials", o.h_runs / t_aerials, "sqlite", o.h_runs / t_sqlite, q.goal});
        line("         aerials stats: %s", aerials_stats(h[0]).c_str());
    }
}

// ---------------------------------------------------------------------------

// Raises the soft RLIMIT_NOFILE to the hard limit: a load transaction keeps
// every bucket it wrote open until COMMIT (3 descriptors each in WAL).
void raise_fd_limit(rlim_t wanted) {
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    rlimit before = lim;
    if (lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    getrlimit(RLIMIT_NOFILE, &lim);
    line("  fds        RLIMIT_NOFILE soft %llu -> %llu (hard %llu; wanted %llu: 3 per bucket held by a load "
         "transaction, plus margin)",
         (unsigned long long)before.rlim_cur, (unsigned long long)lim.rlim_cur, (unsigned long long)lim.rlim_max,
         (unsigned long long)wanted);
    if (lim.rlim_cur < wanted) line("             WARNING: fewer descriptors than wanted; the load may fail");
}

int run(const Options& o) {
    Env env{o, {}};
    check_extension(o);
    RunDirectory directory(o.parent_dir, "aerials-bench-tables-", o.keep);
    env.tmp = directory.path();

    print_banner("bench_tables: a sharded aerials table against plain SQLite", o);
    line("  directory  %s (DIR/aerials: main.db and the store; DIR/sqlite: orders.db)", env.tmp.c_str());
    line("  pragmas    both sides: journal_mode=WAL, synchronous=%s; other pragmas at their defaults (no ANALYZE",
         o.synchronous.c_str());
    line("             on either side); aerials: on its connection's own main.db, and aerials(..., synchronous='%s')",
         o.synchronous.c_str());
    if (o.aerials_args.empty()) {
        line("             for the catalog and every bucket; the store's other settings at their defaults (max_open,");
        line("             workers = one per core)");
    } else {
        line("             for the catalog and every bucket; more arguments (--aerials-args): %s", o.aerials_args.c_str());
    }
    line("  aerials    %s", aerials_create_sql(env, "DIR/aerials/store").c_str());
    line("             (%s)", o.initial_buckets > 0
                                  ? ("initial_buckets=" + std::to_string(o.initial_buckets) +
                                     ": a new store of that many buckets, so that the load does not split")
                                        .c_str()
                                  : "no initial_buckets: 64 buckets, split at 5000 records during the load");
    line("  sqlite     %s", sqlite_create_sql().c_str());
    line("  data       %s orders: order_id 1..%s inserted in ascending order, customer_id uniform in 1..%s,",
         with_commas(o.rows).c_str(), with_commas(o.rows).c_str(), with_commas(o.customers).c_str());
    line("             total a whole number of cents in 1.00..999.99, placed_at a minute 'YYYY-MM-DD HH:MM' uniform");
    line("             over %s minutes from 2024-01-01 (about %d orders a minute); fixed seed, the same on both sides",
         with_commas(std::max<int64_t>(1, o.rows / kRowsPerMinute)).c_str(), kRowsPerMinute);
    line("  order      the two sides take turns (transactions in the load, rounds of queries), alternating which");
    line("             goes first, so that both meet the same load of this (shared) machine");
    int64_t buckets = o.initial_buckets > 0 ? o.initial_buckets : std::max<int64_t>(64, o.rows / 2500);
    raise_fd_limit(static_cast<rlim_t>(buckets * 3 + 256));

    auto start = Clock::now();
    Data data(o.rows, o.customers);
    setup_step("generate the rows in memory", seconds_since(start));

    load(env, data);
    if (o.only.count('f')) workload_f(env, data);
    if (o.only.count('g')) workload_g(env, data);
    if (o.only.count('h')) workload_h(env, data);

    g_results.print_table("Summary (ratio = aerials / sqlite; higher is better for aerials)", 46, 8, 20, "ref");
    g_results.print_verdict();
    return 0;
}

}  // namespace

int main(int argc, char** argv) { return bench::run_main("bench_tables", argc, argv, parse_options, run); }
