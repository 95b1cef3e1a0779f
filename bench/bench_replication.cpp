// bench_replication: what replication costs. Point writes and reads of 4 KiB
// values on three 3-node aerialsd clusters on this machine, one after the
// other in the same run: --replication 1 (the baseline, no replica), RF 2
// (ack all: the primary and its secondary have every write) and RF 3 with
// quorum acks (2 of 3). Each prints writes/s and reads/s with p50 and p99
// latency, and the ratio of each replicated rate to the baseline's.
//
//   a  writes straight to each key's primary over HTTP (the cluster map, slot
//      hashing, kept-alive libcurl connections: the server's cost alone)
//   b  reads of those keys, the same way
//   c  writes through the extension's cluster table (an application's path:
//      one autocommit INSERT OR REPLACE per key)
//   d  reads through it
//
//   build/bench_replication [--threads 8] [--seconds 3] [--value-size 4096] [--quick]
//                           [--only a,b,c,d] [--aerialsd build/aerialsd] [--dir /tmp] [--keep]
//
// Reads need the keys of their writes: b runs a's writes (and d runs c's)
// unreported when only the reads are asked for. The default run (4 phases
// of 3 s on 3 clusters) takes about 45 s. The HTTP client, process and
// phase code follow bench_cluster.cpp (benches are one file each).
#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "bench_common.h"
#include "bench_http.h"
#include "cluster/slots.h"
#include "cluster/wire_values.h"
#include "store/key_hash.h"

extern char** environ;

namespace {

using bench::line;
using nlohmann::json;

using bench::free_port;
using bench::Http;
using bench::kToken;

struct Options : bench::CommonOptions {
    int threads = 8;
    double seconds = 3;
    size_t value_size = 4096;
    std::string aerialsd;
};

void print_usage() {
    line("usage: bench_replication [--threads N] [--seconds S] [--value-size BYTES] [--quick] [--only a,b,c,d]\n"
         "                         [--aerialsd PATH] [--dir DIR] [--keep]\n"
         "  a: writes to each key's primary over HTTP   b: reads over HTTP\n"
         "  c: writes through the extension (SQL)       d: reads through it\n"
         "  on 3-node clusters with --replication 1 (baseline), 2 (ack all) and 3 (ack quorum)");
}

// What each cluster of the run is started with.
struct Setting {
    const char* label;  // in the output
    int replication;
    const char* ack;    // nullptr: the node's default
};

const Setting kSettings[] = {{"RF1", 1, nullptr}, {"RF2 all", 2, "all"}, {"RF3 quorum", 3, "quorum"}};

// Three aerialsd processes formed into one cluster, SIGTERMed by the destructor.
class ClusterProcesses {
public:
    ClusterProcesses(const Options& o, const bench::fs::path& dir, const Setting& setting) {
        bench::fs::create_directories(dir);
        token_file_ = (dir / "token").string();
        std::ofstream(token_file_) << kToken << "\n";
        try {
            for (int i = 0; i < 3; ++i) start_node(o, dir, setting, i);
            wait_formed();
        } catch (...) {
            stop();
            throw;
        }
    }
    ~ClusterProcesses() { stop(); }
    ClusterProcesses(const ClusterProcesses&) = delete;
    ClusterProcesses& operator=(const ClusterProcesses&) = delete;

