#include "cluster/cluster_map.h"

#include <limits>
#include <type_traits>

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>

namespace aerials::cluster {

const char* state_name(NodeState state) {
    switch (state) {
        case NodeState::kWrite: return "write";
        case NodeState::kRead: return "read";
        case NodeState::kInactive: return "inactive";
        case NodeState::kProposal: return "proposal";
    }
    return "?";
}

NodeState parse_state(const std::string& name) {
    if (name == "write") return NodeState::kWrite;
    if (name == "read") return NodeState::kRead;
    if (name == "inactive") return NodeState::kInactive;
    if (name == "proposal") return NodeState::kProposal;
    throw std::invalid_argument("unknown node state '" + name + "' (known: write, read, inactive, proposal)");
}

const char* ack_name(AckMode mode) {
    switch (mode) {
        case AckMode::kAll: return "all";
        case AckMode::kQuorum: return "quorum";
        case AckMode::kAsync: return "async";
    }
    return "?";
}

AckMode parse_ack(const std::string& name) {
    if (name == "all") return AckMode::kAll;
    if (name == "quorum") return AckMode::kQuorum;
    if (name == "async") return AckMode::kAsync;
    throw std::invalid_argument("unknown ack mode '" + name + "' (known: all, quorum, async)");
}

std::vector<const NodeEntry*> ClusterMap::replicas_of(uint32_t slot) const {
    std::vector<const NodeEntry*> out;
    const std::string& first = owner(slot);
    size_t at = nodes.size();
    for (size_t i = 0; i < nodes.size(); ++i) {
        if (nodes[i].id == first) at = i;
    }
    if (at == nodes.size()) return out;
    for (size_t k = 0; k < nodes.size() && out.size() < static_cast<size_t>(replication); ++k) {
        const NodeEntry& n = nodes[(at + k) % nodes.size()];
        if (n.state != NodeState::kProposal) out.push_back(&n);
    }
    return out;
}

const NodeEntry* ClusterMap::primary_of(uint32_t slot) const {
    for (const NodeEntry* n : replicas_of(slot)) {
        if (n->state == NodeState::kWrite) return n;
    }
    return nullptr;
}

bool ClusterMap::is_replica(uint32_t slot, const std::string& id) const {
    for (const NodeEntry* n : replicas_of(slot)) {
        if (n->id == id) return true;
    }
    return false;
}

int ClusterMap::required_acks(uint32_t slot) const {
    switch (ack) {
        case AckMode::kAsync: return 1;
        // A majority of the replicas the slot has (fewer than `replication`
        // while the cluster has fewer nodes), failed ones included.
        case AckMode::kQuorum: return static_cast<int>(replicas_of(slot).size()) / 2 + 1;
        case AckMode::kAll: break;
    }
    int writable = 0;
    for (const NodeEntry* n : replicas_of(slot)) writable += n->state == NodeState::kWrite;
    return std::max(writable, 1);
}

std::vector<std::string> ClusterMap::primaries_by_slot() const {
    std::vector<std::string> out(slots);
    for (const SlotRange& r : assignment) {
        // Every slot of a range has the same replicas: compute them once.
        const NodeEntry* p = primary_of(r.first);
        for (uint32_t s = r.first; s < r.end && s < slots; ++s) out[s] = p ? p->id : "";
    }
    return out;
}

std::vector<char> ClusterMap::primary_slots_of(const std::string& id) const {
    std::vector<char> mask(slots, 0);
    for (const SlotRange& r : assignment) {
        const NodeEntry* p = primary_of(r.first);
        if (!p || p->id != id) continue;
        for (uint32_t s = r.first; s < r.end && s < slots; ++s) mask[s] = 1;
    }
    return mask;
}

const NodeEntry* ClusterMap::node(const std::string& id) const {
    for (const NodeEntry& n : nodes) {
        if (n.id == id) return &n;
    }
    return nullptr;
}

NodeEntry* ClusterMap::node(const std::string& id) {
    for (NodeEntry& n : nodes) {
        if (n.id == id) return &n;
    }
    return nullptr;
}

const std::string& ClusterMap::owner(uint32_t slot) const {
    static const std::string none;
    auto it = std::upper_bound(assignment.begin(), assignment.end(), slot,
                               [](uint32_t s, const SlotRange& r) { return s < r.end; });
    if (it == assignment.end() || slot < it->first) return none;
    return it->owner;
}

std::vector<std::string> ClusterMap::owners_by_slot() const {
    std::vector<std::string> owners(slots);
    for (const SlotRange& r : assignment) {
        for (uint32_t s = r.first; s < r.end && s < slots; ++s) owners[s] = r.owner;
    }
    return owners;
}

uint32_t ClusterMap::slot_count_of(const std::string& id) const {
    uint32_t n = 0;
    for (const SlotRange& r : assignment) {
        if (r.owner == id) n += r.end - r.first;
    }
    return n;
}

nlohmann::json ClusterMap::to_json() const {
    nlohmann::json j;
    j["cluster_id"] = cluster_id;
    j["epoch"] = epoch;
    j["slots"] = slots;
    j["hash"] = store::kHashName;
    j["coordinator"] = coordinator;
    j["nodes"] = nlohmann::json::array();
    for (const NodeEntry& n : nodes) {
        j["nodes"].push_back({{"id", n.id},
                              {"address", n.address},
                              {"state", state_name(n.state)},
                              {"free_bytes", n.free_bytes},
                              {"last_seen", n.last_seen_ms},
                              {"state_epoch", n.state_epoch},
                              {"peer", n.peer}});
    }
    j["assignment"] = nlohmann::json::array();
    for (const SlotRange& r : assignment) j["assignment"].push_back({r.first, r.end, r.owner});
    j["replication"] = replication;
    j["ack"] = ack_name(ack);
    return j;
}

namespace {

template <class T>
T field(const nlohmann::json& j, const char* name, const std::string& where) {
    if (!j.is_object() || !j.contains(name)) throw std::invalid_argument(where + ": missing field '" + name + "'");
    if constexpr (std::is_integral_v<T>) {
        // nlohmann converts a float to an integer unchecked (undefined beyond
        // the type's range): an integer field must be an integer in range.
        const nlohmann::json& v = j.at(name);
        bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())
                  : v.is_number_integer()  ? std::is_signed_v<T> || v.get<int64_t>() >= 0
                                           : false;
        if (!fits) throw std::invalid_argument(where + ": field '" + name + "' must be an integer in range");
        return v.is_number_unsigned() ? static_cast<T>(v.get<uint64_t>()) : static_cast<T>(v.get<int64_t>());
    }
    try {
        return j.at(name).get<T>();
    } catch (const nlohmann::json::exception&) {
        throw std::invalid_argument(where + ": field '" + name + "' has the wrong type");
    }
}

}  // namespace

