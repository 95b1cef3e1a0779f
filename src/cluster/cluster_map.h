// The cluster map: which node owns which slots, and at which epoch
// (docs/protocol.md, "The cluster map"). A value type with its JSON form;
// the daemon's coordinator changes it, every node and client reads it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster/slots.h"

namespace aerials::cluster {

// write: serving its slots; read: back after a failure, catching up (it is
// sent replicated writes, serves nothing, and its acknowledgements do not
// count); inactive: failed, routed around; proposal: joining.
enum class NodeState { kWrite, kRead, kInactive, kProposal };
const char* state_name(NodeState state);
// Throws std::invalid_argument naming the unknown state.
NodeState parse_state(const std::string& name);

struct NodeEntry {
    std::string id;       // 16 hex digits, chosen by the node once and kept in its catalog
    std::string address;  // host:port it listens on
    NodeState state = NodeState::kProposal;
    int64_t free_bytes = 0;
    int64_t last_seen_ms = 0;  // Unix milliseconds
    // The epoch of the map that gave the node its state: a catch-up that
    // began at one epoch may finish only if the state is still that one.
    int64_t state_epoch = 0;
    // host:port of the node's listener for other nodes (probes, replicated
    // writes, images, map pushes), served by threads of its own, so that
    // client connections cannot starve them; "" means `address`.
    std::string peer;
    const std::string& peer_address() const { return peer.empty() ? address : peer; }
};

// Slots [first, end) belong to `owner` (a node id).
struct SlotRange {
    uint32_t first = 0, end = 0;
    std::string owner;
};

// How many replicas must hold a write before it is acknowledged (counting the
// primary): every replica in state write, a majority of the replication
// factor, or the primary alone (the others get it after the acknowledgement).
enum class AckMode { kAll, kQuorum, kAsync };
const char* ack_name(AckMode mode);
// Throws std::invalid_argument naming the unknown mode.
AckMode parse_ack(const std::string& name);

inline constexpr int kMaxReplication = 3;

struct ClusterMap {
    std::string cluster_id;
    int64_t epoch = 0;
    uint32_t slots = kDefaultSlots;
    std::string coordinator;  // node id of the node that changes the map
    std::vector<NodeEntry> nodes;
    std::vector<SlotRange> assignment;  // ordered, covering 0..slots once
    int replication = 1;                // replicas per slot (1..kMaxReplication)
    AckMode ack = AckMode::kAll;

    const NodeEntry* node(const std::string& id) const;
    NodeEntry* node(const std::string& id);
    // The owner's id of `slot`, or "" if unassigned (never in a valid map).
    const std::string& owner(uint32_t slot) const;
    // Slots each node owns, as one owner per slot.
    std::vector<std::string> owners_by_slot() const;
    uint32_t slot_count_of(const std::string& id) const;

    // The replicas of `slot`: its owner, then the next replication-1 nodes
    // after it in `nodes` order (wrapping), leaving out nodes still joining.
    // A failed node stays in the list, so a failover changes no placement.
    std::vector<const NodeEntry*> replicas_of(uint32_t slot) const;
    // The first replica of `slot` in state write, or nullptr if none is.
    const NodeEntry* primary_of(uint32_t slot) const;
    // Whether node `id` is a replica of `slot`.
    bool is_replica(uint32_t slot, const std::string& id) const;
    // Replicas (the primary included) that must hold a write of `slot`
    // before it is acknowledged.
    int required_acks(uint32_t slot) const;
    // The primary's id for every slot ("" where no replica is writable).
    std::vector<std::string> primaries_by_slot() const;
    // Per slot, non-zero where node `id` is the primary (a scan's slot filter).
    std::vector<char> primary_slots_of(const std::string& id) const;

    nlohmann::json to_json() const;
    // Checks everything a map promises (known states, ranges that cover every
    // slot exactly once, owners that are nodes); throws std::invalid_argument
    // naming the first problem.
    static ClusterMap from_json(const nlohmann::json& j);
};

// A new cluster of one node that owns every slot, at epoch 1.
ClusterMap new_cluster(const std::string& cluster_id, NodeEntry first, uint32_t slots, int replication = 1,
                       AckMode ack = AckMode::kAll);

// The slots a newcomer takes when it joins: an equal share (slots divided by
// the number of slot-owning nodes after the join), taken one at a time from
// whichever node holds most at that moment, from the top of its slots. Each
// returned range names the node that gives it.
std::vector<SlotRange> plan_join(const ClusterMap& map, const std::string& newcomer);

// `map` with the ranges of `plan` owned by `newcomer` (ranges re-merged).
std::vector<SlotRange> reassign(const ClusterMap& map, const std::vector<SlotRange>& plan, const std::string& newcomer);

// Merges an owner-per-slot vector into ordered ranges.
std::vector<SlotRange> ranges_from_owners(const std::vector<std::string>& owners);

}  // namespace aerials::cluster
