// What the bench programs that compare aerials with plain SQLite share: the
// options every one of them takes, timing and printing, the RESULT lines and
// the summary table, thin SQLite handles, deterministic random numbers, the
// two sides and their interleaved runs, and the run's temporary directory.
//
// Header-only: each bench/bench_<name>.cpp is one program (bench/CMakeLists.txt).
#pragma once

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace bench {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------
// Output

inline std::string with_commas(int64_t v) {
    std::string digits = std::to_string(v < 0 ? -v : v), out;
    for (size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
        out.push_back(digits[i]);
    }
    return v < 0 ? "-" + out : out;
}

// A rate as a whole number with thousands separators.
inline std::string whole_rate(double per_second) { return with_commas(static_cast<int64_t>(per_second + 0.5)); }

// The same, but with two decimals below 100 (a few slow queries per second
// would otherwise round to nothing).
inline std::string rate(double per_second) {
    if (per_second > 0 && per_second < 100) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.2f", per_second);
        return buf;
    }
    return whole_rate(per_second);
}

inline double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// printf, a newline, and a flush: progress shows while a long run goes on.
inline void line(const char* format, ...) __attribute__((format(printf, 1, 2)));
inline void line(const char* format, ...) {
    va_list args;
    va_start(args, format);
    std::vprintf(format, args);
    va_end(args);
    std::printf("\n");
    std::fflush(stdout);
}

inline void setup_step(const std::string& what, double seconds) {
    line("  setup  %-74s %9.3f s", what.c_str(), seconds);
}

inline void time_line(const std::string& what, double seconds) {
    line("  time   %-74s %9.3f s", what.c_str(), seconds);
}

// One row of the final table.
struct Result {
    std::string id;
    std::string name;
    std::string measured_label;   // e.g. "aerials"
    double measured = 0;          // per second
    std::string reference_label;  // e.g. "sqlite"
    double reference = 0;         // per second
    double goal = 0;              // 0: information only
    std::string unit = "";        // "": the program's default unit (Results)
    double ratio() const { return reference > 0 ? measured / reference : 0; }
};

// The results of one run: each printed as a RESULT line when reported, all
// of them again in the summary table at the end.
class Results {
public:
    Results(std::string default_unit, std::string (*format_rate)(double))
        : default_unit_(std::move(default_unit)), format_rate_(format_rate) {}

    void report(Result r) {
        if (r.unit.empty()) r.unit = default_unit_;
        char goal_text[64];
        if (r.goal > 0) {
            std::snprintf(goal_text, sizeof goal_text, "%s%.2f", r.ratio() >= r.goal ? "goal >= " : "MISSES goal >= ",
                          r.goal);
        } else {
            std::snprintf(goal_text, sizeof goal_text, "information");
        }
        line("RESULT %-4s %-42s %s %s %s, %s %s %s, ratio %.3f (%s)", r.id.c_str(), r.name.c_str(),
             r.measured_label.c_str(), format_rate_(r.measured).c_str(), r.unit.c_str(), r.reference_label.c_str(),
             format_rate_(r.reference).c_str(), r.unit.c_str(), r.ratio(), goal_text);
        results_.push_back(std::move(r));
    }

    const Result& back() const { return results_.back(); }

    // The summary: `title`, then a table whose workload, label and rate
    // columns are that wide; `reference_header` heads the reference label.
    void print_table(const char* title, int name_width, int label_width, int rate_width,
                     const char* reference_header) const {
        line("\n%s", title);
        line("%-5s %-*s %-*s %*s  %-*s %*s  %7s  %s", "id", name_width, "workload", label_width, "measured",
             rate_width, "rate", label_width, reference_header, rate_width, "rate", "ratio", "goal");
        for (const Result& r : results_) {
            char goal[48];
            if (r.goal > 0) {
                std::snprintf(goal, sizeof goal, ">= %.2f %s", r.goal, r.ratio() >= r.goal ? "met" : "MISSED");
            } else {
                std::snprintf(goal, sizeof goal, "(information)");
            }
            line("%-5s %-*s %-*s %*s  %-*s %*s  %7.3f  %s", r.id.c_str(), name_width, r.name.c_str(), label_width,
                 r.measured_label.c_str(), rate_width, (format_rate_(r.measured) + " " + r.unit).c_str(), label_width,
                 r.reference_label.c_str(), rate_width, (format_rate_(r.reference) + " " + r.unit).c_str(), r.ratio(),
                 goal);
        }
    }

