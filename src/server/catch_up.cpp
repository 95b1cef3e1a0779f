#include "server/catch_up.h"

#include <chrono>
#include <cstring>
#include <map>
#include <shared_mutex>

#include "cluster/wire_values.h"
#include "server/http_api.h"

namespace aerials::server {
namespace {

using nlohmann::json;

void append_identity(std::string& out, const store::OwnedValue& v) {
    out.push_back(static_cast<char>('0' + v.type));
    switch (v.type) {
        case SQLITE_INTEGER: out.append(std::to_string(v.integer)); break;
        case SQLITE_FLOAT: {
            char bits[sizeof(double)];
            std::memcpy(bits, &v.real, sizeof bits);
            out.append(bits, sizeof bits);
            break;
        }
        default: out.append(std::to_string(v.bytes.size())).append(":").append(v.bytes);
    }
}

std::string identity(const store::OwnedValue& key, const store::OwnedValue& subkey) {
    std::string out;
    append_identity(out, key);
    out.push_back('|');
    append_identity(out, subkey);
    return out;
}

}  // namespace

std::map<std::string, std::vector<std::pair<uint32_t, uint32_t>>> ranges_by_primary(const cluster::ClusterMap& map,
                                                                                    const std::string& node_id) {
    std::map<std::string, std::vector<std::pair<uint32_t, uint32_t>>> out;
    for (const cluster::SlotRange& r : map.assignment) {
        if (!map.is_replica(r.first, node_id)) continue;
        const cluster::NodeEntry* primary = map.primary_of(r.first);
        if (!primary || primary->id == node_id) continue;
        auto& list = out[primary->id];
        if (!list.empty() && list.back().second == r.first) list.back().second = r.end;
        else list.emplace_back(r.first, r.end);
    }
    return out;
}

std::vector<char> slot_mask(uint32_t slots, const std::vector<std::pair<uint32_t, uint32_t>>& ranges) {
    std::vector<char> mask(slots, 0);
    for (auto [first, end] : ranges) {
        for (uint32_t s = first; s < end && s < slots; ++s) mask[s] = 1;
    }
    return mask;
}

void CatchUp::start() { thread_ = std::thread([this] { loop(); }); }

void CatchUp::stop() {
    stopping_ = true;
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void CatchUp::note_applied(const std::vector<KvState>& states) {
    std::lock_guard<std::mutex> lock(journal_mutex_);
    if (!journaling_) return;
    for (const KvState& st : states) journal_.insert(identity(st.key, st.subkey));
}

void CatchUp::loop() {
    int64_t done_for = -1;  // the state_epoch of the last successful catch-up
    while (!stopping_) {
        std::optional<cluster::ClusterMap> map = node_.cluster.map();
        const cluster::NodeEntry* self = map ? map->node(node_.cluster.node_id()) : nullptr;
        if (self && self->state == cluster::NodeState::kRead && self->state_epoch != done_for && !node_.draining) {
            try {
                if (run(*map)) done_for = self->state_epoch;
            } catch (const std::exception& e) {
                log_line({{"event", "catch_up_failed"}, {"node", node_.cluster.node_id()}, {"error", e.what()}});
            }
        }
        std::unique_lock<std::mutex> lock(wake_mutex_);
        wake_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stopping_.load(); });
    }
}