ClusterMap ClusterMap::from_json(const nlohmann::json& j) {
    if (!j.is_object()) throw std::invalid_argument("cluster map: expected a JSON object");
    ClusterMap map;
    map.cluster_id = field<std::string>(j, "cluster_id", "cluster map");
    map.epoch = field<int64_t>(j, "epoch", "cluster map");
    uint64_t slots = field<uint64_t>(j, "slots", "cluster map");
    if (!valid_slot_count(slots)) {
        throw std::invalid_argument("cluster map: slots must be a power of two up to " + std::to_string(kMaxSlots) +
                                    ", got " + std::to_string(slots));
    }
    map.slots = static_cast<uint32_t>(slots);
    if (j.contains("hash") && field<std::string>(j, "hash", "cluster map") != store::kHashName) {
        throw std::invalid_argument("cluster map: hash '" + j["hash"].get<std::string>() + "' is not this build's " +
                                    store::kHashName);
    }
    map.coordinator = field<std::string>(j, "coordinator", "cluster map");
    const nlohmann::json& nodes = j.contains("nodes") ? j["nodes"] : nlohmann::json();
    if (!nodes.is_array()) throw std::invalid_argument("cluster map: 'nodes' must be an array");
    std::set<std::string> ids;
    for (const nlohmann::json& n : nodes) {
        NodeEntry e;
        e.id = field<std::string>(n, "id", "cluster map node");
        e.address = field<std::string>(n, "address", "cluster map node " + e.id);
        e.state = parse_state(field<std::string>(n, "state", "cluster map node " + e.id));
        e.free_bytes = field<int64_t>(n, "free_bytes", "cluster map node " + e.id);
        e.last_seen_ms = field<int64_t>(n, "last_seen", "cluster map node " + e.id);
        if (n.contains("state_epoch")) e.state_epoch = field<int64_t>(n, "state_epoch", "cluster map node " + e.id);
        if (n.contains("peer")) e.peer = field<std::string>(n, "peer", "cluster map node " + e.id);
        if (!ids.insert(e.id).second) throw std::invalid_argument("cluster map: node " + e.id + " listed twice");
        map.nodes.push_back(std::move(e));
    }
    if (!ids.count(map.coordinator)) throw std::invalid_argument("cluster map: coordinator " + map.coordinator + " is not a node");
    const nlohmann::json& ranges = j.contains("assignment") ? j["assignment"] : nlohmann::json();
    if (!ranges.is_array()) throw std::invalid_argument("cluster map: 'assignment' must be an array");
    uint32_t next = 0;
    for (const nlohmann::json& r : ranges) {
        auto slot_number = [&](const nlohmann::json& v) {
            return v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= int64_t{kMaxSlots};
        };
        if (!r.is_array() || r.size() != 3 || !slot_number(r[0]) || !slot_number(r[1]) || !r[2].is_string()) {
            throw std::invalid_argument("cluster map: an assignment entry must be [first, end, node id] with slot numbers");
        }
        SlotRange range{static_cast<uint32_t>(r[0].get<int64_t>()), static_cast<uint32_t>(r[1].get<int64_t>()),
                        r[2].get<std::string>()};
        if (range.first != next || range.end <= range.first || range.end > map.slots) {
            throw std::invalid_argument("cluster map: assignment must cover slots 0.." + std::to_string(map.slots) +
                                        " in order, once; entry [" + std::to_string(range.first) + ", " +
                                        std::to_string(range.end) + ") does not follow " + std::to_string(next));
        }
        if (!ids.count(range.owner)) throw std::invalid_argument("cluster map: slots owned by unknown node " + range.owner);
        next = range.end;
        map.assignment.push_back(std::move(range));
    }
    if (next != map.slots) {
        throw std::invalid_argument("cluster map: slots from " + std::to_string(next) + " on have no owner");
    }
    // Maps written before replication existed hold neither field.
    if (j.contains("replication")) {
        map.replication = field<int>(j, "replication", "cluster map");
        if (map.replication < 1 || map.replication > kMaxReplication) {
            throw std::invalid_argument("cluster map: replication must be 1.." + std::to_string(kMaxReplication) +
                                        ", got " + std::to_string(map.replication));
        }
    }
    if (j.contains("ack")) map.ack = parse_ack(field<std::string>(j, "ack", "cluster map"));
    return map;
}

