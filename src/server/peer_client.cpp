#include "server/peer_client.h"

#include <charconv>
#include <stdexcept>

#include <httplib.h>

namespace aerials::server {

std::pair<std::string, int> split_address(const std::string& address, const char* what) {
    size_t colon = address.rfind(':');
    int port = 0;
    if (colon == std::string::npos || colon == 0) {
        throw std::invalid_argument(std::string(what) + " '" + address + "' is not HOST:PORT");
    }
    auto [end, ec] = std::from_chars(address.data() + colon + 1, address.data() + address.size(), port);
    if (ec != std::errc() || end != address.data() + address.size() || port <= 0 || port > 65535) {
        throw std::invalid_argument(std::string(what) + " '" + address + "' has no valid port (1..65535)");
    }
    return {address.substr(0, colon), port};
}

namespace {

httplib::Client make_client(const std::string& address, std::chrono::milliseconds timeout) {
    auto [host, port] = split_address(address, "peer address");
    httplib::Client client(host, port);
    client.set_connection_timeout(timeout);
    client.set_read_timeout(timeout);
    client.set_write_timeout(timeout);
    client.set_keep_alive(false);
    return client;
}

PeerReply reply_of(const httplib::Result& result, const std::string& address) {
    PeerReply reply;
    if (!result) {
        reply.error = "no answer from node " + address + ": " + httplib::to_string(result.error());
        return reply;
    }
    reply.status = result->status;
    reply.body = result->body;
    reply.content_type = result->get_header_value("Content-Type");
    return reply;
}

}  // namespace

PeerReply PeerClient::get(const std::string& address, const std::string& path, const std::string& trace_id) const {
    httplib::Client client = make_client(address, timeout_);
    httplib::Headers headers{{"Authorization", "Bearer " + token_}, {"X-Trace-Id", trace_id}};
    return reply_of(client.Get(path.c_str(), headers), address);
}

PeerReply PeerClient::post(const std::string& address, const std::string& path, const std::string& body,
                           const std::string& content_type, const std::string& trace_id, const std::string& epoch,
                           bool forwarded, const std::vector<std::pair<std::string, std::string>>& extra_headers) const {
    httplib::Client client = make_client(address, timeout_);
    httplib::Headers headers{{"Authorization", "Bearer " + token_}, {"X-Trace-Id", trace_id}};
    for (const auto& [name, value] : extra_headers) headers.emplace(name, value);
    if (!epoch.empty()) headers.emplace("X-Aerials-Epoch", epoch);
    if (forwarded) headers.emplace("X-Aerials-Forwarded", "1");
    return reply_of(client.Post(path.c_str(), headers, body, content_type.c_str()), address);
}

nlohmann::json PeerClient::get_json(const std::string& address, const std::string& path, const std::string& trace_id) const {
    PeerReply reply = get(address, path, trace_id);
    if (reply.status == 0) throw std::runtime_error(reply.error);
    if (reply.status != 200) {
        throw std::runtime_error("node " + address + " answered GET " + path + " with " + std::to_string(reply.status) +
                                 ": " + reply.body.substr(0, 300));
    }
    nlohmann::json j = nlohmann::json::parse(reply.body, nullptr, false);
    if (j.is_discarded()) throw std::runtime_error("node " + address + " answered GET " + path + " with malformed JSON");
    return j;
}

}  // namespace aerials::server
