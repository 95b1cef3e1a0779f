// Calls from this node to another (join, map push, bucket listing, forwarding
// a request to the owner of its slot), with the cluster token and bounded
// timeouts: a peer that does not answer is an error naming it, never a hang.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace aerials::server {

struct PeerReply {
    int status = 0;  // 0: no answer (the error says why)
    std::string body;
    std::string content_type;
    std::string error;
};

class PeerClient {
public:
    PeerClient(std::string token, std::chrono::milliseconds timeout) : token_(std::move(token)), timeout_(timeout) {}
    PeerClient with_timeout(std::chrono::milliseconds timeout) const { return PeerClient(token_, timeout); }

    PeerReply get(const std::string& address, const std::string& path, const std::string& trace_id) const;
    PeerReply post(const std::string& address, const std::string& path, const std::string& body,
                   const std::string& content_type, const std::string& trace_id, const std::string& epoch = "",
                   bool forwarded = false,
                   const std::vector<std::pair<std::string, std::string>>& extra_headers = {}) const;
    // A JSON answer with status 200, or throws std::runtime_error naming the
    // peer, the path and what it answered.
    nlohmann::json get_json(const std::string& address, const std::string& path, const std::string& trace_id) const;

private:
    std::string token_;
    std::chrono::milliseconds timeout_;
};

// "host:port" split; throws std::invalid_argument naming `what`.
std::pair<std::string, int> split_address(const std::string& address, const char* what);

}  // namespace aerials::server