    void print_verdict() const {
        bool all_met = true;
        for (const Result& r : results_) {
            if (r.goal > 0 && r.ratio() < r.goal) all_met = false;
        }
        line("%s", all_met ? "every goal met" : "some goals MISSED (see the table)");
    }

private:
    std::string default_unit_;
    std::string (*format_rate_)(double);
    std::vector<Result> results_;
};

// ---------------------------------------------------------------------------
// Options

// What every bench program takes; a program's own Options derive from it.
struct CommonOptions {
    std::string extension;          // path of aerials.so
    std::string parent_dir = "/tmp";
    std::string synchronous = "FULL";
    bool quick = false;
    bool keep = false;
    std::set<char> only;            // the workloads to run; all of them unless --only
};

inline int64_t parse_int(const std::string& name, const std::string& text, int64_t min) {
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno != 0 || v < min) {
        throw std::invalid_argument(name + " needs an integer >= " + std::to_string(min) + ", got '" + text + "'");
    }
    return v;
}

inline fs::path executable_dir() {
    std::error_code ec;
    fs::path self = fs::read_symlink("/proc/self/exe", ec);
    return ec ? fs::current_path() : self.parent_path();
}

// Walks argv, taking "--name value" and "--name=value" alike. The common
// options are handled here (--help, --quick, --keep, --extension, --dir,
// --synchronous, --only=<workloads from first to last>); any other goes to
// other(name, take), where take() returns its value, and other returns false
// for an option it does not know either. `only_example` completes the message
// for an empty --only.
template <class Other>
void parse_args(int argc, char** argv, CommonOptions& o, char first, char last, const char* only_example,
                void (*print_usage)(), Other&& other) {
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        std::string name = arg, value;
        bool has_value = false;
        if (size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
            name = arg.substr(0, eq);
            value = arg.substr(eq + 1);
            has_value = true;
        }
        auto take = [&]() -> std::string {
            if (has_value) return value;
            if (i + 1 >= argc) throw std::invalid_argument(name + " needs a value");
            return argv[++i];
        };
        if (name == "--help" || name == "-h") {
            print_usage();
            std::exit(0);
        } else if (name == "--quick") {
            o.quick = true;
        } else if (name == "--keep") {
            o.keep = true;
        } else if (name == "--extension") {
            o.extension = take();
        } else if (name == "--dir") {
            o.parent_dir = take();
        } else if (name == "--synchronous") {
            std::string v = take();
            for (char& c : v) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            if (v != "FULL" && v != "NORMAL") throw std::invalid_argument("--synchronous must be FULL or NORMAL");
            o.synchronous = v;
        } else if (name == "--only") {
            o.only.clear();
            std::string v = take();
            for (char c : v) {
                if (c == ',' || c == ' ') continue;
                if (c < first || c > last) {
                    throw std::invalid_argument(std::string("--only: unknown workload '") + c + "'");
                }
                o.only.insert(c);
            }
            if (o.only.empty()) {
                throw std::invalid_argument(std::string("--only needs workloads, e.g. ") + only_example);
            }
        } else if (!other(name, take)) {
            throw std::invalid_argument("unknown option '" + arg + "' (see --help)");
        }
    }
    if (o.only.empty()) {
        for (char c = first; c <= last; ++c) o.only.insert(c);
    }
    if (o.extension.empty()) o.extension = (executable_dir() / "aerials.so").string();
}

// ---------------------------------------------------------------------------
// SQLite helpers: these programs link libsqlite3; the extension uses the same
// copy through the API table it is given at load time.