    const std::vector<std::string>& addresses() const { return addresses_; }
    const std::string& token_file() const { return token_file_; }
    const json& map() const { return map_; }

private:
    void start_node(const Options& o, const bench::fs::path& dir, const Setting& setting, int i) {
        std::string address = "127.0.0.1:" + std::to_string(free_port());
        std::string root = (dir / ("node" + std::to_string(i))).string();
        std::string log = (dir / ("node" + std::to_string(i) + ".log")).string();
        std::vector<std::string> args{o.aerialsd, "--root", root, "--listen", address, "--token-file", token_file_,
                                      "--threads", std::to_string(o.threads + 4)};
        if (i == 0) {
            // The replication settings belong to the cluster: the first node creates it.
            args.insert(args.end(), {"--replication", std::to_string(setting.replication)});
            if (setting.ack) args.insert(args.end(), {"--ack", setting.ack});
        } else {
            args.insert(args.end(), {"--join", addresses_[0]});
        }
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        std::vector<char*> argv;
        for (std::string& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        pid_t pid = 0;
        int rc = posix_spawn(&pid, o.aerialsd.c_str(), &actions, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (rc != 0) throw std::runtime_error("cannot start " + o.aerialsd + ": " + std::strerror(rc));
        pids_.push_back(pid);
        addresses_.push_back(address);
        wait_ready(address, pid, log);
    }

    static void wait_ready(const std::string& address, pid_t pid, const std::string& log) {
        Http http;
        for (int i = 0; i < 600; ++i) {
            int status = 0;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                throw std::runtime_error("node " + address + " exited at its start (a flag it does not know?); see " + log);
            }
            try {
                if (http.request("http://" + address + "/health/ready", nullptr, 0) == 200) return;
            } catch (const std::exception&) {
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        throw std::runtime_error("node " + address + " not ready after 30 s; see " + log);
    }

    // Until the first node's map lists the three nodes, all in state write,
    // and every node holds that epoch.
    void wait_formed() {
        Http http;
        std::string last;
        for (int i = 0; i < 600; ++i) {
            if (http.request("http://" + addresses_[0] + "/v1/cluster/map", nullptr, 0) == 200) {
                json m = json::parse(http.body());
                last = http.body().substr(0, 400);
                bool formed = m["nodes"].size() == addresses_.size();
                for (const json& n : m["nodes"]) formed = formed && n["state"] == "write";
                for (const std::string& a : addresses_) {
                    formed = formed && http.request("http://" + a + "/v1/cluster/map", nullptr, 0) == 200 &&
                             json::parse(http.body())["epoch"] == m["epoch"];
                }
                if (formed) {
                    map_ = m;
                    return;
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        throw std::runtime_error("the cluster did not form in 30 s; its map: " + last);
    }

    void stop() {
        for (pid_t pid : pids_) kill(pid, SIGTERM);
        for (pid_t pid : pids_) waitpid(pid, nullptr, 0);
        pids_.clear();
    }

    std::vector<pid_t> pids_;
    std::vector<std::string> addresses_;
    std::string token_file_;
    json map_;
};

// Where a key goes: the primary of its slot as the replication contract
// places it (the slot's owner, then the next distinct nodes in the map's
// node order, skipping proposals; the first of them in state write).
class Router {
public:
    explicit Router(const json& m) : epoch_(m.at("epoch").get<int64_t>()), slots_(m.at("slots").get<uint32_t>()) {
        int replication = m.value("replication", 1);
        std::vector<std::pair<std::string, std::string>> nodes;  // id, state
        std::map<std::string, std::string> address_of;
        for (const json& n : m.at("nodes")) {
            nodes.emplace_back(n.at("id").get<std::string>(), n.at("state").get<std::string>());
            address_of[nodes.back().first] = "http://" + n.at("address").get<std::string>();
        }
        owner_by_slot_.resize(slots_);
        for (const json& r : m.at("assignment")) {
            uint32_t first = r.at(0).get<uint32_t>(), end = r.at(1).get<uint32_t>();
            std::string owner = r.at(2).get<std::string>();
            size_t at = 0;
            while (at < nodes.size() && nodes[at].first != owner) ++at;
            if (at == nodes.size()) throw std::runtime_error("map: slot owner " + owner + " is not a node");
            std::vector<std::string> replicas{owner};
            for (size_t k = 1; k < nodes.size() && static_cast<int>(replicas.size()) < replication; ++k) {
                const auto& next = nodes[(at + k) % nodes.size()];
                if (next.second != "proposal") replicas.push_back(next.first);
            }
            std::string primary;
            for (const std::string& id : replicas) {
                for (const auto& n : nodes) {
                    if (primary.empty() && n.first == id && n.second == "write") primary = id;
                }
            }
            if (primary.empty()) throw std::runtime_error("map: slot range " + r.dump() + " has no replica in state write");
            for (uint32_t s = first; s < end && s < slots_; ++s) owner_by_slot_[s] = address_of.at(primary);
        }
    }
    int64_t epoch() const { return epoch_; }
    const std::string& base(const std::string& key) const {
        std::string encoded;
        aerials::store::encode_key_text(key, encoded);
        return owner_by_slot_.at(aerials::cluster::slot_of(aerials::store::hash_encoded_key(encoded), slots_));
    }

private:
    int64_t epoch_;
    uint32_t slots_;
    std::vector<std::string> owner_by_slot_;  // base URL of each slot's primary
};

struct Phase {
    double per_second = 0, p50_ms = 0, p99_ms = 0;
    int64_t ops = 0;
    bool ran = false;
};

double percentile(std::vector<double>& sorted, double p) {
    if (sorted.empty()) return 0;
    return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * static_cast<double>(sorted.size())))];
}

// Runs op(thread, i) on every thread for `seconds`; the first exception a
// thread throws stops the phase and is thrown here.
template <class Op>
Phase run_phase(int threads, double seconds, Op op) {
    std::atomic<bool> stop{false};
    std::atomic<int64_t> total{0};
    std::mutex mutex;
    std::vector<double> all;
    std::string failure;
    std::vector<std::thread> workers;
    bench::Clock::time_point start = bench::Clock::now();
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            std::vector<double> mine;
            int64_t i = 0;
            try {
                while (!stop) {
                    bench::Clock::time_point begin = bench::Clock::now();
                    op(t, i);
                    ++i;
                    mine.push_back(bench::seconds_since(begin) * 1000);
                }
            } catch (const std::exception& e) {
                std::lock_guard<std::mutex> lock(mutex);
                if (failure.empty()) failure = e.what();
                stop = true;
            }
            total += i;
            std::lock_guard<std::mutex> lock(mutex);
            all.insert(all.end(), mine.begin(), mine.end());
        });
    }
    for (double waited = 0; waited < seconds && !stop; waited += 0.05) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    stop = true;
    for (std::thread& w : workers) w.join();
    if (!failure.empty()) throw std::runtime_error(failure);
    double elapsed = bench::seconds_since(start);
    std::sort(all.begin(), all.end());
    Phase p;
    p.ran = true;
    p.ops = total;
    p.per_second = static_cast<double>(total) / elapsed;
    p.p50_ms = percentile(all, 0.50);
    p.p99_ms = percentile(all, 0.99);
    return p;
}

std::string key_of(int thread, int64_t i) { return "k" + std::to_string(thread) + "-" + std::to_string(i); }

std::string random_value(size_t size, uint64_t seed) {
    std::mt19937_64 r(seed);
    std::string v(size, '\0');
    for (char& c : v) c = static_cast<char>(r());
    return v;
}

struct SettingPhases {
    Phase http_writes, http_reads, sql_writes, sql_reads;
};

// a and b: straight to each key's primary.
void run_http(const Options& o, const ClusterProcesses& cluster, SettingPhases& out) {
    Router router(cluster.map());
    std::vector<std::unique_ptr<Http>> clients;
    for (int t = 0; t < o.threads; ++t) clients.push_back(std::make_unique<Http>());
    std::vector<int64_t> written(static_cast<size_t>(o.threads), 0);
    std::string value = random_value(o.value_size, 1);
    json binary_value = json::binary(std::vector<uint8_t>(value.begin(), value.end()));
    out.http_writes = run_phase(o.threads, o.seconds, [&](int t, int64_t i) {
        std::string key = key_of(t, i);
        std::string body = aerials::cluster::encode_msgpack({{"key", key}, {"value", binary_value}});
        Http& http = *clients[static_cast<size_t>(t)];
        long status = http.request(router.base(key) + "/v1/kv/put", &body, router.epoch());
        if (status != 200) throw std::runtime_error("put " + key + ": " + std::to_string(status) + " " + http.body());
        written[static_cast<size_t>(t)] = i + 1;
    });
    if (!o.only.count('b')) return;
    out.http_reads = run_phase(o.threads, o.seconds, [&](int t, int64_t) {
        thread_local std::mt19937_64 random(static_cast<uint64_t>(t) * 7919 + 1);
        int owner = static_cast<int>(random() % static_cast<uint64_t>(o.threads));
        int64_t n = written[static_cast<size_t>(owner)];
        if (n == 0) throw std::runtime_error("reads: writer thread " + std::to_string(owner) + " wrote nothing");
        std::string key = key_of(owner, static_cast<int64_t>(random() % static_cast<uint64_t>(n)));
        std::string body = aerials::cluster::encode_msgpack({{"key", key}});
        Http& http = *clients[static_cast<size_t>(t)];
        long status = http.request(router.base(key) + "/v1/kv/get", &body, router.epoch());
        if (status != 200) throw std::runtime_error("get " + key + ": " + std::to_string(status) + " " + http.body());
        if (http.body().size() < o.value_size) throw std::runtime_error("get " + key + ": value missing");
    });
}

// RAII for the SQL clients' handles.
struct SqlClient {
    sqlite3* db = nullptr;
    sqlite3_stmt* put = nullptr;
    sqlite3_stmt* get = nullptr;
    SqlClient() = default;
    SqlClient(const SqlClient&) = delete;
    SqlClient& operator=(const SqlClient&) = delete;
    ~SqlClient() {
        sqlite3_finalize(put);
        sqlite3_finalize(get);
        if (db) sqlite3_close(db);
    }
    void exec(const std::string& sql) {
        char* error = nullptr;
        if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
            std::string message = error ? error : sqlite3_errmsg(db);
            sqlite3_free(error);
            throw std::runtime_error(sql + ": " + message);
        }
    }
    void prepare(const char* sql, sqlite3_stmt** stmt) {
        if (sqlite3_prepare_v2(db, sql, -1, stmt, nullptr) != SQLITE_OK) {
            throw std::runtime_error(std::string("prepare ") + sql + ": " + sqlite3_errmsg(db));
        }
    }
};

