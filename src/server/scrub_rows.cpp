#include "server/scrub_rows.h"

#include <xxhash.h>

#include <charconv>
#include <cstring>
#include <optional>
#include <memory>
#include <set>

#include "cluster/slots.h"
#include "cluster/wire_values.h"
#include "server/catch_up.h"
#include "server/cluster_state.h"
#include "server/errors.h"
#include "server/http_api.h"
#include "store/key_hash.h"

namespace aerials::server {
namespace {

using cluster::WireError;
using nlohmann::json;

const char* kMsgpack = "application/msgpack";

struct StateFree {
    void operator()(XXH3_state_t* state) const { XXH3_freeState(state); }
};

// One value with its type, so that 1, 1.0, '1' and x'31' differ.
void feed(XXH3_state_t* state, sqlite3_value* v) {
    unsigned char type = static_cast<unsigned char>(sqlite3_value_type(v));
    unsigned char buffer[9] = {type};
    size_t n = 1;
    auto put64 = [&](uint64_t x) {
        for (int i = 0; i < 8; ++i) buffer[1 + i] = static_cast<unsigned char>(x >> (56 - 8 * i));
        n = 9;
    };
    switch (type) {
        case SQLITE_INTEGER: put64(static_cast<uint64_t>(sqlite3_value_int64(v))); break;
        case SQLITE_FLOAT: {
            double d = sqlite3_value_double(v);
            uint64_t bits;
            std::memcpy(&bits, &d, sizeof bits);
            put64(bits);
            break;
        }
        case SQLITE_TEXT:
        case SQLITE_BLOB: put64(static_cast<uint64_t>(sqlite3_value_bytes(v))); break;
        default: break;
    }
    XXH3_128bits_update(state, buffer, n);
    if (type == SQLITE_TEXT) XXH3_128bits_update(state, sqlite3_value_text(v), static_cast<size_t>(sqlite3_value_bytes(v)));
    if (type == SQLITE_BLOB && sqlite3_value_bytes(v) > 0) {
        XXH3_128bits_update(state, sqlite3_value_blob(v), static_cast<size_t>(sqlite3_value_bytes(v)));
    }
}

std::string hex128(XXH128_hash_t h) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (uint64_t part : {h.high64, h.low64}) {
        for (int shift = 60; shift >= 0; shift -= 4) out.push_back(digits[(part >> shift) & 15]);
    }
    return out;
}

}  // namespace

SlotRanges slot_ranges_field(const json& request, uint32_t slots) {
    const json* ranges = cluster::optional_field(request, "ranges");
    if (!ranges || !ranges->is_array()) throw WireError("field 'ranges' must be an array of [first_slot, end_slot] pairs");
    SlotRanges out;
    for (size_t i = 0; i < ranges->size(); ++i) {
        const json& r = (*ranges)[i];
        std::string where = "ranges[" + std::to_string(i) + "]";
        if (!r.is_array() || r.size() != 2 || !r[0].is_number_integer() || !r[1].is_number_integer()) {
            throw WireError(where + " must be a pair of integers [first_slot, end_slot]");
        }
        int64_t first = r[0].get<int64_t>(), end = r[1].get<int64_t>();
        if (first < 0 || first >= end || end > static_cast<int64_t>(slots)) {
            throw WireError(where + " = [" + std::to_string(first) + ", " + std::to_string(end) +
                            "] is not a non-empty range of the " + std::to_string(slots) + " slots");
        }
        out.emplace_back(static_cast<uint32_t>(first), static_cast<uint32_t>(end));
    }
    return out;
}

json slot_ranges_to_json(const SlotRanges& ranges) {
    json out = json::array();
    for (const auto& [first, end] : ranges) out.push_back({first, end});
    return out;
}

void add_slot(SlotRanges& ranges, uint32_t slot) {
    if (!ranges.empty() && ranges.back().second == slot) {
        ranges.back().second = slot + 1;
    } else {
        ranges.emplace_back(slot, slot + 1);
    }
}

