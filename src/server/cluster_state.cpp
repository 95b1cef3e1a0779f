#include "server/cluster_state.h"

#include <chrono>
#include <future>
#include <cstdio>
#include <iostream>

namespace aerials::server {

int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void log_line(const nlohmann::json& entry) {
    static std::mutex mutex;
    std::string line = entry.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    std::lock_guard<std::mutex> lock(mutex);
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
}

ClusterState::ClusterState(const std::string& root, std::string address, const PeerClient& peers,
                           std::function<nlohmann::json()> local_buckets)
    : address_(std::move(address)),
      peers_(peers),
      local_buckets_(std::move(local_buckets)),
      db_((std::filesystem::path(root) / "aerial.sq3").string(), SQLITE_OPEN_READWRITE) {
    sqlite3_busy_timeout(db_.get(), 10000);
    db_.exec("CREATE TABLE IF NOT EXISTS aerials_cluster(name TEXT PRIMARY KEY, value TEXT NOT NULL)");
    sqlite::Statement read = db_.prepare("SELECT name, value FROM aerials_cluster");
    while (read.step()) {
        std::string name = read.column_text(0);
        if (name == "node_id") node_id_ = read.column_text(1);
        if (name == "map") {
            nlohmann::json j = nlohmann::json::parse(read.column_text(1), nullptr, false);
            try {
                map_ = cluster::ClusterMap::from_json(j);
            } catch (const std::exception& e) {
                throw std::runtime_error("the cluster map persisted in " + db_.path() + " is damaged: " + e.what());
            }
        }
    }
    read.reset();
    if (node_id_.empty()) {
        node_id_ = random_hex(16);
        sqlite::Statement put = db_.prepare("INSERT INTO aerials_cluster(name, value) VALUES ('node_id', ?1)");
        put.bind(1, std::string_view(node_id_));
        put.run();
    }
}

std::optional<cluster::ClusterMap> ClusterState::map() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return map_;
}

int64_t ClusterState::epoch() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return map_ ? map_->epoch : 0;
}

bool ClusterState::ready() const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!map_) return false;
    const cluster::NodeEntry* self = map_->node(node_id_);
    return self && self->state == cluster::NodeState::kWrite;
}

void ClusterState::persist(const cluster::ClusterMap& map) {
    std::lock_guard<std::mutex> lock(db_mutex_);
    sqlite::Statement put = db_.prepare("INSERT OR REPLACE INTO aerials_cluster(name, value) VALUES ('map', ?1)");
    std::string text = map.to_json().dump();
    put.bind(1, std::string_view(text));
    put.run();
}

bool ClusterState::adopt(const cluster::ClusterMap& map) {
    // One adoption at a time, so that the catalog never ends up holding an
    // older map than the one served (two pushes persisting out of order).
    std::lock_guard<std::mutex> adopting(adopt_mutex_);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (map_ && map_->epoch >= map.epoch) return false;
        if (map_ && map_->cluster_id != map.cluster_id) {
            throw std::invalid_argument("map of cluster " + map.cluster_id + " offered to a node of cluster " +
                                        map_->cluster_id);
        }
    }
    persist(map);
    std::lock_guard<std::mutex> lock(mutex_);
    map_ = map;
    log_line({{"event", "map_adopted"}, {"epoch", map.epoch}, {"nodes", map.nodes.size()}, {"node", node_id_}});
    return true;
}

void ClusterState::create_if_missing(uint32_t slots, int64_t free_bytes, int replication, cluster::AckMode ack) {
    if (map()) return;
    cluster::NodeEntry self{node_id_, address_, cluster::NodeState::kWrite, free_bytes, now_ms()};
    self.peer = peer_;
    adopt(cluster::new_cluster(random_hex(16), self, slots, replication, ack));
}

void ClusterState::refresh_from(const std::string& address, const std::string& trace_id) {
    adopt(cluster::ClusterMap::from_json(peers_.get_json(address, "/v1/cluster/map", trace_id)));
}

int64_t ClusterState::bucket_count() {
    std::lock_guard<std::mutex> lock(db_mutex_);
    return db_.query_int("SELECT count(*) FROM buckets");
}

void ClusterState::check_slots_empty(const cluster::ClusterMap& map, const std::vector<cluster::SlotRange>& plan,
                                     const std::string& newcomer, const std::string& trace_id) {
    int shift = 64 - std::countr_zero(map.slots);
    std::map<std::string, std::vector<cluster::SlotRange>> by_giver;
    for (const cluster::SlotRange& r : plan) by_giver[r.owner].push_back(r);
    for (const auto& [giver, ranges] : by_giver) {
        const cluster::NodeEntry* node = map.node(giver);
        nlohmann::json listing = giver == node_id_ ? local_buckets_()
                                                   : peers_.get_json(node->address, "/v1/buckets", trace_id);
        for (const nlohmann::json& b : listing.at("buckets")) {
            int64_t records = b.value("records", int64_t{0});
            if (records <= 0) continue;
            uint64_t lo = std::stoull(b.at("lo").get<std::string>(), nullptr, 16);
            uint64_t hi = std::stoull(b.at("hi").get<std::string>(), nullptr, 16);
            uint64_t first = shift >= 64 ? 0 : lo >> shift, last = shift >= 64 ? 0 : hi >> shift;
            for (const cluster::SlotRange& r : ranges) {
                if (first < r.end && last >= r.first) {
                    throw JoinRefused("join of node " + newcomer + " refused: it would take slots " +
                                      std::to_string(r.first) + ".." + std::to_string(r.end - 1) + " from node " +
                                      giver + " (" + node->address + "), whose bucket " +
                                      b.value("bucket", std::string("?")) + " holds " + std::to_string(records) +
                                      " records in them; moving data between nodes is not supported yet, so nodes "
                                      "join only while their share of slots is empty");
                }
            }
        }
    }
}

