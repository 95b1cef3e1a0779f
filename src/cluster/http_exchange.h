// HTTP exchanges with aerialsd nodes over libcurl's multi interface: many
// requests at once on one thread, connections kept alive between requests
// (the multi handle's connection cache), and answers either collected whole or
// taken as they arrive (streamed scans: the caller takes frames off the
// buffer while the transfer runs, and a full buffer pauses the transfer so
// memory stays bounded however large the answer).
//
// Every handle is owned by an RAII type; no exception crosses into libcurl's
// callbacks.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace aerials::cluster {

struct HttpSettings {
    std::chrono::milliseconds connect_timeout{2000};
    // A node that sends nothing for this long (no answer, or a streamed answer
    // that stalls while the client is reading) fails the exchange with an
    // error naming it: a hung node is an error, never a hang.
    std::chrono::milliseconds idle_timeout{10000};
    // A streamed answer pauses once this much is buffered and not yet taken.
    size_t stream_buffer = 4 << 20;
};

class Exchange {
public:
    Exchange(std::string address, std::string path, std::string body, std::string content_type);
    ~Exchange();
    Exchange(const Exchange&) = delete;
    Exchange& operator=(const Exchange&) = delete;

    void add_header(const std::string& line) { headers_.push_back(line); }
    // Answer bytes are handed out with take_frame() while the transfer runs,
    // instead of being kept until it ends.
    void set_streaming() { streaming_ = true; }

    const std::string& address() const { return address_; }
    const std::string& path() const { return path_; }

    bool done() const { return done_; }
    // 0 until the status line arrived; stays 0 when the exchange failed
    // without an answer (then error() says why).
    long status() const { return status_; }
    const std::string& error() const { return error_; }
    const std::string& body() const { return received_; }
    const std::string& content_type() const { return content_type_; }
    // Value of an answer header (case-insensitive name), or "".
    std::string header(const std::string& name) const;

    // Streaming: the next complete frame (4-byte big-endian length, then that
    // many bytes) as its payload, if one is buffered. Throws when a frame
    // claims more than `max_frame` bytes.
    bool take_frame(std::string& payload, size_t max_frame);
    // Bytes buffered that do not make a complete frame (at the end: a
    // truncated answer).
    size_t leftover() const { return received_.size() - consumed_; }

private:
    friend class HttpMulti;
    static size_t on_data(char* data, size_t size, size_t count, void* self);
    static size_t on_header(char* data, size_t size, size_t count, void* self);

    std::string address_, path_, request_body_, content_type_request_;
    std::vector<std::string> headers_;
    bool streaming_ = false;

    void* easy_ = nullptr;  // CURL*, owned
    void* header_list_ = nullptr;  // curl_slist*, owned
    class HttpMulti* multi_ = nullptr;
    bool paused_ = false;
    bool done_ = false;
    long status_ = 0;
    std::string error_;
    std::string received_;
    size_t consumed_ = 0;
    std::string content_type_;
    std::vector<std::pair<std::string, std::string>> answer_headers_;
    std::chrono::steady_clock::time_point last_activity_;
    size_t buffer_limit_ = 0;
};

// One per cluster client, used by one thread at a time.
class HttpMulti {
public:
    explicit HttpMulti(HttpSettings settings);
    ~HttpMulti();
    HttpMulti(const HttpMulti&) = delete;
    HttpMulti& operator=(const HttpMulti&) = delete;

    const HttpSettings& settings() const { return settings_; }

    // Starts `exchange` (it must outlive its transfer or be removed with stop()).
    void start(Exchange& exchange);
    // Removes a transfer that is not finished (a cursor closed early).
    void stop(Exchange& exchange);
    // Moves every running transfer on: waits up to `wait` for network
    // activity, then marks finished and timed-out exchanges done.
    void pump(std::chrono::milliseconds wait);
    // Starts all and pumps until all are done.
    void run_all(const std::vector<Exchange*>& exchanges);
    // A paused streaming exchange whose buffer was drained goes on.
    void resume_if_drained(Exchange& exchange);

private:
    void finish(Exchange& exchange, const std::string& error);
    size_t collect_finished();  // marks finished transfers done; returns how many
    void check_idle();          // fails transfers silent for longer than idle_timeout

    HttpSettings settings_;
    void* multi_ = nullptr;  // CURLM*, owned
    std::vector<Exchange*> running_;
};

}  // namespace aerials::cluster
