// A node that comes back after a failure (state read in the map) copies the
// key-value records of its slots from their current primaries, then asks
// the coordinator to make it writable again (docs/decisions/0011-replication.md).
//
// While it copies, primaries already send it every new write. A record
// written that way since the catch-up began is newer than any image, so the
// image never overwrites it: the journal remembers those records.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster_map.h"
#include "server/replication.h"

namespace aerials::server {

struct NodeContext;

// Contiguous slot ranges [first, end) of `map` whose replicas include
// `node_id`, grouped by their current primary (other than `node_id`).
std::map<std::string, std::vector<std::pair<uint32_t, uint32_t>>> ranges_by_primary(const cluster::ClusterMap& map,
                                                                                    const std::string& node_id);
// A mask for Session::set_slot_filter covering `ranges`.
std::vector<char> slot_mask(uint32_t slots, const std::vector<std::pair<uint32_t, uint32_t>>& ranges);

class CatchUp {
public:
    explicit CatchUp(NodeContext& node) : node_(node) {}
    ~CatchUp() { stop(); }
    CatchUp(const CatchUp&) = delete;
    CatchUp& operator=(const CatchUp&) = delete;

    void start();
    void stop();

    // A replica apply wrote `states` (called under the write gate, shared).
    void note_applied(const std::vector<KvState>& states);

private:
    void loop();
    // One attempt; returns true once the coordinator made this node writable.
    bool run(const cluster::ClusterMap& map);
    void apply_image(const std::vector<std::pair<uint32_t, uint32_t>>& ranges, uint32_t slots,
                     const std::vector<KvState>& image);

    NodeContext& node_;
    std::mutex journal_mutex_;
    bool journaling_ = false;
    std::set<std::string> journal_;  // identities of records written since the catch-up began
    std::atomic<bool> stopping_{false};
    std::mutex wake_mutex_;
    std::condition_variable wake_;
    std::thread thread_;
};

}  // namespace aerials::server
