// What the cluster benchmarks share: the token their nodes run with, a free
// loopback port for a node, and a kept-alive libcurl connection that sends
// the cluster token and the map epoch.
#pragma once

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace bench {

inline const char* kToken = "bench-token-0123456789abcdef";

inline int free_port() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        std::string error = std::strerror(errno);
        close(fd);
        throw std::runtime_error("cannot pick a free port: " + error);
    }
    close(fd);
    return ntohs(addr.sin_port);
}

// One kept-alive connection to any node.
class Http {
public:
    Http() : curl_(curl_easy_init()) {
        if (!curl_) throw std::runtime_error("curl_easy_init failed");
        headers_ = curl_slist_append(headers_, (std::string("Authorization: Bearer ") + kToken).c_str());
        headers_ = curl_slist_append(headers_, "Content-Type: application/msgpack");
        headers_ = curl_slist_append(headers_, "Expect:");  // no 100-continue wait (DESIGN.md pitfalls)
        curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &Http::collect);
        curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &body_);
    }
    ~Http() {
        curl_slist_free_all(headers_);
        if (epoch_headers_) curl_slist_free_all(epoch_headers_);
        curl_easy_cleanup(curl_);
    }
    Http(const Http&) = delete;
    Http& operator=(const Http&) = delete;

    // Returns the status; the answer is in body(). Throws on a transport error.
    long request(const std::string& url, const std::string* post, int64_t epoch) {
        body_.clear();
        curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
        if (epoch != epoch_) {
            if (epoch_headers_) curl_slist_free_all(epoch_headers_);
            epoch_headers_ = nullptr;
            for (curl_slist* h = headers_; h; h = h->next) epoch_headers_ = curl_slist_append(epoch_headers_, h->data);
            epoch_headers_ = curl_slist_append(epoch_headers_, ("X-Aerials-Epoch: " + std::to_string(epoch)).c_str());
            epoch_ = epoch;
        }
        curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, epoch_headers_ ? epoch_headers_ : headers_);
        if (post) {
            curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, post->data());
            curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE, static_cast<long>(post->size()));
        } else {
            curl_easy_setopt(curl_, CURLOPT_HTTPGET, 1L);
        }
        CURLcode rc = curl_easy_perform(curl_);
        if (rc != CURLE_OK) throw std::runtime_error(url + ": " + curl_easy_strerror(rc));
        long status = 0;
        curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &status);
        return status;
    }
    const std::string& body() const { return body_; }

private:
    static size_t collect(char* data, size_t size, size_t n, void* out) {
        static_cast<std::string*>(out)->append(data, size * n);
        return size * n;
    }
    CURL* curl_;
    curl_slist* headers_ = nullptr;
    curl_slist* epoch_headers_ = nullptr;
    int64_t epoch_ = -1;
    std::string body_;
};

}  // namespace bench