KvDigest kv_digest(Session& s, const SlotRanges& ranges, uint32_t slots) {
    std::unique_ptr<XXH3_state_t, StateFree> state(XXH3_createState());
    if (!state) throw std::bad_alloc();
    XXH3_128bits_reset(state.get());
    KvDigest digest;
    // Only the records of `ranges`, sorted: the slot filter runs before the sort.
    s.set_slot_filter(slot_mask(slots, ranges));
    sqlite::Statement rows = s.database().prepare(
        "SELECT key, subkey, value FROM temp.aerials_kv WHERE aerials_in_slots(key) ORDER BY key, subkey");
    while (rows.step()) {
        for (int i = 0; i < 3; ++i) feed(state.get(), rows.column_value(i));
        ++digest.rows;
    }
    digest.hex = hex128(XXH3_128bits_digest(state.get()));
    return digest;
}

std::vector<KvRow> fetch_image(const PeerClient& peers, const std::string& address, const SlotRanges& ranges,
                               int64_t epoch, const std::string& trace_id) {
    std::string body = cluster::encode_msgpack({{"ranges", slot_ranges_to_json(ranges)}});
    PeerReply reply = peers.post(address, "/v1/replica/image", body, kMsgpack, trace_id, std::to_string(epoch));
    if (reply.status == 0) throw std::runtime_error("fetching the replica image from " + address + " failed: " + reply.error);
    if (reply.status != 200) {
        throw std::runtime_error("node " + address + " answered the replica image request with " +
                                 std::to_string(reply.status) + ": " + reply.body.substr(0, 300));
    }
    json answer = cluster::decode_msgpack_body(reply.body);
    const json* rows = cluster::optional_field(answer, "rows");
    if (!rows || !rows->is_array()) throw std::runtime_error("the replica image of " + address + " has no 'rows' array");
    std::vector<KvRow> out;
    out.reserve(rows->size());
    for (size_t i = 0; i < rows->size(); ++i) {
        const json& r = (*rows)[i];
        std::string where = "rows[" + std::to_string(i) + "]";
        if (!r.is_array() || r.size() != 3) throw std::runtime_error("the replica image of " + address + ": " + where + " is not [key, subkey, value]");
        try {
            out.push_back({cluster::value_from_wire(r[0], where + "[0]"), cluster::value_from_wire(r[1], where + "[1]"),
                           cluster::value_from_wire(r[2], where + "[2]")});
        } catch (const std::exception& e) {
            throw std::runtime_error("the replica image of " + address + ": " + e.what());
        }
    }
    return out;
}


void install_digest_endpoint(httplib::Server& server, NodeContext& node) {
    server.Post("/v1/replica/digest", [&node](const httplib::Request& req, httplib::Response& res) {
        std::string trace = req.get_header_value("X-Trace-Id");
        try {
            if (!node.cluster.ready()) throw HttpError(503, "not_ready", "this node holds no cluster map in which it owns slots yet");
            std::string text = req.get_header_value("X-Aerials-Epoch");
            int64_t epoch = -1;
            auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), epoch);
            if (text.empty() || ec != std::errc() || end != text.data() + text.size() || epoch < 0) {
                throw WireError("header X-Aerials-Epoch must be the epoch of the cluster map the request was made with");
            }
            std::optional<cluster::ClusterMap> map = node.cluster.map();
            if (epoch < map->epoch) {
                throw HttpError(409, "stale_epoch",
                                "the request was made with epoch " + std::to_string(epoch) + " but the cluster map is at epoch " +
                                    std::to_string(map->epoch),
                                {{"map", map->to_json()}});
            }
            if (req.get_header_value("Content-Type").rfind(kMsgpack, 0) != 0) {
                throw WireError("Content-Type must be application/msgpack for this endpoint");
            }
            SlotRanges ranges = slot_ranges_field(cluster::decode_msgpack_body(req.body), map->slots);
            // Rows read from a damaged file may be wrong without an error: a
            // replica must not copy them (its scrub asks again next round).
            if (node.store.has_damaged_buckets()) {
                throw HttpError(503, "damaged", "this node's scrub found a damaged bucket that is not restored yet");
            }
            KvDigest digest = kv_digest(*node.store.session(), ranges, map->slots);
            res.status = 200;
            res.set_header("X-Aerials-Epoch", std::to_string(map->epoch));
            res.set_content(cluster::encode_msgpack({{"digest", digest.hex}, {"rows", digest.rows}}), kMsgpack);
        } catch (...) {
            ErrorAnswer e = error_answer(std::current_exception());
            json body = e.extra;
            body["error"] = e.code;
            body["message"] = e.message;
            body["trace_id"] = trace;
            res.status = e.status;
            res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
        }
    });
}

}  // namespace aerials::server
