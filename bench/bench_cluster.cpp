// bench_cluster: point writes and reads of 4 KiB values on a 3-node aerialsd
// cluster on this machine, from several client threads that route each key
// straight to its owner (the cluster map, slot hashing) over kept-alive
// libcurl connections; the same workload on one plain SQLite file (WAL, the
// same synchronous setting, one connection per thread) in the same run.
//
// Phases c and d run the same workload through the extension's cluster table
// (SQL in the bench's own process, the path an application takes).
//
//   build/bench_cluster [--threads 8] [--seconds 5] [--value-size 4096] [--quick]
//                       [--aerialsd build/aerialsd] [--dir /tmp] [--synchronous FULL|NORMAL] [--keep]
//
// Published goals we mean to beat on a 2-core machine (a comparable Go object
// store on a 2-vCPU cloud machine): 2,500 writes/s and 15,000 reads/s.
#include <curl/curl.h>
#include <signal.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "bench_common.h"
#include "bench_http.h"
#include "cluster/cluster_map.h"
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
    double seconds = 5;
    size_t value_size = 4096;
    std::string aerialsd;
};

void print_usage() {
    line("usage: bench_cluster [--threads N] [--seconds S] [--value-size BYTES] [--quick] [--aerialsd PATH]\n"
         "                     [--dir DIR] [--synchronous FULL|NORMAL] [--keep]");
}

struct Node {
    std::string address;
    pid_t pid = 0;
};

