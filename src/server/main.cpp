// aerialsd: one node of an aerials cluster. See `aerialsd --help`,
// docs/protocol.md and docs/decisions/0009-http-server.md.
//
// Start-up: open (or create) the store, load the node id and the persisted
// map, listen; then either create a cluster (no map, no --join) or join
// through --join in the background (the node answers /health/ready only once
// it owns slots). SIGTERM or SIGINT: stop accepting, finish the requests in
// flight, exit 0.
#include <sys/statvfs.h>

#include <csignal>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>
#include <vector>

#include <httplib.h>

#include "server/auth.h"
#include "server/bounded_pool.h"
#include "server/cluster_state.h"
#include "server/config.h"
#include "server/catch_up.h"
#include "server/cluster_txn.h"
#include "server/failover.h"
#include "server/peer_listener.h"
#include "server/http_api.h"
#include "server/local_store.h"
#include "server/metrics.h"
#include "server/peer_client.h"
#include "server/scrub.h"
#include "server/scrub_rows.h"

namespace {

using namespace aerials::server;

int64_t free_bytes(const std::string& root) {
    struct statvfs fs {};
    if (statvfs(root.c_str(), &fs) != 0) return 0;
    return static_cast<int64_t>(fs.f_bavail) * static_cast<int64_t>(fs.f_frsize);
}

// Joins through `seed`, retrying while it cannot be reached. Returns an empty
// string on success, else why it failed for good.
// Tries each of `targets` in turn, every attempt: a restarted member knows
// the coordinator's listener for nodes from its map, but the coordinator may
// have restarted on another one, and --join still names a way in.
std::string join_cluster(const ServerConfig& config, const std::vector<std::string>& targets, ClusterState& cluster,
                         const PeerClient& peers) {
    nlohmann::json request{{"id", cluster.node_id()}, {"address", config.advertise}, {"free_bytes", free_bytes(config.root)},
                           {"peer", cluster.peer_address()}};
    std::string last_error;
    for (int attempt = 0; attempt < config.join_retries; ++attempt) {
        if (attempt) std::this_thread::sleep_for(std::chrono::milliseconds(200));
        std::string trace = "join-" + random_hex(8);
        const std::string& target = targets[static_cast<size_t>(attempt) % targets.size()];
        PeerReply reply = peers.post(target, "/v1/cluster/join", request.dump(), "application/json", trace);
        if (reply.status == 0) {
            last_error = reply.error;
            continue;
        }
        nlohmann::json body = nlohmann::json::parse(reply.body, nullptr, false);
        if (reply.status == 200) {
            try {
                cluster.adopt(aerials::cluster::ClusterMap::from_json(body));
                return "";
            } catch (const std::exception& e) {
                return std::string("the join answer of ") + target + " is not a valid map: " + e.what();
            }
        }
        std::string message = body.is_object() && body.contains("message") ? body["message"].get<std::string>() : reply.body;
        if (reply.status == 503) {  // the seed is starting up
            last_error = message;
            continue;
        }
        return "node " + target + " refused the join (" + std::to_string(reply.status) + "): " + message;
    }
    std::string tried;
    for (const std::string& t : targets) tried += (tried.empty() ? "" : " or ") + t;
    return "could not reach " + tried + " to join after " + std::to_string(config.join_retries) +
           " attempts: " + last_error;
}

}  // namespace

// Every worker connection may keep max_open bucket files open (about three
// descriptors each: file, WAL, shm), plus the sockets. The soft limit is
// raised to the hard one as far as needed; if that is not enough, max_open is
// lowered and the log says so, rather than failing opens under load.
void fit_descriptor_limit(ServerConfig& config) {
    struct rlimit limit {};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
    // Workers, plus the extra sessions a busy node makes, plus the pool's threads.
    rlim_t sessions = static_cast<rlim_t>(config.threads) + 4;
    rlim_t wanted = sessions * static_cast<rlim_t>(config.max_open) * 3 + static_cast<rlim_t>(config.queue) + 256;
    if (limit.rlim_cur < wanted) {
        limit.rlim_cur = std::min(wanted, limit.rlim_max);
        setrlimit(RLIMIT_NOFILE, &limit);
        getrlimit(RLIMIT_NOFILE, &limit);
    }
    if (limit.rlim_cur < wanted) {
        rlim_t spare = limit.rlim_cur > 256 + static_cast<rlim_t>(config.queue) ? limit.rlim_cur - 256 - static_cast<rlim_t>(config.queue) : 0;
        int fitting = static_cast<int>(std::max<rlim_t>(2, spare / (sessions * 3)));
        std::fprintf(stderr,
                     "{\"event\":\"max_open_lowered\",\"from\":%d,\"to\":%d,\"nofile\":%llu}\n",
                     config.max_open, fitting, static_cast<unsigned long long>(limit.rlim_cur));
        config.max_open = fitting;
    }
}

