#include "server/catch_up.h"

#include <chrono>
#include <cstring>
#include <map>
#include <shared_mutex>

#include "cluster/wire_values.h"
#include "server/http_api.h"
#include "server/scrub_rows.h"

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

CatchUp::JournalScope::JournalScope(CatchUp& owner) : owner_(owner) {
    std::lock_guard<std::mutex> lock(owner_.journal_mutex_);
    if (owner_.journaling_++ == 0) {
        owner_.journal_.clear();
        owner_.journal_failed_ = false;
    }
}

CatchUp::JournalScope::~JournalScope() {
    std::lock_guard<std::mutex> lock(owner_.journal_mutex_);
    if (--owner_.journaling_ == 0) owner_.journal_.clear();
}

void CatchUp::start() { thread_ = std::thread([this] { loop(); }); }

void CatchUp::stop() {
    stopping_ = true;
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void CatchUp::note_applied(const std::vector<KvState>& states) {
    std::lock_guard<std::mutex> lock(journal_mutex_);
    if (journaling_ == 0) return;
    for (const KvState& st : states) journal_.insert(identity(st.key, st.subkey));
}

void CatchUp::note_failed() {
    std::lock_guard<std::mutex> lock(journal_mutex_);
    if (journaling_ > 0) journal_failed_ = true;
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
    // Journaling covers the whole catch-up: a write that reached this node
    // after one primary's image must survive until the activation.
    JournalScope journal(*this);
    int64_t copied = 0;
    for (const auto& [primary_id, ranges] : ranges_by_primary(map, self)) {
        const cluster::NodeEntry* primary = map.node(primary_id);
        try {
            copied += copy_slots(primary->peer_address(), ranges, map, trace).written;
        } catch (const std::exception& e) {
            log_line({{"event", "catch_up_retry"}, {"node", self}, {"from", primary->address}, {"error", e.what()}});
            // A primary on a newer map: the loop sees it on the next turn.
            node_.cluster.refresh_from(primary->peer_address(), trace);
            return false;
        }
    }
    {
        std::lock_guard<std::mutex> lock(journal_mutex_);
        if (journal_failed_) {
            log_line({{"event", "catch_up_retry"}, {"node", self}, {"error", "a replicated write failed here during the copy"}});
            return false;
        }
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
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    log_line({{"event", "caught_up"}, {"node", self}, {"records", copied}, {"seconds", seconds}, {"epoch", node_.cluster.epoch()}});
    return true;
}

CatchUp::CopyCounts CatchUp::copy_slots(const std::string& address,
                                        const std::vector<std::pair<uint32_t, uint32_t>>& ranges,
                                        const cluster::ClusterMap& map, const std::string& trace_id) {
    JournalScope journal(*this);
    std::vector<KvState> image;
    for (KvRow& row : fetch_image(node_.peers, address, ranges, map.epoch, trace_id)) {
        image.push_back({std::move(row[0]), std::move(row[1]), std::move(row[2]), true});
    }
    return apply_image(ranges, map.slots, image);
}

CatchUp::CopyCounts CatchUp::apply_image(const std::vector<std::pair<uint32_t, uint32_t>>& ranges, uint32_t slots,
                                         const std::vector<KvState>& image) {
    CopyCounts counts;
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
                ++(writes[i].present ? counts.written : counts.deleted);
            }
            s->database().exec("COMMIT");
        } catch (...) {
            sqlite3_exec(s->db(), "ROLLBACK", nullptr, nullptr, nullptr);
            throw;
        }
    }
    return counts;
}

}  // namespace aerials::server
