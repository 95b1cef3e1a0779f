#include "cluster/http_exchange.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>

namespace aerials::cluster {

namespace {

// curl_global_init is not thread-safe and must run before any other call.
void global_init() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw std::runtime_error("curl_global_init failed");
    });
}

CURL* easy_of(void* p) { return static_cast<CURL*>(p); }
CURLM* multi_of(void* p) { return static_cast<CURLM*>(p); }

bool iequal(const std::string& a, const std::string& b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\r' || s.back() == '\n' || s.back() == ' ')) s.pop_back();
    size_t b = 0;
    while (b < s.size() && s[b] == ' ') ++b;
    return s.substr(b);
}

}  // namespace

Exchange::Exchange(std::string address, std::string path, std::string body, std::string content_type)
    : address_(std::move(address)),
      path_(std::move(path)),
      request_body_(std::move(body)),
      content_type_request_(std::move(content_type)) {}

Exchange::~Exchange() {
    if (multi_) multi_->stop(*this);
    if (easy_) curl_easy_cleanup(easy_of(easy_));
    if (header_list_) curl_slist_free_all(static_cast<curl_slist*>(header_list_));
}

std::string Exchange::header(const std::string& name) const {
    for (const auto& [n, v] : answer_headers_) {
        if (iequal(n, name)) return v;
    }
    return "";
}

size_t Exchange::on_data(char* data, size_t size, size_t count, void* self) {
    auto* e = static_cast<Exchange*>(self);
    size_t n = size * count;
    if (e->streaming_ && e->buffer_limit_ > 0 && e->received_.size() - e->consumed_ >= e->buffer_limit_) {
        e->paused_ = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    try {
        if (e->consumed_ > 0 && e->consumed_ * 2 >= e->received_.size()) {
            e->received_.erase(0, e->consumed_);
            e->consumed_ = 0;
        }
        e->received_.append(data, n);
    } catch (...) {
        return 0;  // out of memory: the transfer fails (CURLE_WRITE_ERROR)
    }
    e->last_activity_ = std::chrono::steady_clock::now();
    return n;
}

size_t Exchange::on_header(char* data, size_t size, size_t count, void* self) {
    auto* e = static_cast<Exchange*>(self);
    size_t n = size * count;
    try {
        std::string line(data, n);
        if (line.rfind("HTTP/", 0) == 0) {
            e->answer_headers_.clear();  // a 100 Continue before the real answer
            // The status is known from here on, before the body: a streamed
            // answer is read while it arrives.
            size_t space = line.find(' ');
            e->status_ = space == std::string::npos ? 0 : std::strtol(line.c_str() + space + 1, nullptr, 10);
        } else if (size_t colon = line.find(':'); colon != std::string::npos) {
            std::string name = trim(line.substr(0, colon)), value = trim(line.substr(colon + 1));
            if (iequal(name, "Content-Type")) e->content_type_ = value;
            e->answer_headers_.emplace_back(std::move(name), std::move(value));
        }
    } catch (...) {
        return 0;
    }
    e->last_activity_ = std::chrono::steady_clock::now();
    return n;
}

bool Exchange::take_frame(std::string& payload, size_t max_frame) {
    size_t available = received_.size() - consumed_;
    if (available < 4) return false;
    const auto* p = reinterpret_cast<const unsigned char*>(received_.data() + consumed_);
    size_t length = (size_t(p[0]) << 24) | (size_t(p[1]) << 16) | (size_t(p[2]) << 8) | size_t(p[3]);
    if (length > max_frame) {
        throw std::runtime_error("node " + address_ + " sent a frame of " + std::to_string(length) +
                                 " bytes (more than " + std::to_string(max_frame) + ")");
    }
    if (available < 4 + length) return false;
    payload.assign(received_, consumed_ + 4, length);
    consumed_ += 4 + length;
    return true;
}

HttpMulti::HttpMulti(HttpSettings settings) : settings_(settings) {
    global_init();
    multi_ = curl_multi_init();
    if (!multi_) throw std::runtime_error("curl_multi_init failed");
    // Keep-alive connections to every node of a mid-sized cluster.
    curl_multi_setopt(multi_of(multi_), CURLMOPT_MAXCONNECTS, 64L);
}

HttpMulti::~HttpMulti() {
    for (Exchange* e : std::vector<Exchange*>(running_)) stop(*e);
    curl_multi_cleanup(multi_of(multi_));
}

void HttpMulti::start(Exchange& e) {
    if (e.multi_) throw std::logic_error("exchange already started");
    if (!e.easy_) e.easy_ = curl_easy_init();
    if (!e.easy_) throw std::runtime_error("curl_easy_init failed");
    CURL* easy = easy_of(e.easy_);
    std::string url = "http://" + e.address_ + e.path_;
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(settings_.connect_timeout.count()));
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Exchange::on_data);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &e);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &Exchange::on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &e);
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    curl_slist* list = nullptr;
    // No "Expect: 100-continue" round trip for larger bodies.
    list = curl_slist_append(list, "Expect:");
    if (!e.content_type_request_.empty()) list = curl_slist_append(list, ("Content-Type: " + e.content_type_request_).c_str());
    for (const std::string& h : e.headers_) list = curl_slist_append(list, h.c_str());
    if (e.header_list_) curl_slist_free_all(static_cast<curl_slist*>(e.header_list_));
    e.header_list_ = list;
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
    if (e.content_type_request_.empty()) {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, e.request_body_.data());
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(e.request_body_.size()));
    }
    e.buffer_limit_ = e.streaming_ ? settings_.stream_buffer : 0;
    e.done_ = false;
    e.paused_ = false;
    e.status_ = 0;
    e.error_.clear();
    e.received_.clear();
    e.consumed_ = 0;
    e.last_activity_ = std::chrono::steady_clock::now();
    CURLMcode rc = curl_multi_add_handle(multi_of(multi_), easy);
    if (rc != CURLM_OK) throw std::runtime_error(std::string("curl_multi_add_handle: ") + curl_multi_strerror(rc));
    e.multi_ = this;
    running_.push_back(&e);
}