// c and d: through the extension's cluster table, each thread its own connection.
void run_sql(const Options& o, const ClusterProcesses& cluster, SettingPhases& out) {
    std::string url;
    for (const std::string& a : cluster.addresses()) url += (url.empty() ? "http://" : ",http://") + a;
    std::vector<std::unique_ptr<SqlClient>> clients;
    for (int t = 0; t < o.threads; ++t) {
        auto c = std::make_unique<SqlClient>();
        if (sqlite3_open(":memory:", &c->db) != SQLITE_OK) throw std::runtime_error("cannot open a connection");
        sqlite3_enable_load_extension(c->db, 1);
        char* error = nullptr;
        if (sqlite3_load_extension(c->db, o.extension.c_str(), nullptr, &error) != SQLITE_OK) {
            std::string message = error ? error : "?";
            sqlite3_free(error);
            throw std::runtime_error("cannot load " + o.extension + ": " + message);
        }
        c->exec("CREATE VIRTUAL TABLE temp.kv USING aerials(cluster=" + bench::sql_quote(url) +
                ", token_file=" + bench::sql_quote(cluster.token_file()) + ")");
        c->prepare("INSERT OR REPLACE INTO kv(key, value) VALUES (?1, ?2)", &c->put);
        c->prepare("SELECT value FROM kv WHERE key = ?1", &c->get);
        clients.push_back(std::move(c));
    }
    std::vector<int64_t> written(static_cast<size_t>(o.threads), 0);
    std::string value = random_value(o.value_size, 2);
    out.sql_writes = run_phase(o.threads, o.seconds, [&](int t, int64_t i) {
        SqlClient& c = *clients[static_cast<size_t>(t)];
        std::string key = "s" + key_of(t, i);
        sqlite3_bind_text(c.put, 1, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
        sqlite3_bind_blob(c.put, 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
        int rc = sqlite3_step(c.put);
        sqlite3_reset(c.put);
        if (rc != SQLITE_DONE) throw std::runtime_error("sql put " + key + ": " + sqlite3_errmsg(c.db));
        written[static_cast<size_t>(t)] = i + 1;
    });
    if (!o.only.count('d')) return;
    out.sql_reads = run_phase(o.threads, o.seconds, [&](int t, int64_t) {
        thread_local std::mt19937_64 random(static_cast<uint64_t>(t) * 104729 + 3);
        SqlClient& c = *clients[static_cast<size_t>(t)];
        int owner = static_cast<int>(random() % static_cast<uint64_t>(o.threads));
        int64_t n = written[static_cast<size_t>(owner)];
        if (n == 0) throw std::runtime_error("sql reads: writer thread " + std::to_string(owner) + " wrote nothing");
        std::string key = "s" + key_of(owner, static_cast<int64_t>(random() % static_cast<uint64_t>(n)));
        sqlite3_bind_text(c.get, 1, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
        int rc = sqlite3_step(c.get);
        bool right = rc == SQLITE_ROW && sqlite3_column_bytes(c.get, 0) == static_cast<int>(o.value_size);
        std::string error = rc == SQLITE_ROW || rc == SQLITE_DONE ? "" : sqlite3_errmsg(c.db);
        sqlite3_reset(c.get);
        if (!error.empty()) throw std::runtime_error("sql get " + key + ": " + error);
        if (!right) throw std::runtime_error("sql get " + key + ": value missing or wrong");
    });
}

void print_phase(const char* what, const char* setting, const Phase& p) {
    if (!p.ran) return;
    line("  %-12s %-11s %10s ops/s   p50 %7.3f ms   p99 %7.3f ms   (%lld ops)", what, setting,
         bench::whole_rate(p.per_second).c_str(), p.p50_ms, p.p99_ms, static_cast<long long>(p.ops));
}

Options parse(int argc, char** argv) {
    Options o;
    bench::parse_args(argc, argv, o, 'a', 'd', "a,b", print_usage, [&](const std::string& name, auto take) {
        if (name == "--threads") {
            o.threads = static_cast<int>(bench::parse_int(name, take(), 1));
        } else if (name == "--seconds") {
            o.seconds = static_cast<double>(bench::parse_int(name, take(), 1));
        } else if (name == "--value-size") {
            o.value_size = static_cast<size_t>(bench::parse_int(name, take(), 1));
        } else if (name == "--aerialsd") {
            o.aerialsd = take();
        } else {
            return false;
        }
        return true;
    });
    if (o.quick) o.seconds = 1;
    if (o.aerialsd.empty()) o.aerialsd = (bench::executable_dir() / "aerialsd").string();
    return o;
}

int run(const Options& o) {
    bench::check_extension(o);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    bench::RunDirectory dir(o.parent_dir, "bench_replication.", o.keep);
    bench::print_banner("bench_replication: 3 aerialsd nodes on 127.0.0.1, RF 1 (baseline), RF 2 (ack all), "
                        "RF 3 (ack quorum)", o);
    line("  %d client threads, %zu-byte values, %.0f s per phase", o.threads, o.value_size, o.seconds);
    bool http = o.only.count('a') || o.only.count('b');
    bool sql = o.only.count('c') || o.only.count('d');
    std::vector<SettingPhases> phases;
    for (const Setting& s : kSettings) {
        auto start = bench::Clock::now();
        ClusterProcesses cluster(o, dir.path() / ("rf" + std::to_string(s.replication)), s);
        bench::setup_step(std::string("3 nodes formed, ") + s.label, bench::seconds_since(start));
        SettingPhases p;
        if (http) run_http(o, cluster, p);
        if (sql) run_sql(o, cluster, p);
        print_phase(o.only.count('a') ? "a http put" : "(a) http put", s.label, p.http_writes);
        print_phase("b http get", s.label, p.http_reads);
        print_phase(o.only.count('c') ? "c sql put" : "(c) sql put", s.label, p.sql_writes);
        print_phase("d sql get", s.label, p.sql_reads);
        phases.push_back(p);
    }
    bench::Results results("ops/s", bench::whole_rate);
    struct Row {
        char workload;
        const char* id;
        const char* name;
        Phase SettingPhases::*phase;
    };
    const Row rows[] = {
        {'a', "a", "4 KiB writes, HTTP to the primary", &SettingPhases::http_writes},
        {'b', "b", "4 KiB reads, HTTP to the primary", &SettingPhases::http_reads},
        {'c', "c", "4 KiB writes through the extension", &SettingPhases::sql_writes},
        {'d', "d", "4 KiB reads through the extension", &SettingPhases::sql_reads},
    };
    for (const Row& row : rows) {
        if (!o.only.count(row.workload)) continue;
        const Phase& baseline = phases[0].*row.phase;
        for (size_t i = 1; i < phases.size(); ++i) {
            const Phase& p = phases[i].*row.phase;
            results.report({std::string(row.id) + std::to_string(kSettings[i].replication), row.name,
                            kSettings[i].label, p.per_second, "RF1", baseline.per_second});
            line("       p99 %s %.3f ms, RF1 %.3f ms (x%.2f)", kSettings[i].label, p.p99_ms, baseline.p99_ms,
                 baseline.p99_ms > 0 ? p.p99_ms / baseline.p99_ms : 0.0);
        }
    }
    results.print_table("replicated rates against the unreplicated baseline (same run, same machine)", 36, 10, 12,
                        "baseline");
    return 0;
}

}  // namespace

int main(int argc, char** argv) { return bench::run_main("bench_replication", argc, argv, &parse, &run); }