cluster::ClusterMap ClusterState::join(cluster::NodeEntry newcomer, const std::string& trace_id) {
    std::lock_guard<std::mutex> change(change_mutex_);
    std::optional<cluster::ClusterMap> current = map();
    if (!current) throw std::runtime_error("this node holds no cluster map yet");
    if (current->coordinator != node_id_) throw std::logic_error("join sent to a node that is not the coordinator");
    if (cluster::NodeEntry* known = current->node(newcomer.id)) {
        if (known->address == newcomer.address && known->peer == newcomer.peer &&
            known->state == cluster::NodeState::kWrite) {
            return *current;
        }
        // A restart on another address, or a join that stopped half way:
        // the next epoch records it.
        cluster::ClusterMap next = *current;
        cluster::NodeEntry* entry = next.node(newcomer.id);
        entry->address = newcomer.address;
        entry->peer = newcomer.peer;
        entry->free_bytes = newcomer.free_bytes;
        entry->last_seen_ms = now_ms();
        if (entry->state == cluster::NodeState::kProposal) {
            std::vector<cluster::SlotRange> plan = cluster::plan_join(next, newcomer.id);
            check_slots_empty(next, plan, newcomer.id, trace_id);
            next.assignment = cluster::reassign(next, plan, newcomer.id);
            entry->state = cluster::NodeState::kWrite;
        }
        next.epoch = current->epoch + 1;
        adopt(next);
        push(next, trace_id);
        return next;
    }
    for (const cluster::NodeEntry& n : current->nodes) {
        if (n.address == newcomer.address) {
            throw JoinRefused("join of node " + newcomer.id + " refused: address " + newcomer.address +
                              " belongs to node " + n.id + " already (a node keeps its id in its root's catalog)");
        }
    }
    std::vector<cluster::SlotRange> plan = cluster::plan_join(*current, newcomer.id);
    check_slots_empty(*current, plan, newcomer.id, trace_id);
    if (current->replication > 1) {
        // A newcomer also becomes a further replica of slots it does not
        // take: those must be empty too until data can move.
        try {
            check_slots_empty(*current, current->assignment, newcomer.id, trace_id);
        } catch (const JoinRefused& e) {
            throw JoinRefused(std::string(e.what()) + " (with replication " + std::to_string(current->replication) +
                              " a newcomer changes the replicas of every slot)");
        }
    }

    // Epoch + 1: the newcomer as a proposal; epoch + 2: its share of slots.
    cluster::ClusterMap proposed = *current;
    proposed.epoch = current->epoch + 1;
    newcomer.state = cluster::NodeState::kProposal;
    newcomer.last_seen_ms = now_ms();
    proposed.nodes.push_back(newcomer);
    adopt(proposed);
    push(proposed, trace_id);

    cluster::ClusterMap assigned = proposed;
    assigned.epoch = proposed.epoch + 1;
    assigned.assignment = cluster::reassign(proposed, plan, newcomer.id);
    assigned.node(newcomer.id)->state = cluster::NodeState::kWrite;
    assigned.node(newcomer.id)->state_epoch = assigned.epoch;
    adopt(assigned);
    push(assigned, trace_id);
    return assigned;
}

cluster::ClusterMap ClusterState::change(const std::function<bool(cluster::ClusterMap&)>& edit,
                                        const std::string& trace_id) {
    std::lock_guard<std::mutex> change(change_mutex_);
    std::optional<cluster::ClusterMap> current = map();
    if (!current) throw std::runtime_error("this node holds no cluster map yet");
    if (current->coordinator != node_id_) throw std::logic_error("a map change asked of a node that is not the coordinator");
    cluster::ClusterMap next = *current;
    if (!edit(next)) return *current;
    next.epoch = current->epoch + 1;
    adopt(next);
    push(next, trace_id);
    return next;
}

void ClusterState::push(const cluster::ClusterMap& map, const std::string& trace_id) {
    std::string body = map.to_json().dump();
    // In parallel: a paused node must not hold up the others' news.
    std::vector<std::pair<const cluster::NodeEntry*, std::future<PeerReply>>> sent;
    for (const cluster::NodeEntry& n : map.nodes) {
        if (n.id == node_id_) continue;
        const PeerClient& client = push_peers_ ? *push_peers_ : peers_;
        sent.emplace_back(&n, std::async(std::launch::async, [&client, &n, &body, &trace_id] {
                              return client.post(n.peer_address(), "/v1/cluster/map", body, "application/json", trace_id);
                          }));
    }
    for (auto& [node, future] : sent) {
        const cluster::NodeEntry& n = *node;
        PeerReply reply = future.get();
        if (reply.status != 200) {
            log_line({{"event", "map_push_failed"},
                      {"to", n.address},
                      {"epoch", map.epoch},
                      {"trace_id", trace_id},
                      {"error", reply.status ? std::to_string(reply.status) + " " + reply.body.substr(0, 200) : reply.error}});
        }
    }
}

}  // namespace aerials::server
