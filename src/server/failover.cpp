#include "server/failover.h"

#include <future>
#include <vector>

#include "server/errors.h"
#include "server/http_api.h"

namespace aerials::server {

bool last_writer_of_some_slot(const cluster::ClusterMap& map, const std::string& id) {
    for (const cluster::SlotRange& r : map.assignment) {
        bool replica = false;
        int other_writers = 0;
        for (const cluster::NodeEntry* n : map.replicas_of(r.first)) {
            if (n->id == id) replica = true;
            else if (n->state == cluster::NodeState::kWrite) ++other_writers;
        }
        if (replica && other_writers == 0) return true;
    }
    return false;
}

namespace {

// Makes serving node `id` inactive in `next` at the next epoch and logs
// `line` with that epoch; refuses (logging `refused_reason`) when it is the
// last writable replica of a slot. Returns whether the map changed.
bool make_inactive(cluster::ClusterMap& next, const std::string& id, nlohmann::json line,
                   const std::string& refused_reason) {
    cluster::NodeEntry* n = next.node(id);
    if (!n || (n->state != cluster::NodeState::kWrite && n->state != cluster::NodeState::kRead)) return false;
    if (last_writer_of_some_slot(next, id)) {
        log_line({{"event", "failover_impossible"}, {"node", id}, {"reason", refused_reason}});
        return false;
    }
    n->state = cluster::NodeState::kInactive;
    n->state_epoch = next.epoch + 1;
    line["epoch"] = next.epoch + 1;
    log_line(line);
    return true;
}

}  // namespace

Failover::Failover(NodeContext& node)
    : node_(node), probes_(node.token, std::chrono::milliseconds(node.config.probe_timeout_ms)) {}

Failover::~Failover() { stop(); }

void Failover::start() { thread_ = std::thread([this] { loop(); }); }

void Failover::stop() {
    stopping_ = true;
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

int& Failover::score_of(const cluster::NodeEntry& n) {
    // A coordinator that restarts knows no history: a node the map calls
    // inactive starts as failed, so it must answer probes before it returns.
    auto [it, fresh] = scores_.try_emplace(n.id, 0);
    if (fresh && n.state == cluster::NodeState::kInactive) it->second = node_.config.fail_threshold;
    return it->second;
}

void Failover::post(std::function<void()> task) {
    {
        std::lock_guard<std::mutex> lock(wake_mutex_);
        tasks_.push_back(std::move(task));
    }
    wake_.notify_all();
}

void Failover::run_tasks() {
    for (;;) {
        std::function<void()> task;
        {
            std::lock_guard<std::mutex> lock(wake_mutex_);
            if (tasks_.empty()) return;
            task = std::move(tasks_.front());
            tasks_.pop_front();
        }
        try {
            task();
        } catch (const std::exception& e) {
            log_line({{"event", "background_task_failed"}, {"error", e.what()}});
        }
    }
}

void Failover::loop() {
    auto next_probe = std::chrono::steady_clock::now();
    while (!stopping_) {
        run_tasks();
        if (std::chrono::steady_clock::now() >= next_probe) {
            try {
                probe_round();
            } catch (const std::exception& e) {
                log_line({{"event", "probe_round_failed"}, {"error", e.what()}});
            }
            next_probe = std::chrono::steady_clock::now() + std::chrono::milliseconds(node_.config.probe_interval_ms);
        }
        std::unique_lock<std::mutex> lock(wake_mutex_);
        wake_.wait_until(lock, next_probe, [&] { return stopping_.load() || !tasks_.empty(); });
    }
    run_tasks();
}

void Failover::probe_round() {
    std::optional<cluster::ClusterMap> map = node_.cluster.map();
    const std::string& self = node_.cluster.node_id();
    if (!map || map->coordinator != self || map->nodes.size() < 2) return;
    std::vector<std::pair<const cluster::NodeEntry*, std::future<PeerReply>>> probes;
    for (const cluster::NodeEntry& n : map->nodes) {
        if (n.id == self || n.state == cluster::NodeState::kProposal) continue;
        const std::string& target = n.peer_address();
        probes.emplace_back(&n, std::async(std::launch::async, [this, &target] { return probes_.get(target, "/health/live", "probe"); }));
    }
    std::vector<std::string> failed, recovered;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& [n, reply] : probes) {
            PeerReply r = reply.get();
            int& score = score_of(*n);
            if (r.status == 200) {
                score = std::max(0, score - 1);
            } else {
                score = std::min(score + 1, 2 * node_.config.fail_threshold);
            }
            bool serving = n->state == cluster::NodeState::kWrite || n->state == cluster::NodeState::kRead;
            if (serving && score >= node_.config.fail_threshold) failed.push_back(n->id);
            if (n->state == cluster::NodeState::kInactive && score == 0) recovered.push_back(n->id);
        }
    }
    // The coordinator made inactive itself (it had missed a write): it is
    // alive, so it catches up at once.
    if (const cluster::NodeEntry* me = map->node(self); me && me->state == cluster::NodeState::kInactive) {
        recovered.push_back(self);
    }
    if (failed.empty() && recovered.empty()) return;
    node_.cluster.change(
        [&](cluster::ClusterMap& next) {
            bool changed = false;
            for (const std::string& id : failed) {
                const cluster::NodeEntry* n = next.node(id);
                if (!n) continue;
                changed = make_inactive(next, id, {{"event", "node_failed"}, {"node", id}, {"address", n->address}},
                                        "last writable replica of a slot") ||
                          changed;
            }
            for (const std::string& id : recovered) {
                cluster::NodeEntry* n = next.node(id);
                if (!n || n->state != cluster::NodeState::kInactive) continue;
                n->state = cluster::NodeState::kRead;
                n->state_epoch = next.epoch + 1;
                log_line({{"event", "node_returned"}, {"node", id}, {"address", n->address}, {"epoch", next.epoch + 1}});
                changed = true;
            }
            return changed;
        },
        "probe");
}

