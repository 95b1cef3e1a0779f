#include "cluster/cluster_client.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "cluster/random_hex.h"
#include "cluster/slots.h"
#include "cluster/wire_values.h"
#include "sqlite/database.h"

namespace aerials::cluster {

namespace {

constexpr const char* kMsgpack = "application/msgpack";

}  // namespace

std::vector<std::string> parse_cluster_url(const std::string& url) {
    std::vector<std::string> seeds;
    std::stringstream parts(url);
    std::string part;
    while (std::getline(parts, part, ',')) {
        while (!part.empty() && part.front() == ' ') part.erase(part.begin());
        while (!part.empty() && part.back() == ' ') part.pop_back();
        const std::string scheme = "http://";
        if (part.rfind(scheme, 0) != 0) {
            throw std::invalid_argument("cluster '" + part + "' is not an http:// URL (e.g. cluster='http://127.0.0.1:9080')");
        }
        std::string address = part.substr(scheme.size());
        if (!address.empty() && address.back() == '/') address.pop_back();
        size_t colon = address.rfind(':');
        if (address.empty() || address.find('/') != std::string::npos || colon == std::string::npos ||
            colon + 1 == address.size() || address.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
            throw std::invalid_argument("cluster '" + part + "' must be http://HOST:PORT");
        }
        seeds.push_back(address);
    }
    if (seeds.empty()) throw std::invalid_argument("cluster is empty: give a node, e.g. cluster='http://127.0.0.1:9080'");
    return seeds;
}

std::string read_token_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::invalid_argument("cannot read token_file '" + path + "'");
    std::stringstream content;
    content << in.rdbuf();
    std::string token = content.str();
    size_t b = token.find_first_not_of(" \t\r\n"), e = token.find_last_not_of(" \t\r\n");
    if (b == std::string::npos) throw std::invalid_argument("token_file '" + path + "' is empty");
    return token.substr(b, e - b + 1);
}

ClusterClient::ClusterClient(ClusterSettings settings)
    : settings_(std::move(settings)), http_(settings_.http), trace_prefix_(random_hex(8)) {}

const ClusterMap& ClusterClient::map() {
    if (!have_map_) refresh_map();
    return map_;
}

void ClusterClient::adopt_map(const nlohmann::json& map_json) {
    ClusterMap fresh = ClusterMap::from_json(map_json);
    if (have_map_ && fresh.epoch <= map_.epoch) return;
    if (fresh.slots == 0) throw std::runtime_error("cluster map without slots");
    // Requests go to each slot's primary: its first writable replica.
    owner_by_slot_ = fresh.primaries_by_slot();
    map_ = std::move(fresh);
    have_map_ = true;
}

void ClusterClient::refresh_map(const std::string& avoid) {
    std::vector<std::string> addresses = settings_.seeds;
    if (have_map_) {
        for (const NodeEntry& n : map_.nodes) addresses.push_back(n.address);
    }
    std::stable_partition(addresses.begin(), addresses.end(), [&](const std::string& a) { return a != avoid; });
    std::string failures;
    for (const std::string& address : addresses) {
        auto exchange = get(address, "/v1/cluster/map");
        http_.run_all({exchange.get()});
        if (exchange->status() == 200) {
            nlohmann::json j = nlohmann::json::parse(exchange->body(), nullptr, false);
            if (j.is_discarded()) {
                failures += "; node " + address + " sent a malformed map";
                continue;
            }
            try {
                adopt_map(j);
                return;
            } catch (const std::exception& e) {
                failures += "; node " + address + ": " + e.what();
                continue;
            }
        }
        if (exchange->status() == 401 || exchange->status() == 403) {
            throw NodeError("node " + address + " refused the cluster token (HTTP " + std::to_string(exchange->status()) +
                                "): check token_file",
                            exchange->status(), "forbidden");
        }
        failures += "; " + (exchange->status() ? "node " + address + " answered HTTP " + std::to_string(exchange->status())
                                               : exchange->error());
    }
    throw NodeError("cannot fetch the cluster map" + failures, 0, "unreachable");
}

const NodeEntry& ClusterClient::owner_of(store::Hash hash) {
    const ClusterMap& m = map();
    uint32_t slot = slot_of(hash, m.slots);
    const std::string& id = owner_by_slot_.at(slot);
    if (id.empty()) {
        throw NodeError("slot " + std::to_string(slot) + " has no writable replica in the cluster map (epoch " +
                            std::to_string(m.epoch) + "): every node holding it is down",
                        503, "unavailable");
    }
    const NodeEntry* node = m.node(id);
    if (!node) throw std::runtime_error("cluster map names an unknown owner " + id);
    return *node;
}

