// The node's second listener, for other nodes: liveness probes, replicated
// writes, catch-up images, failure reports and map pushes. It serves the
// same endpoints as the main one, on threads of its own: cpp-httplib holds a
// worker per open connection, so clients keeping connections alive could
// otherwise leave a replica's acknowledgement, or a probe, waiting in the
// queue until the primary gives up (a slow node is not a dead one, and a
// stopped process answers here no more than on its main port).
#pragma once

#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

#include <httplib.h>

namespace aerials::server {

class PeerListener {
public:
    // `setup` installs the endpoints and settings; the listener takes a port
    // the system picks on `host`.
    PeerListener(const std::string& host, const std::function<void(httplib::Server&)>& setup) {
        setup(server_);
        int port = server_.bind_to_any_port(host.c_str());
        if (port <= 0) throw std::runtime_error("cannot open the listener for other nodes on " + host);
        address_ = host + ":" + std::to_string(port);
        thread_ = std::thread([this] { server_.listen_after_bind(); });
    }
    ~PeerListener() { stop(); }
    PeerListener(const PeerListener&) = delete;
    PeerListener& operator=(const PeerListener&) = delete;

    void stop() {
        server_.stop();
        if (thread_.joinable()) thread_.join();
    }
    const std::string& address() const { return address_; }

private:
    httplib::Server server_;
    std::string address_;
    std::thread thread_;
};

}  // namespace aerials::server