class ClusterProcesses {
public:
    ClusterProcesses(const Options& o, const bench::fs::path& dir) {
        std::ofstream(dir / "token") << kToken << "\n";
        for (int i = 0; i < 3; ++i) {
            Node n;
            n.address = "127.0.0.1:" + std::to_string(free_port());
            std::string root = (dir / ("node" + std::to_string(i))).string();
            std::string log = (dir / ("node" + std::to_string(i) + ".log")).string();
            std::vector<std::string> args{o.aerialsd, "--root", root, "--listen", n.address, "--token-file",
                                          (dir / "token").string(), "--threads", std::to_string(o.threads + 4),
                                          "--replication", "1"};
            if (i > 0) args.insert(args.end(), {"--join", nodes_[0].address});
            posix_spawn_file_actions_t actions;
            posix_spawn_file_actions_init(&actions);
            posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            posix_spawn_file_actions_adddup2(&actions, 1, 2);
            std::vector<char*> argv;
            for (std::string& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            if (posix_spawn(&n.pid, o.aerialsd.c_str(), &actions, nullptr, argv.data(), environ) != 0) {
                throw std::runtime_error("cannot start " + o.aerialsd);
            }
            posix_spawn_file_actions_destroy(&actions);
            nodes_.push_back(n);
            wait_ready(n);
        }
    }
    ~ClusterProcesses() {
        for (Node& n : nodes_) kill(n.pid, SIGTERM);
        for (Node& n : nodes_) waitpid(n.pid, nullptr, 0);
    }
    const std::vector<Node>& nodes() const { return nodes_; }

private:
    static void wait_ready(const Node& n) {
        Http http;
        for (int i = 0; i < 300; ++i) {
            try {
                if (http.request("http://" + n.address + "/health/ready", nullptr, 0) == 200) return;
            } catch (const std::exception&) {
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        throw std::runtime_error("node " + n.address + " not ready after 15 s");
    }
    std::vector<Node> nodes_;
};

struct Latencies {
    std::mutex mutex;
    std::vector<double> all;
    void add(std::vector<double>& mine) {
        std::lock_guard<std::mutex> lock(mutex);
        all.insert(all.end(), mine.begin(), mine.end());
    }
    double percentile(double p) {
        if (all.empty()) return 0;
        std::sort(all.begin(), all.end());
        return all[std::min(all.size() - 1, static_cast<size_t>(p * static_cast<double>(all.size())))];
    }
};

struct Phase {
    double per_second = 0, p50_ms = 0, p99_ms = 0;
    int64_t ops = 0;
};

// Runs `op(thread, i)` on every thread for `seconds`; returns the rate and latencies.
template <class Op>
Phase run_phase(int threads, double seconds, Op op) {
    std::atomic<bool> stop{false};
    std::atomic<int64_t> total{0};
    Latencies latencies;
    std::vector<std::thread> workers;
    bench::Clock::time_point start = bench::Clock::now();
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            std::vector<double> mine;
            int64_t i = 0;
            while (!stop) {
                bench::Clock::time_point begin = bench::Clock::now();
                op(t, i++);
                mine.push_back(bench::seconds_since(begin) * 1000);
            }
            total += i;
            latencies.add(mine);
        });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (std::thread& w : workers) w.join();
    double elapsed = bench::seconds_since(start);
    Phase p;
    p.ops = total;
    p.per_second = static_cast<double>(total) / elapsed;
    p.p50_ms = latencies.percentile(0.50);
    p.p99_ms = latencies.percentile(0.99);
    return p;
}

std::string key_of(int thread, int64_t i) { return "k" + std::to_string(thread) + "-" + std::to_string(i); }

std::string random_value(size_t size, uint64_t seed) {
    std::mt19937_64 r(seed);
    std::string v(size, '\0');
    for (char& c : v) c = static_cast<char>(r());
    return v;
}

struct Router {
    aerials::cluster::ClusterMap map;
    std::map<std::string, std::string> url_of_node;  // node id -> base URL
    const std::string& base(const std::string& key) const {
        std::string encoded;
        aerials::store::encode_key_text(key, encoded);
        uint32_t slot = aerials::cluster::slot_of(aerials::store::hash_encoded_key(encoded), map.slots);
        return url_of_node.at(map.owner(slot));
    }
};

// The same workload through the extension, as an application uses it: each
// thread its own SQLite connection with a cluster table, one prepared INSERT
// OR REPLACE (an autocommit statement: one batch to the owner) and one SELECT.
std::pair<Phase, Phase> run_sql_client(const Options& o, const bench::fs::path& dir, const std::string& seed) {
    std::string extension = (bench::executable_dir() / "aerials.so").string();
    struct Client {
        sqlite3* db = nullptr;
        sqlite3_stmt* put = nullptr;
        sqlite3_stmt* get = nullptr;
    };
    std::vector<Client> clients(static_cast<size_t>(o.threads));
    for (Client& c : clients) {
        if (sqlite3_open(":memory:", &c.db) != SQLITE_OK) throw std::runtime_error("cannot open a connection");
        sqlite3_enable_load_extension(c.db, 1);
        char* error = nullptr;
        if (sqlite3_load_extension(c.db, extension.c_str(), nullptr, &error) != SQLITE_OK) {
            std::string message = error ? error : "?";
            sqlite3_free(error);
            throw std::runtime_error("cannot load " + extension + ": " + message);
        }
        std::string create = "CREATE VIRTUAL TABLE temp.kv USING aerials(cluster='http://" + seed + "', token_file='" +
                             (dir / "token").string() + "')";
        if (sqlite3_exec(c.db, create.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
            std::string message = error ? error : "?";
            sqlite3_free(error);
            throw std::runtime_error(message);
        }
        sqlite3_prepare_v2(c.db, "INSERT OR REPLACE INTO kv(key, value) VALUES (?1, ?2)", -1, &c.put, nullptr);
        sqlite3_prepare_v2(c.db, "SELECT value FROM kv WHERE key = ?1", -1, &c.get, nullptr);
    }
    std::vector<int64_t> per_thread(static_cast<size_t>(o.threads), 0);
    std::string value = random_value(o.value_size, 2);
    Phase writes = run_phase(o.threads, o.seconds, [&](int t, int64_t i) {
        Client& c = clients[static_cast<size_t>(t)];
        std::string key = "s" + key_of(t, i);
        sqlite3_bind_text(c.put, 1, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
        sqlite3_bind_blob(c.put, 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
        if (sqlite3_step(c.put) != SQLITE_DONE) throw std::runtime_error(std::string("sql put: ") + sqlite3_errmsg(c.db));
        sqlite3_reset(c.put);
        per_thread[static_cast<size_t>(t)] = i + 1;
    });
    Phase reads = run_phase(o.threads, o.seconds, [&](int t, int64_t) {
        thread_local std::mt19937_64 random(static_cast<uint64_t>(t) * 104729 + 3);
        Client& c = clients[static_cast<size_t>(t)];
        int owner = static_cast<int>(random() % static_cast<uint64_t>(o.threads));
        int64_t n = per_thread[static_cast<size_t>(owner)];
        std::string key = "s" + key_of(owner, n ? static_cast<int64_t>(random() % static_cast<uint64_t>(n)) : 0);
        sqlite3_bind_text(c.get, 1, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
        int rc = sqlite3_step(c.get);
        if (rc == SQLITE_ROW && sqlite3_column_bytes(c.get, 0) != static_cast<int>(o.value_size)) {
            throw std::runtime_error("sql get " + key + ": wrong value");
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) throw std::runtime_error(std::string("sql get: ") + sqlite3_errmsg(c.db));
        if (n && rc != SQLITE_ROW) throw std::runtime_error("sql get " + key + ": value missing");
        sqlite3_reset(c.get);
    });
    for (Client& c : clients) {
        sqlite3_finalize(c.put);
        sqlite3_finalize(c.get);
        sqlite3_close(c.db);
    }
    return {writes, reads};
}

struct ClusterPhases {
    Phase writes, reads, sql_writes, sql_reads;
};

ClusterPhases run_cluster(const Options& o, const bench::fs::path& dir, int64_t* written) {
    ClusterProcesses cluster(o, dir);
    Http setup;
    if (setup.request("http://" + cluster.nodes()[0].address + "/v1/cluster/map", nullptr, 0) != 200) {
        throw std::runtime_error("cannot fetch the cluster map: " + setup.body());
    }
    Router router;
    router.map = aerials::cluster::ClusterMap::from_json(json::parse(setup.body()));
    for (const auto& n : router.map.nodes) router.url_of_node[n.id] = "http://" + n.address;
    line("  cluster: 3 nodes at epoch %lld, %d client threads, %zu-byte values", static_cast<long long>(router.map.epoch),
         o.threads, o.value_size);

    std::vector<std::unique_ptr<Http>> clients;
    for (int t = 0; t < o.threads; ++t) clients.push_back(std::make_unique<Http>());
    std::vector<int64_t> per_thread(static_cast<size_t>(o.threads), 0);
    std::string value = random_value(o.value_size, 1);
    Phase writes = run_phase(o.threads, o.seconds, [&](int t, int64_t i) {
        std::string key = key_of(t, i);
        std::string body = aerials::cluster::encode_msgpack(
            {{"key", key}, {"value", json::binary(std::vector<uint8_t>(value.begin(), value.end()))}});
        long status = clients[static_cast<size_t>(t)]->request(router.base(key) + "/v1/kv/put", &body, router.map.epoch);
        if (status != 200) throw std::runtime_error("put " + key + ": " + std::to_string(status) + " " + clients[static_cast<size_t>(t)]->body());
        per_thread[static_cast<size_t>(t)] = i + 1;
    });
    *written = writes.ops;
    Phase reads = run_phase(o.threads, o.seconds, [&](int t, int64_t i) {
        thread_local std::mt19937_64 random(static_cast<uint64_t>(t) * 7919 + 1);
        int owner = static_cast<int>(random() % static_cast<uint64_t>(o.threads));
        int64_t n = per_thread[static_cast<size_t>(owner)];
        std::string key = key_of(owner, n ? static_cast<int64_t>(random() % static_cast<uint64_t>(n)) : 0);
        std::string body = aerials::cluster::encode_msgpack({{"key", key}});
        Http& http = *clients[static_cast<size_t>(t)];
        long status = http.request(router.base(key) + "/v1/kv/get", &body, router.map.epoch);
        if (status != 200) throw std::runtime_error("get " + key + ": " + std::to_string(status));
        if (n && http.body().size() < o.value_size) throw std::runtime_error("get " + key + ": value missing");
        (void)i;
    });
    auto [sql_writes, sql_reads] = run_sql_client(o, dir, cluster.nodes()[0].address);
    return {writes, reads, sql_writes, sql_reads};
}

std::pair<Phase, Phase> run_sqlite(const Options& o, const bench::fs::path& dir) {
    std::string path = (dir / "plain.db").string();
    auto open = [&] {
        sqlite3* db = nullptr;
        if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) throw std::runtime_error("cannot open " + path);
        sqlite3_busy_timeout(db, 60000);
        sqlite3_exec(db, ("PRAGMA journal_mode=WAL; PRAGMA synchronous=" + o.synchronous).c_str(), nullptr, nullptr, nullptr);
        return db;
    };
    sqlite3* first = open();
    sqlite3_exec(first, "CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value BLOB)", nullptr, nullptr, nullptr);
    sqlite3_close(first);
    std::vector<sqlite3*> dbs;
    std::vector<sqlite3_stmt*> puts, gets;
    for (int t = 0; t < o.threads; ++t) {
        dbs.push_back(open());
        sqlite3_stmt* put = nullptr;
        sqlite3_stmt* get = nullptr;
        sqlite3_prepare_v2(dbs.back(), "INSERT OR REPLACE INTO kv(key, value) VALUES (?1, ?2)", -1, &put, nullptr);
        sqlite3_prepare_v2(dbs.back(), "SELECT value FROM kv WHERE key = ?1", -1, &get, nullptr);
        puts.push_back(put);
        gets.push_back(get);
    }
    std::vector<int64_t> per_thread(static_cast<size_t>(o.threads), 0);
    std::string value = random_value(o.value_size, 1);
    Phase writes = run_phase(o.threads, o.seconds, [&](int t, int64_t i) {
        std::string key = key_of(t, i);
        sqlite3_stmt* put = puts[static_cast<size_t>(t)];
        sqlite3_bind_text(put, 1, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
        sqlite3_bind_blob(put, 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
        if (sqlite3_step(put) != SQLITE_DONE) throw std::runtime_error(sqlite3_errmsg(dbs[static_cast<size_t>(t)]));
        sqlite3_reset(put);
        per_thread[static_cast<size_t>(t)] = i + 1;
    });
    Phase reads = run_phase(o.threads, o.seconds, [&](int t, int64_t) {
        thread_local std::mt19937_64 random(static_cast<uint64_t>(t) * 7919 + 1);
        int owner = static_cast<int>(random() % static_cast<uint64_t>(o.threads));
        int64_t n = per_thread[static_cast<size_t>(owner)];
        std::string key = key_of(owner, n ? static_cast<int64_t>(random() % static_cast<uint64_t>(n)) : 0);
        sqlite3_stmt* get = gets[static_cast<size_t>(t)];
        sqlite3_bind_text(get, 1, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
        if (sqlite3_step(get) == SQLITE_ROW && sqlite3_column_bytes(get, 0) != static_cast<int>(o.value_size)) {
            throw std::runtime_error("plain SQLite read a wrong value");
        }
        sqlite3_reset(get);
    });
    for (auto* s : puts) sqlite3_finalize(s);
    for (auto* s : gets) sqlite3_finalize(s);
    for (auto* db : dbs) sqlite3_close(db);
    return {writes, reads};
}

void print_phase(const char* what, const char* side, const Phase& p) {
    line("  %-7s %-13s %10s ops/s   p50 %7.3f ms   p99 %7.3f ms   (%lld ops)", what, side,
         bench::whole_rate(p.per_second).c_str(), p.p50_ms, p.p99_ms, static_cast<long long>(p.ops));
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    try {
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
        if (o.quick) o.seconds = 2;
        if (o.aerialsd.empty()) o.aerialsd = (bench::executable_dir() / "aerialsd").string();
        curl_global_init(CURL_GLOBAL_DEFAULT);
        bench::fs::path dir = bench::fs::path(o.parent_dir) / ("bench_cluster." + std::to_string(getpid()));
        bench::fs::create_directories(dir);
        line("bench_cluster: 3 aerialsd nodes on 127.0.0.1 against one plain SQLite file (synchronous=%s), %d threads, "
             "%.0f s per phase", o.synchronous.c_str(), o.threads, o.seconds);
        int64_t written = 0;
        ClusterPhases phases = run_cluster(o, dir, &written);
        const Phase& cluster_writes = phases.writes;
        const Phase& cluster_reads = phases.reads;
        auto [sqlite_writes, sqlite_reads] = run_sqlite(o, dir);
        print_phase("writes", "aerialsd x3", cluster_writes);
        print_phase("writes", "  via SQL", phases.sql_writes);
        print_phase("writes", "plain sqlite", sqlite_writes);
        print_phase("reads", "aerialsd x3", cluster_reads);
        print_phase("reads", "  via SQL", phases.sql_reads);
        print_phase("reads", "plain sqlite", sqlite_reads);
        bench::Results results("ops/s", bench::whole_rate);
        results.report({"a", "point writes, 4 KiB values (cluster / sqlite)", "aerialsd", cluster_writes.per_second,
                        "sqlite", sqlite_writes.per_second});
        results.report({"b", "point reads, 4 KiB values (cluster / sqlite)", "aerialsd", cluster_reads.per_second, "sqlite",
                        sqlite_reads.per_second});
        results.report({"c", "point writes through the extension's cluster table (SQL / sqlite)", "aerials SQL",
                        phases.sql_writes.per_second, "sqlite", sqlite_writes.per_second});
        results.report({"d", "point reads through the extension's cluster table (SQL / sqlite)", "aerials SQL",
                        phases.sql_reads.per_second, "sqlite", sqlite_reads.per_second});
        line("published goals: 2,500 writes/s -> %s; 15,000 reads/s -> %s",
             cluster_writes.per_second >= 2500 ? "met" : "MISSED", cluster_reads.per_second >= 15000 ? "met" : "MISSED");
        if (!o.keep) bench::fs::remove_all(dir);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_cluster: %s\n", e.what());
        return 1;
    }
}
