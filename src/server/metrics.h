// Counters of the node for GET /metrics (Prometheus text format 0.0.4).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace aerials::server {

class Metrics {
public:
    void record(const std::string& endpoint, int status, double seconds, size_t bytes_in, size_t bytes_out);
    void count_forwarded() {
        std::lock_guard<std::mutex> lock(mutex_);
        ++forwarded_;
    }
    // A 200 answer that failed later: a stream that ended in an error frame
    // or was cut off.
    void count_error(const std::string& endpoint) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++errors_[endpoint];
    }
    // What the scrub found or did (src/server/scrub.h): "checked",
    // "damaged", "quarantined", "restored", "diverged".
    void count_scrub(const std::string& event) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++scrub_[event];
    }
    // `buckets` and `epoch` are gauges read when the page is made.
    std::string render(int64_t buckets, int64_t epoch) const;

private:
    static constexpr std::array<double, 12> kBounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                    0.05,   0.1,   0.25,   0.5,   1,     5};
    struct Histogram {
        std::array<uint64_t, kBounds.size()> buckets{};
        uint64_t count = 0;
        double sum = 0;
    };
    mutable std::mutex mutex_;
    std::map<std::pair<std::string, int>, uint64_t> requests_;
    std::map<std::string, Histogram> durations_;
    std::map<std::string, uint64_t> errors_;
    std::map<std::string, uint64_t> scrub_;
    uint64_t bytes_in_ = 0, bytes_out_ = 0, forwarded_ = 0;
};

}  // namespace aerials::server