std::vector<const NodeEntry*> ClusterClient::slot_owners() {
    const ClusterMap& m = map();
    std::vector<const NodeEntry*> owners;
    for (const NodeEntry& n : m.nodes) {
        if (std::find(owner_by_slot_.begin(), owner_by_slot_.end(), n.id) != owner_by_slot_.end()) owners.push_back(&n);
    }
    return owners;
}

std::unique_ptr<Exchange> ClusterClient::post(const NodeEntry& node, const std::string& path, const nlohmann::json& body) {
    auto e = std::make_unique<Exchange>(node.address, path, encode_msgpack(body), kMsgpack);
    e->add_header("Authorization: Bearer " + settings_.token);
    e->add_header("X-Aerials-Epoch: " + std::to_string(map().epoch));
    e->add_header("X-Trace-Id: " + trace_prefix_ + "-" + std::to_string(++trace_counter_));
    return e;
}

std::unique_ptr<Exchange> ClusterClient::post_json(const NodeEntry& node, const std::string& path,
                                                  const nlohmann::json& body) {
    auto e = std::make_unique<Exchange>(node.address, path, body.dump(), "application/json");
    e->add_header("Authorization: Bearer " + settings_.token);
    e->add_header("X-Trace-Id: " + trace_prefix_ + "-" + std::to_string(++trace_counter_));
    return e;
}

std::unique_ptr<Exchange> ClusterClient::get(const std::string& address, const std::string& path) {
    auto e = std::make_unique<Exchange>(address, path, "", "");
    e->add_header("Authorization: Bearer " + settings_.token);
    e->add_header("X-Trace-Id: " + trace_prefix_ + "-" + std::to_string(++trace_counter_));
    return e;
}

void ClusterClient::throw_failure(Exchange& e) {
    if (e.status() == 0) {
        // The node may have failed over: the next request routes with the
        // newest map any node holds.
        try {
            refresh_map(e.address());
        } catch (const std::exception&) {
        }
        throw NodeError(e.error().empty() ? "no answer from node " + e.address() : e.error(), 0, "unreachable");
    }
    nlohmann::json body = nlohmann::json::parse(e.body(), nullptr, false);
    std::string code = body.is_object() && body.contains("error") && body["error"].is_string() ? body["error"].get<std::string>() : "";
    std::string message = body.is_object() && body.contains("message") && body["message"].is_string()
                              ? body["message"].get<std::string>()
                              : e.body().substr(0, 300);
    if ((e.status() == 409 && code == "stale_epoch") || (e.status() == 421 && code == "wrong_node")) {
        if (body.contains("map")) adopt_map(body["map"]);
        else refresh_map();
        throw StaleRoute("node " + e.address() + ": " + message);
    }
    if (e.status() == 503 && code == "not_ready") {
        // A node that was failed over, or is catching up, runs nothing.
        refresh_map();
        throw StaleRoute("node " + e.address() + ": " + message);
    }
    if (e.status() == 409 && code == "constraint") throw sqlite::Error(SQLITE_CONSTRAINT, message);
    if (e.status() == 503 && code == "busy") throw sqlite::Error(SQLITE_BUSY, "node " + e.address() + ": " + message);
    if (e.status() == 401 || e.status() == 403) {
        throw NodeError("node " + e.address() + " refused the cluster token (HTTP " + std::to_string(e.status()) +
                            "): check token_file",
                        e.status(), code);
    }
    throw NodeError("node " + e.address() + " answered " + e.path() + " with HTTP " + std::to_string(e.status()) +
                        (code.empty() ? "" : " " + code) + ": " + message,
                    e.status(), code);
}

nlohmann::json ClusterClient::answer_of(Exchange& e) {
    if (e.status() != 200 || !e.error().empty()) throw_failure(e);
    if (e.content_type().rfind(kMsgpack, 0) == 0) {
        try {
            return decode_msgpack_body(e.body());
        } catch (const std::exception& x) {
            throw NodeError("node " + e.address() + " sent a malformed answer to " + e.path() + ": " + x.what(), 200, "malformed");
        }
    }
    nlohmann::json j = nlohmann::json::parse(e.body(), nullptr, false);
    if (j.is_discarded()) throw NodeError("node " + e.address() + " sent malformed JSON to " + e.path(), 200, "malformed");
    return j;
}

}  // namespace aerials::cluster