void Failover::suspect(const std::string& id, const std::string& reason, const std::string& trace_id) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        std::optional<cluster::ClusterMap> map = node_.cluster.map();
        const cluster::NodeEntry* n = map ? map->node(id) : nullptr;
        if (!n) return;
        int& score = score_of(*n);
        score = std::max(score, node_.config.fail_threshold);
    }
    node_.cluster.change(
        [&](cluster::ClusterMap& next) {
            return make_inactive(next, id, {{"event", "node_suspected"}, {"node", id}, {"reason", reason}, {"trace_id", trace_id}},
                                 reason);
        },
        trace_id);
}

cluster::ClusterMap Failover::activate(const std::string& id, int64_t epoch, const std::string& trace_id) {
    std::string refusal;
    cluster::ClusterMap result = node_.cluster.change(
        [&](cluster::ClusterMap& next) {
            cluster::NodeEntry* n = next.node(id);
            if (!n) {
                refusal = "node " + id + " is not in the cluster map";
                return false;
            }
            if (n->state != cluster::NodeState::kRead || n->state_epoch != epoch) {
                refusal = "node " + id + " is " + cluster::state_name(n->state) + " since epoch " +
                          std::to_string(n->state_epoch) + ", not catching up since epoch " + std::to_string(epoch) +
                          ": its copy may have missed writes; it catches up again";
                return false;
            }
            n->state = cluster::NodeState::kWrite;
            n->state_epoch = next.epoch + 1;
            log_line({{"event", "node_caught_up"}, {"node", id}, {"epoch", next.epoch + 1}, {"trace_id", trace_id}});
            return true;
        },
        trace_id);
    if (!refusal.empty()) throw HttpError(409, "catch_up_stale", refusal, {{"map", result.to_json()}});
    return result;
}

}  // namespace aerials::server