int main(int argc, char** argv) {
    ServerConfig config;
    if (std::optional<int> exit_code = parse_config(argc, argv, config)) return *exit_code;

    // SIGTERM and SIGINT are taken by a thread of their own (sigwait), so no
    // handler runs in the middle of a request.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    try {
        std::string token = read_token_file(config.token_file);
        auto [host, port] = split_address(config.listen, "--listen");
        auto [advertised_host, advertised_port] = split_address(config.advertise, "--advertise");
        if (advertised_host == "0.0.0.0" || advertised_host == "[::]" || advertised_host == "::") {
            throw std::invalid_argument("--listen " + config.listen +
                                        " is a wildcard address: give --advertise HOST:PORT, the address other nodes "
                                        "and clients reach this node at");
        }
        if (!config.join.empty()) split_address(config.join, "--join");
        std::filesystem::create_directories(config.root);
        config.root = std::filesystem::canonical(config.root).string();

        fit_descriptor_limit(config);
        LocalStore store(config.root, config.max_open);
        PeerClient peers(token, std::chrono::milliseconds(config.peer_timeout_ms));
        PeerClient replica_peers(token, std::chrono::milliseconds(config.replication_timeout_ms));
        Metrics metrics;
        ClusterState cluster(config.root, config.advertise, peers, [&store, &cluster_slots = config.slots]() {
            return store.bucket_listing(cluster_slots);
        });
        httplib::Server server;
        NodeContext node{config, token, store, cluster, peers, metrics, replica_peers, {false}, {}};
        Failover failover(node);
        CatchUp catch_up(node);
        node.failover = &failover;
        node.catch_up = &catch_up;
        TxnSweeper txn_sweeper(node);
        node.txn_sweeper = &txn_sweeper;

        auto configure = [&config, &node](httplib::Server& s) {
            s.new_task_queue = [&config] {
                return new BoundedPool(static_cast<size_t>(config.threads), static_cast<size_t>(config.queue));
            };
            s.set_payload_max_length(static_cast<size_t>(config.max_body));
            s.set_read_timeout(config.read_timeout_s, 0);
            s.set_write_timeout(config.write_timeout_s, 0);
            s.set_keep_alive_timeout(config.keep_alive_timeout_s);
            s.set_keep_alive_max_count(static_cast<size_t>(config.keep_alive_max));
            s.set_tcp_nodelay(true);
            std::shared_ptr<void> api = install_api(s, node);
            install_digest_endpoint(s, node);
            return api;
        };
        std::shared_ptr<void> api = configure(server);
        std::shared_ptr<void> peer_api;
        int peer_port = 0;
        if (std::optional<aerials::cluster::ClusterMap> known = cluster.map()) {
            const aerials::cluster::NodeEntry* me = known->node(cluster.node_id());
            if (me && !me->peer.empty()) {
                auto [peer_host, port] = split_address(me->peer, "peer address");
                if (peer_host == advertised_host) peer_port = port;
            }
        }
        // Before the peer listener serves: a push or join may arrive at once.
        cluster.set_push_timeout(std::chrono::milliseconds(config.probe_timeout_ms));
        PeerListener peer_listener(advertised_host, peer_port, [&](httplib::Server& s) { peer_api = configure(s); });
        cluster.set_peer_address(peer_listener.address());
        Scrubber scrubber(node);

        if (config.join.empty()) cluster.create_if_missing(config.slots, free_bytes(config.root), config.replication,
                                                           aerials::cluster::parse_ack(config.ack));
        if (!server.bind_to_port(host.c_str(), port)) {
            throw std::runtime_error("cannot listen on " + config.listen + " (in use, or not an address of this host)");
        }
        // A node that restarts may have been failed over meanwhile: learn the
        // newest map before serving with the persisted one.
        if (std::optional<aerials::cluster::ClusterMap> known = cluster.map(); known && config.join.empty()) {
            for (const aerials::cluster::NodeEntry& n : known->nodes) {
                if (n.id == cluster.node_id()) continue;
                try {
                    cluster.refresh_from(n.address, "startup");
                } catch (const std::exception&) {
                    // that peer is down too: the others, or the next request, tell
                }
            }
        }
        // A coordinator that restarts listens for nodes on a new port.
        if (std::optional<aerials::cluster::ClusterMap> known = cluster.map(); known && known->coordinator == cluster.node_id()) {
            cluster.change(
                [&](aerials::cluster::ClusterMap& next) {
                    aerials::cluster::NodeEntry* me = next.node(cluster.node_id());
                    if (!me || me->peer == cluster.peer_address()) return false;
                    me->peer = cluster.peer_address();
                    return true;
                },
                "startup");
        }
        failover.start();
        catch_up.start();
        scrubber.start();
        txn_sweeper.start();
        log_line({{"event", "listening"}, {"listen", config.listen}, {"node", cluster.node_id()}, {"root", config.root},
                  {"epoch", cluster.epoch()}, {"pid", getpid()}});

        std::atomic<int> exit_code{0};
        std::thread signal_thread([&] {
            int received = 0;
            sigwait(&signals, &received);
            if (received == 0) return;
            node.draining = true;
            log_line({{"event", "draining"}, {"signal", received}, {"node", cluster.node_id()}});
            server.stop();
        });
        std::thread joiner;
        // A restarted member tells the coordinator where it listens now (its
        // liveness port is new), as a join of a known node does.
        // It goes to the coordinator's listener for nodes: clients keeping
        // connections open can hold every worker of its main one.
        std::string hello_to;
        if (std::optional<aerials::cluster::ClusterMap> known = cluster.map();
            known && known->coordinator != cluster.node_id()) {
            if (const aerials::cluster::NodeEntry* c = known->node(known->coordinator)) hello_to = c->peer_address();
        }
        if (!hello_to.empty() && config.join.empty()) {
            joiner = std::thread([&] {
                std::string failure = join_cluster(config, {hello_to}, cluster, peers);
                log_line({{"event", failure.empty() ? "rejoined" : "rejoin_failed"}, {"node", cluster.node_id()}, {"error", failure}});
            });
        }
        if (!config.join.empty()) {
            joiner = std::thread([&] {
                // A member that restarts joins through the coordinator it knows.
                std::vector<std::string> targets{config.join};
                if (!hello_to.empty() && hello_to != config.join) targets.insert(targets.begin(), hello_to);
                std::string failure = join_cluster(config, targets, cluster, peers);
                if (failure.empty()) {
                    log_line({{"event", "joined"}, {"epoch", cluster.epoch()}, {"node", cluster.node_id()}});
                    return;
                }
                log_line({{"event", "join_failed"}, {"node", cluster.node_id()}, {"error", failure}});
                std::cerr << "aerialsd: " << failure << "\n";
                exit_code = 1;
                node.draining = true;
                server.stop();
            });
        }
        server.listen_after_bind();
        if (joiner.joinable()) joiner.join();
        // Wake the signal thread if the server stopped for another reason.
        pthread_kill(signal_thread.native_handle(), SIGTERM);
        signal_thread.join();
        txn_sweeper.stop();
        scrubber.stop();
        catch_up.stop();
        failover.stop();
        peer_listener.stop();
        log_line({{"event", "stopped"}, {"node", cluster.node_id()}, {"exit_code", exit_code.load()}});
        return exit_code;
    } catch (const std::exception& e) {
        std::cerr << "aerialsd: " << e.what() << "\n";
        return 1;
    }
}
