// The key-value rows of a node in given slots, as the scrub compares and
// copies them between replicas: a digest over them (POST /v1/replica/digest),
// fetching a peer's rows (POST /v1/replica/image), and making the local rows
// of some slots equal to a peer's.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "server/local_store.h"
#include "server/peer_client.h"
#include "store/owned_value.h"

namespace aerials::server {

struct NodeContext;

// Slot ranges [first, end), ordered, not overlapping.
using SlotRanges = std::vector<std::pair<uint32_t, uint32_t>>;

// The "ranges" field of a request: [[first, end], ...] with first < end <=
// slots. Throws cluster::WireError naming the problem.
SlotRanges slot_ranges_field(const nlohmann::json& request, uint32_t slots);
nlohmann::json slot_ranges_to_json(const SlotRanges& ranges);
// Adds `slot` to `ranges`, extending the last range when it is adjacent.
void add_slot(SlotRanges& ranges, uint32_t slot);

struct KvDigest {
    std::string hex;  // XXH3-128 over the rows in (key, subkey) order, 32 hex digits
    int64_t rows = 0;
};

// The digest of the key-value rows `s` holds in `ranges`. Read through
// SQLite (the session's key-value table), in SQLite's (key, subkey) order,
// each value with its type: equal rows on two nodes give equal digests.
KvDigest kv_digest(Session& s, const SlotRanges& ranges, uint32_t slots);

using KvRow = std::array<store::OwnedValue, 3>;  // key, subkey, value

// Every key-value row node `address` holds in `ranges` (POST
// /v1/replica/image). Throws std::runtime_error naming the node and why.
std::vector<KvRow> fetch_image(const PeerClient& peers, const std::string& address, const SlotRanges& ranges,
                               int64_t epoch, const std::string& trace_id);


// POST /v1/replica/digest {"ranges": [[first, end], ...]} ->
// {"digest": "<32 hex>", "rows": n} (MessagePack both ways).
void install_digest_endpoint(httplib::Server& server, NodeContext& node);

}  // namespace aerials::server
