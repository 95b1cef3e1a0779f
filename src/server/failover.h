// The coordinator's failure handling (docs/decisions/0011-replication.md):
// it probes every node, keeps an unreliability score per node (a failed or
// late probe adds one, an answered probe takes one off), makes a node whose
// score reaches the threshold inactive (its slots fail over to the next
// writable replica: a new map epoch, nothing moves), lets a node whose
// score fell back to zero catch up (state read), and makes it writable again
// once it reports it has caught up.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/cluster_map.h"
#include "server/peer_client.h"

namespace aerials::server {

struct NodeContext;

// Whether making `id` inactive would leave a slot with no writable replica.
bool last_writer_of_some_slot(const cluster::ClusterMap& map, const std::string& id);

class Failover {
public:
    explicit Failover(NodeContext& node);
    ~Failover();
    Failover(const Failover&) = delete;
    Failover& operator=(const Failover&) = delete;

    // Starts probing (it acts only while this node is the coordinator).
    void start();
    void stop();

    // Runs `task` on this object's thread, soon: work a request must not
    // wait for (failure reports, asynchronous replication). Tasks left at
    // stop() run before it returns.
    void post(std::function<void()> task);

    // `id` missed a write its primary acknowledged or rolled back: it goes
    // inactive now (unless it is the last writable replica of a slot).
    void suspect(const std::string& id, const std::string& reason, const std::string& trace_id);
    // `id` copied its slots while in state read since `epoch`: it becomes
    // writable. Throws HttpError 409 catch_up_stale if its state changed since.
    cluster::ClusterMap activate(const std::string& id, int64_t epoch, const std::string& trace_id);

private:
    void loop();
    void run_tasks();
    void probe_round();
    int& score_of(const cluster::NodeEntry& n);

    NodeContext& node_;
    PeerClient probes_;
    std::mutex mutex_;
    std::map<std::string, int> scores_;
    std::atomic<bool> stopping_{false};
    std::mutex wake_mutex_;
    std::condition_variable wake_;
    std::deque<std::function<void()>> tasks_;  // under wake_mutex_
    std::thread thread_;
};

}  // namespace aerials::server
