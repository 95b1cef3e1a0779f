// GET /health/live on a listener with threads of its own: a node whose
// workers all wait (on a hung replica, say) is slow, not dead, and must not
// be failed over for that; a stopped process (SIGSTOP) answers here no more
// than on its main port.
#pragma once

#include <stdexcept>
#include <string>
#include <thread>

#include <httplib.h>

namespace aerials::server {

class HealthListener {
public:
    // Listens on `host` at a port the system picks.
    explicit HealthListener(const std::string& host) {
        server_.Get("/health/live", [](const httplib::Request&, httplib::Response& res) {
            res.set_content("{\"status\":\"live\"}", "application/json");
        });
        int port = server_.bind_to_any_port(host.c_str());
        if (port <= 0) throw std::runtime_error("cannot open the liveness listener on " + host);
        address_ = host + ":" + std::to_string(port);
        thread_ = std::thread([this] { server_.listen_after_bind(); });
    }
    ~HealthListener() {
        server_.stop();
        if (thread_.joinable()) thread_.join();
    }
    HealthListener(const HealthListener&) = delete;
    HealthListener& operator=(const HealthListener&) = delete;

    const std::string& address() const { return address_; }

private:
    httplib::Server server_;
    std::string address_;
    std::thread thread_;
};

}  // namespace aerials::server