bool CatchUp::run(const cluster::ClusterMap& map) {
    auto started = std::chrono::steady_clock::now();
    const std::string& self = node_.cluster.node_id();
    int64_t since = map.node(self)->state_epoch;
    std::string trace = "catch-up-" + self.substr(0, 6) + "-" + std::to_string(since);
    {
        std::lock_guard<std::mutex> lock(journal_mutex_);
        journaling_ = true;
        journal_.clear();
    }
    size_t copied = 0;
    for (const auto& [primary_id, ranges] : ranges_by_primary(map, self)) {
        const cluster::NodeEntry* primary = map.node(primary_id);
        json request = {{"ranges", json::array()}};
        for (auto [first, end] : ranges) request["ranges"].push_back({first, end});
        PeerReply reply = node_.peers.post(primary->peer_address(), "/v1/replica/image", cluster::encode_msgpack(request),
                                           "application/msgpack", trace, std::to_string(map.epoch));
        if (reply.status != 200) {
            log_line({{"event", "catch_up_retry"}, {"node", self}, {"from", primary->address},
                      {"error", reply.status ? std::to_string(reply.status) + " " + reply.body.substr(0, 200) : reply.error}});
            if (reply.status == 409) {
                json body = json::parse(reply.body, nullptr, false);
                if (body.is_object() && body.contains("map")) node_.cluster.adopt(cluster::ClusterMap::from_json(body["map"]));
            }
            return false;
        }
        json answer = cluster::decode_msgpack_body(reply.body);
        std::vector<KvState> image;
        const json* rows = cluster::optional_field(answer, "rows");
        if (!rows || !rows->is_array()) throw std::runtime_error("node " + primary->address + " sent an image without rows");
        for (const json& row : *rows) {
            if (!row.is_array() || row.size() != 3) throw std::runtime_error("node " + primary->address + " sent a malformed image row");
            image.push_back({cluster::value_from_wire(row[0], "key"), cluster::value_from_wire(row[1], "subkey"),
                             cluster::value_from_wire(row[2], "value"), true});
        }
        apply_image(ranges, map.slots, image);
        copied += image.size();
    }
    const cluster::NodeEntry* coordinator = map.node(map.coordinator);
    PeerReply reply = node_.peers.post(coordinator->peer_address(), "/v1/cluster/activate",
                                       json({{"node", self}, {"epoch", since}}).dump(), "application/json", trace);
    if (reply.status != 200) {
        log_line({{"event", "catch_up_refused"}, {"node", self},
                  {"error", reply.status ? std::to_string(reply.status) + " " + reply.body.substr(0, 300) : reply.error}});
        return false;
    }
    node_.cluster.adopt(cluster::ClusterMap::from_json(json::parse(reply.body)));
    {
        std::lock_guard<std::mutex> lock(journal_mutex_);
        journaling_ = false;
        journal_.clear();
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    log_line({{"event", "caught_up"}, {"node", self}, {"records", copied}, {"seconds", seconds}, {"epoch", node_.cluster.epoch()}});
    return true;
}

void CatchUp::apply_image(const std::vector<std::pair<uint32_t, uint32_t>>& ranges, uint32_t slots,
                          const std::vector<KvState>& image) {
    auto s = node_.store.session();
    s->set_slot_filter(slot_mask(slots, ranges));
    json local = s->query("SELECT key, subkey FROM temp.aerials_kv WHERE aerials_in_slots(key)", {});
    s->set_slot_filter({});
    std::set<std::string> in_image;
    for (const KvState& st : image) in_image.insert(identity(st.key, st.subkey));
    std::vector<KvState> writes;
    for (const json& row : local["rows"]) {
        KvState gone{cluster::value_from_wire(row[0], "key"), cluster::value_from_wire(row[1], "subkey"), {}, false};
        if (!in_image.count(identity(gone.key, gone.subkey))) writes.push_back(std::move(gone));
    }
    writes.insert(writes.end(), image.begin(), image.end());
    // Replicated writes keep arriving: each notes its records in the journal
    // before it writes them, and each record of the image is checked against
    // the journal and written under its mutex, so whichever comes second of
    // the two, the replicated value stays. Small transactions keep the
    // bucket locks short for those writes.
    const size_t kChunk = 256;
    for (size_t at = 0; at < writes.size(); at += kChunk) {
        s->database().exec("BEGIN");
        try {
            for (size_t i = at; i < std::min(writes.size(), at + kChunk); ++i) {
                std::lock_guard<std::mutex> lock(journal_mutex_);
                if (journal_.count(identity(writes[i].key, writes[i].subkey))) continue;
                apply_states(*s, {writes[i]});
            }
            s->database().exec("COMMIT");
        } catch (...) {
            sqlite3_exec(s->db(), "ROLLBACK", nullptr, nullptr, nullptr);
            throw;
        }
    }
}

}  // namespace aerials::server