class Connection {
public:
    explicit Connection(const std::string& path) {
        int rc = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
        if (rc != SQLITE_OK) {
            std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
            sqlite3_close_v2(db_);
            throw std::runtime_error("cannot open '" + path + "': " + message);
        }
        sqlite3_extended_result_codes(db_, 1);
    }
    ~Connection() {
        if (db_) sqlite3_close_v2(db_);
    }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    sqlite3* get() const { return db_; }

    void exec(const std::string& sql) {
        char* err = nullptr;
        int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
        if (rc != SQLITE_OK) {
            std::string message = err ? err : sqlite3_errmsg(db_);
            sqlite3_free(err);
            throw std::runtime_error(sql + ": " + message);
        }
    }

    std::string query_text(const std::string& sql);
    int64_t query_int(const std::string& sql);

    void load_extension(const std::string& path) {
        sqlite3_enable_load_extension(db_, 1);
        char* err = nullptr;
        int rc = sqlite3_load_extension(db_, path.c_str(), nullptr, &err);
        std::string message = err ? err : "";
        sqlite3_free(err);
        sqlite3_enable_load_extension(db_, 0);
        if (rc != SQLITE_OK) {
            throw std::runtime_error("cannot load extension '" + path + "': " + message +
                                     " (build the target aerials, or give --extension PATH)");
        }
    }

private:
    sqlite3* db_ = nullptr;
};

class Statement {
public:
    Statement(Connection& conn, const std::string& sql) : db_(conn.get()), sql_(sql) {
        if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK) {
            throw std::runtime_error("prepare " + sql + ": " + sqlite3_errmsg(db_));
        }
    }
    ~Statement() { sqlite3_finalize(stmt_); }
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;

    sqlite3_stmt* get() const { return stmt_; }

    // true: a row; false: done. Throws on an error.
    bool step() {
        int rc = sqlite3_step(stmt_);
        if (rc == SQLITE_ROW) return true;
        if (rc == SQLITE_DONE) return false;
        fail(rc);
    }
    void reset() { sqlite3_reset(stmt_); }
    [[noreturn]] void fail(int rc) const {
        throw std::runtime_error(sql_ + ": " + sqlite3_errstr(rc) + ": " + sqlite3_errmsg(db_));
    }

private:
    sqlite3* db_;
    std::string sql_;
    sqlite3_stmt* stmt_ = nullptr;
};

inline std::string Connection::query_text(const std::string& sql) {
    Statement s(*this, sql);
    if (!s.step()) return "";
    const unsigned char* t = sqlite3_column_text(s.get(), 0);
    return t ? reinterpret_cast<const char*>(t) : "";
}

inline int64_t Connection::query_int(const std::string& sql) {
    Statement s(*this, sql);
    if (!s.step()) throw std::runtime_error(sql + ": no row");
    return sqlite3_column_int64(s.get(), 0);
}

inline std::string sql_quote(const std::string& text) {
    std::string out = "'";
    for (char c : text) {
        out.push_back(c);
        if (c == '\'') out.push_back('\'');
    }
    return out + "'";
}

inline std::string column_text(sqlite3_stmt* stmt, int column) {
    const unsigned char* t = sqlite3_column_text(stmt, column);
    return t ? std::string(reinterpret_cast<const char*>(t), static_cast<size_t>(sqlite3_column_bytes(stmt, column)))
             : std::string();
}

// ---------------------------------------------------------------------------
// Deterministic random numbers: the same data and sequences on every run and
// every machine.

inline uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Uniform in [0, n) by multiply-shift: unbiased enough for n << 2^32.
inline uint64_t below(uint64_t& state, uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(splitmix64(state)) * n) >> 64);
}

// Uniform random indices in [0, n): the same sequence for every side.
inline std::vector<uint32_t> random_indices(int64_t count, int64_t n, uint64_t seed) {
    std::vector<uint32_t> out(static_cast<size_t>(count));
    uint64_t state = seed;
    for (auto& v : out) v = static_cast<uint32_t>(below(state, static_cast<uint64_t>(n)));
    return out;
}