ClusterMap new_cluster(const std::string& cluster_id, NodeEntry first, uint32_t slots, int replication, AckMode ack) {
    ClusterMap map;
    map.replication = replication;
    map.ack = ack;
    map.cluster_id = cluster_id;
    map.epoch = 1;
    map.slots = slots;
    map.coordinator = first.id;
    first.state = NodeState::kWrite;
    map.assignment.push_back({0, slots, first.id});
    map.nodes.push_back(std::move(first));
    return map;
}

std::vector<SlotRange> ranges_from_owners(const std::vector<std::string>& owners) {
    std::vector<SlotRange> ranges;
    for (uint32_t s = 0; s < owners.size(); ++s) {
        if (!ranges.empty() && ranges.back().owner == owners[s] && ranges.back().end == s) {
            ranges.back().end = s + 1;
        } else {
            ranges.push_back({s, s + 1, owners[s]});
        }
    }
    return ranges;
}

std::vector<SlotRange> plan_join(const ClusterMap& map, const std::string& newcomer) {
    std::vector<std::string> owners = map.owners_by_slot();
    std::map<std::string, std::vector<uint32_t>> held;  // owner -> its slots, ascending
    for (uint32_t s = 0; s < owners.size(); ++s) held[owners[s]].push_back(s);
    held.erase(newcomer);
    size_t nodes_after = held.size() + 1;
    uint32_t share = static_cast<uint32_t>(map.slots / nodes_after);
    std::vector<std::string> taken(map.slots);  // slot -> giver, "" if not taken
    for (uint32_t got = 0; got < share; ++got) {
        auto giver = std::max_element(held.begin(), held.end(), [](const auto& a, const auto& b) {
            return a.second.size() < b.second.size();  // ties: the first by id
        });
        if (giver == held.end() || giver->second.size() <= 1) break;
        taken[giver->second.back()] = giver->first;
        giver->second.pop_back();
    }
    std::vector<SlotRange> plan;
    for (const SlotRange& r : ranges_from_owners(taken)) {
        if (!r.owner.empty()) plan.push_back(r);
    }
    return plan;
}

std::vector<SlotRange> reassign(const ClusterMap& map, const std::vector<SlotRange>& plan, const std::string& newcomer) {
    std::vector<std::string> owners = map.owners_by_slot();
    for (const SlotRange& r : plan) {
        for (uint32_t s = r.first; s < r.end; ++s) owners[s] = newcomer;
    }
    return ranges_from_owners(owners);
}

}  // namespace aerials::cluster
