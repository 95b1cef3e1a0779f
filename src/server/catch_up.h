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

    // A replica apply is about to write `states`.
    void note_applied(const std::vector<KvState>& states);
    // ... and then failed: the journal names records that were not written,
    // so the copy in progress would keep older values of them. It is not
    // trusted: the catch-up starts over instead of asking to be activated.
    void note_failed();

    struct CopyCounts {
        int64_t deleted = 0;   // local records the image lacks
        int64_t written = 0;   // records of the image written
    };
    // Makes this node's records of `ranges` those of the node at `address`
    // (a primary of them), leaving alone records that replicated writes
    // changed meanwhile. Used by the catch-up and by the scrub's repair of a
    // diverged copy. Throws naming the node on failure.
    CopyCounts copy_slots(const std::string& address, const std::vector<std::pair<uint32_t, uint32_t>>& ranges,
                          const cluster::ClusterMap& map, const std::string& trace_id);

private:
    // While one lives, replicated writes are journaled (copies nest: a
    // catch-up of several primaries, a scrub repair during it).
    class JournalScope {
    public:
        explicit JournalScope(CatchUp& owner);
        ~JournalScope();
        JournalScope(const JournalScope&) = delete;
        JournalScope& operator=(const JournalScope&) = delete;

    private:
        CatchUp& owner_;
    };

    void loop();
    // One attempt; returns true once the coordinator made this node writable.
    bool run(const cluster::ClusterMap& map);
    CopyCounts apply_image(const std::vector<std::pair<uint32_t, uint32_t>>& ranges, uint32_t slots,
                           const std::vector<KvState>& image);

    NodeContext& node_;
    std::mutex journal_mutex_;
    int journaling_ = 0;  // copies running (a catch-up, a scrub repair)
    std::set<std::string> journal_;  // identities of records written since the catch-up began
    bool journal_failed_ = false;    // a noted apply failed (note_failed)
    std::atomic<bool> stopping_{false};
    std::mutex wake_mutex_;
    std::condition_variable wake_;
    std::thread thread_;
};

}  // namespace aerials::server