// ---------------------------------------------------------------------------
// The two sides

enum class Side { kAerials, kSqlite };

inline const char* side_name(Side s) { return s == Side::kAerials ? "aerials" : "sqlite"; }

inline void set_pragmas(Connection& conn, const std::string& synchronous) {
    std::string mode = conn.query_text("PRAGMA journal_mode=WAL");
    if (mode != "wal") throw std::runtime_error("journal_mode=WAL refused: " + mode);
    conn.exec("PRAGMA synchronous=" + synchronous);
}

// A connection on a side's directory. aerials: DIR/main.db (the connection's
// own database, which holds the virtual table's definition; same pragmas) and
// the store in DIR/store; sqlite: one database file in DIR.
struct SideHandle {
    Side side;
    fs::path dir;
    std::unique_ptr<Connection> conn;
    std::string store_root;  // aerials only
};

// Splits [0, total) into `rounds` slices and runs each slice on side 0 and on
// side 1, alternating which goes first, so that both sides meet the same
// conditions of a shared machine (other processes, fsync latency that drifts).
// run(side, from, to) returns the seconds it measured. Returns the total
// seconds per side.
template <class Run>
std::pair<double, double> interleaved(int64_t total, int rounds, Run&& run) {
    double seconds[2] = {0, 0};
    rounds = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(rounds, total)));
    for (int r = 0; r < rounds; ++r) {
        int64_t from = total * r / rounds, to = total * (r + 1) / rounds;
        int first = r % 2;
        seconds[first] += run(first, from, to);
        seconds[1 - first] += run(1 - first, from, to);
    }
    return {seconds[0], seconds[1]};
}

// ---------------------------------------------------------------------------
// The run

// The run's temporary directory: PARENT/<prefix>XXXXXX, removed at the end
// (with the time that takes printed) unless `keep`.
class RunDirectory {
public:
    RunDirectory(const std::string& parent, const std::string& prefix, bool keep) : keep_(keep) {
        std::string pattern = (fs::path(parent) / (prefix + "XXXXXX")).string();
        std::vector<char> buf(pattern.begin(), pattern.end());
        buf.push_back('\0');
        if (!::mkdtemp(buf.data())) {
            throw std::runtime_error("mkdtemp " + pattern + ": " + std::strerror(errno));
        }
        path_ = fs::path(buf.data());
    }
    ~RunDirectory() {
        if (keep_) {
            line("\nkept %s", path_.c_str());
            return;
        }
        auto start = Clock::now();
        std::error_code ec;
        fs::remove_all(path_, ec);
        line("\nremoved %s (%.3f s)%s", path_.c_str(), seconds_since(start),
             ec ? (" with an error: " + ec.message()).c_str() : "");
    }
    RunDirectory(const RunDirectory&) = delete;
    RunDirectory& operator=(const RunDirectory&) = delete;

    const fs::path& path() const { return path_; }

private:
    bool keep_;
    fs::path path_;
};

// The first lines of the output: what runs, on what.
inline void print_banner(const std::string& title, const CommonOptions& o) {
    char host[256] = "?";
    gethostname(host, sizeof host);
    line("%s%s", title.c_str(), o.quick ? " (--quick: a smoke run)" : "");
    line("  sqlite %s (this program's libsqlite3; the extension runs on it), host %s, %ld CPUs", sqlite3_libversion(),
         host, sysconf(_SC_NPROCESSORS_ONLN));
    line("  extension  %s", o.extension.c_str());
}

inline void check_extension(const CommonOptions& o) {
    if (!fs::exists(o.extension)) {
        throw std::runtime_error("extension '" + o.extension +
                                 "' not found (build target aerials, or --extension PATH)");
    }
}

// main(): parse, run, and print an error as "<program>: <message>".
template <class Options>
int run_main(const char* program, int argc, char** argv, Options (*parse)(int, char**), int (*run)(const Options&)) {
    try {
        Options o = parse(argc, argv);
        return run(o);
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "%s: %s\n", program, e.what());
        return 1;
    }
}

}  // namespace bench
