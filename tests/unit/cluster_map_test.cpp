#include <boost/test/unit_test.hpp>

#include <limits>
#include <map>

#include "cluster/cluster_map.h"
#include "cluster/slots.h"
#include "cluster/wire_values.h"

using namespace aerials::cluster;

namespace {

NodeEntry node(const std::string& id) { return {id, "127.0.0.1:" + std::to_string(9000 + id.size()), NodeState::kWrite, 1, 2}; }

// Joins `id` the way the coordinator does (plan, then reassign).
ClusterMap joined(ClusterMap map, const std::string& id) {
    NodeEntry n = node(id);
    map.nodes.push_back(n);
    std::vector<SlotRange> plan = plan_join(map, id);
    map.assignment = reassign(map, plan, id);
    map.epoch += 2;
    return map;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cluster_map)

BOOST_AUTO_TEST_CASE(slot_is_the_top_bits) {
    BOOST_TEST(slot_of(0, 4096) == 0u);
    BOOST_TEST(slot_of(~uint64_t{0}, 4096) == 4095u);
    BOOST_TEST(slot_of(uint64_t{1} << 52, 4096) == 1u);
    BOOST_TEST(slot_of(~uint64_t{0}, 1) == 0u);
    BOOST_TEST(valid_slot_count(4096));
    BOOST_TEST(!valid_slot_count(0));
    BOOST_TEST(!valid_slot_count(3000));
    BOOST_TEST(!valid_slot_count(uint64_t{1} << 20));
}

BOOST_AUTO_TEST_CASE(joins_share_slots_evenly_and_cover_all) {
    ClusterMap map = new_cluster("c", node("a"), 4096);
    map = joined(map, "bb");
    BOOST_TEST(map.slot_count_of("a") == 2048u);
    BOOST_TEST(map.slot_count_of("bb") == 2048u);
    map = joined(map, "ccc");
    std::map<std::string, uint32_t> counts;
    for (uint32_t s = 0; s < 4096; ++s) ++counts[map.owner(s)];
    BOOST_TEST(counts.size() == 3u);
    BOOST_TEST(counts["ccc"] == 1365u);
    BOOST_TEST(counts["a"] + counts["bb"] == 4096u - 1365u);
    // The JSON form round-trips and passes validation.
    ClusterMap back = ClusterMap::from_json(map.to_json());
    BOOST_TEST(back.to_json() == map.to_json());
}

BOOST_AUTO_TEST_CASE(replicas_follow_the_owner_in_node_order) {
    ClusterMap map = joined(joined(new_cluster("c", node("a"), 16, 2, AckMode::kAll), "bb"), "ccc");
    for (uint32_t slot = 0; slot < map.slots; ++slot) {
        std::vector<const NodeEntry*> replicas = map.replicas_of(slot);
        BOOST_TEST_REQUIRE(replicas.size() == 2u);
        BOOST_TEST(replicas[0]->id == map.owner(slot));
        BOOST_TEST(replicas[1]->id != replicas[0]->id);
        BOOST_TEST(map.primary_of(slot)->id == map.owner(slot));
        BOOST_TEST(map.required_acks(slot) == 2);
    }
    // A failed owner: its slots' primary is the secondary, nothing moves,
    // and with ack=all one writable replica is enough.
    map.node("a")->state = NodeState::kInactive;
    for (uint32_t slot = 0; slot < map.slots; ++slot) {
        if (map.owner(slot) != "a") continue;
        BOOST_TEST(map.replicas_of(slot)[0]->id == "a");
        BOOST_TEST(map.primary_of(slot)->id == map.replicas_of(slot)[1]->id);
        BOOST_TEST(map.required_acks(slot) == 1);
    }
    // Quorum counts the replication factor, not who is up.
    map.replication = 3;
    map.ack = AckMode::kQuorum;
    BOOST_TEST(map.replicas_of(0).size() == 3u);
    BOOST_TEST(map.required_acks(0) == 2);
    // A node still joining holds no copies.
    map.nodes.push_back(node("dddd"));
    map.nodes.back().state = NodeState::kProposal;
    for (uint32_t slot = 0; slot < map.slots; ++slot) BOOST_TEST(!map.is_replica(slot, "dddd"));
    // Both fields survive the JSON form; a map without them is unreplicated.
    ClusterMap back = ClusterMap::from_json(map.to_json());
    BOOST_TEST(back.replication == 3);
    BOOST_TEST((back.ack == AckMode::kQuorum));
    nlohmann::json old = map.to_json();
    old.erase("replication");
    old.erase("ack");
    BOOST_TEST(ClusterMap::from_json(old).replication == 1);
    nlohmann::json bad = map.to_json();
    bad["replication"] = 4;
    BOOST_CHECK_THROW(ClusterMap::from_json(bad), std::invalid_argument);
    bad["replication"] = 2;
    bad["ack"] = "most";
    BOOST_CHECK_THROW(ClusterMap::from_json(bad), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(invalid_maps_are_refused_with_the_reason) {
    ClusterMap map = joined(new_cluster("c", node("a"), 16), "bb");
    nlohmann::json j = map.to_json();
    auto refused = [](nlohmann::json bad, const std::string& reason) {
        try {
            ClusterMap::from_json(bad);
            BOOST_ERROR("accepted: " + bad.dump());
        } catch (const std::invalid_argument& e) {
            BOOST_TEST(std::string(e.what()).find(reason) != std::string::npos, e.what());
        }
    };
    nlohmann::json gap = j;
    gap["assignment"][0][1] = 3;
    refused(gap, "cover");
    nlohmann::json stranger = j;
    stranger["assignment"][0][2] = "zz";
    refused(stranger, "unknown node");
    nlohmann::json slots = j;
    slots["slots"] = 12;
    refused(slots, "power of two");
    nlohmann::json state = j;
    state["nodes"][0]["state"] = "sleeping";
    refused(state, "unknown node state");
    nlohmann::json twice = j;
    twice["nodes"].push_back(twice["nodes"][0]);
    refused(twice, "twice");
    refused(nlohmann::json::array(), "object");
    // Found by the fuzzer: a float where an integer belongs (converting
    // 4.4e116 to int64 was undefined behaviour), and integers out of range.
    nlohmann::json huge = j;
    huge["epoch"] = 4.4e116;
    refused(huge, "epoch");
    nlohmann::json fraction = j;
    fraction["epoch"] = 2.5;
    refused(fraction, "epoch");
    nlohmann::json negative = j;
    negative["slots"] = -16;
    refused(negative, "slots");
    nlohmann::json too_big = j;
    too_big["epoch"] = std::numeric_limits<uint64_t>::max();
    refused(too_big, "epoch");
}

BOOST_AUTO_TEST_CASE(values_keep_their_sqlite_type) {
    std::string body = encode_msgpack({{"i", 5}, {"r", 5.0}, {"t", "5"}, {"b", nlohmann::json::binary({'5'})}, {"n", nullptr}});
    nlohmann::json d = decode_msgpack_body(body);
    BOOST_TEST(value_from_wire(d["i"], "i").type == SQLITE_INTEGER);
    BOOST_TEST(value_from_wire(d["r"], "r").type == SQLITE_FLOAT);
    BOOST_TEST(value_from_wire(d["r"], "r").real == 5.0);
    BOOST_TEST(value_from_wire(d["t"], "t").type == SQLITE_TEXT);
    BOOST_TEST(value_from_wire(d["b"], "b").type == SQLITE_BLOB);
    BOOST_TEST(value_from_wire(d["n"], "n").type == SQLITE_NULL);
    BOOST_CHECK_THROW(value_from_wire(nlohmann::json::array(), "x"), WireError);
    BOOST_CHECK_THROW(value_from_wire(true, "x"), WireError);
    // MessagePack ext 8 (type 1, 2 bytes) is not bin.
    nlohmann::json ext = decode_msgpack_body(std::string("\x81\xa1" "e\xc7\x02\x01" "ab", 8))["e"];
    BOOST_CHECK_THROW(value_from_wire(ext, "e"), WireError);
    BOOST_CHECK_THROW(value_from_wire(nlohmann::json(uint64_t{1} << 63), "x"), WireError);
}

BOOST_AUTO_TEST_CASE(malformed_msgpack_is_a_wire_error) {
    for (std::string bad : {std::string(""), std::string("\xc1"), std::string("\x81\xa3k"), std::string(100000, '\x91'),
                            std::string("\xdd\xff\xff\xff\xff"), std::string("\x80\x00", 2), std::string("\x91\x01")}) {
        BOOST_CHECK_THROW(decode_msgpack_body(bad), WireError);
    }
    BOOST_TEST(decode_msgpack_body(std::string("\x81\xa1k\x91\x01")).dump() == "{\"k\":[1]}");
}

BOOST_AUTO_TEST_CASE(names_are_identifiers_never_paths) {
    BOOST_TEST(checked_name("orders_2", "collection") == "orders_2");
    for (const char* bad : {"../../etc/passwd", "a/b", "..", "", "1abc", "a b", "a\\b", "x;drop"}) {
        BOOST_CHECK_THROW(checked_name(bad, "collection"), WireError);
    }
    try {
        checked_name("../../etc/passwd", "collection");
    } catch (const WireError& e) {
        BOOST_TEST(std::string(e.what()).find("path") != std::string::npos);
    }
}

BOOST_AUTO_TEST_SUITE_END()