void HttpMulti::stop(Exchange& e) {
    if (e.multi_ != this) return;
    curl_multi_remove_handle(multi_of(multi_), easy_of(e.easy_));
    e.multi_ = nullptr;
    running_.erase(std::remove(running_.begin(), running_.end(), &e), running_.end());
    if (!e.done_) {
        e.done_ = true;
        if (e.error_.empty()) e.error_ = "stopped";
    }
}

void HttpMulti::finish(Exchange& e, const std::string& error) {
    curl_easy_getinfo(easy_of(e.easy_), CURLINFO_RESPONSE_CODE, &e.status_);
    if (!error.empty()) {
        e.error_ = error;
        e.status_ = e.status_ ? e.status_ : 0;
    }
    curl_multi_remove_handle(multi_of(multi_), easy_of(e.easy_));
    e.multi_ = nullptr;
    e.done_ = true;
    running_.erase(std::remove(running_.begin(), running_.end(), &e), running_.end());
}

void HttpMulti::resume_if_drained(Exchange& e) {
    if (!e.paused_ || e.multi_ != this) return;
    if (e.received_.size() - e.consumed_ >= e.buffer_limit_ / 2) return;
    e.paused_ = false;
    e.last_activity_ = std::chrono::steady_clock::now();
    curl_easy_pause(easy_of(e.easy_), CURLPAUSE_CONT);
}

void HttpMulti::pump(std::chrono::milliseconds wait) {
    int still = 0;
    curl_multi_perform(multi_of(multi_), &still);
    if (collect_finished() == 0) {
        // Nothing finished yet: wait for the sockets (or the timeout), then go on.
        int fds = 0;
        curl_multi_poll(multi_of(multi_), nullptr, 0, static_cast<int>(wait.count()), &fds);
        curl_multi_perform(multi_of(multi_), &still);
        collect_finished();
    }
    check_idle();
}

size_t HttpMulti::collect_finished() {
    size_t finished = 0;
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_of(multi_), &left)) {
        if (msg->msg != CURLMSG_DONE) continue;
        Exchange* e = nullptr;
        for (Exchange* r : running_) {
            if (r->easy_ == msg->easy_handle) e = r;
        }
        if (!e) continue;
        CURLcode result = msg->data.result;
        std::string error;
        if (result != CURLE_OK) error = "node " + e->address_ + ": " + curl_easy_strerror(result);
        finish(*e, error);
        ++finished;
    }
    return finished;
}

void HttpMulti::check_idle() {
    auto now = std::chrono::steady_clock::now();
    for (Exchange* e : std::vector<Exchange*>(running_)) {
        if (e->paused_) continue;
        if (now - e->last_activity_ > settings_.idle_timeout) {
            finish(*e, "node " + e->address_ + " did not answer " + e->path_ + " within " +
                           std::to_string(settings_.idle_timeout.count()) + " ms (timeout_ms)");
        }
    }
}

void HttpMulti::run_all(const std::vector<Exchange*>& exchanges) {
    for (Exchange* e : exchanges) start(*e);
    for (;;) {
        bool all = true;
        for (Exchange* e : exchanges) all = all && e->done();
        if (all) return;
        pump(std::chrono::milliseconds(50));
    }
}

}  // namespace aerials::cluster
