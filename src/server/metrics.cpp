#include "server/metrics.h"

#include <sstream>

namespace aerials::server {

void Metrics::record(const std::string& endpoint, int status, double seconds, size_t bytes_in, size_t bytes_out) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++requests_[{endpoint, status}];
    Histogram& h = durations_[endpoint];
    for (size_t i = 0; i < kBounds.size(); ++i) {
        if (seconds <= kBounds[i]) ++h.buckets[i];
    }
    ++h.count;
    h.sum += seconds;
    if (status >= 400) ++errors_[endpoint];
    bytes_in_ += bytes_in;
    bytes_out_ += bytes_out;
}

std::string Metrics::render(int64_t buckets, int64_t epoch) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::ostringstream out;
    out << "# HELP aerialsd_requests_total Requests answered, by endpoint and HTTP status.\n"
        << "# TYPE aerialsd_requests_total counter\n";
    for (const auto& [key, n] : requests_) {
        out << "aerialsd_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second << "\"} " << n << "\n";
    }
    out << "# HELP aerialsd_request_duration_seconds Time from routing to the answer, by endpoint.\n"
        << "# TYPE aerialsd_request_duration_seconds histogram\n";
    for (const auto& [endpoint, h] : durations_) {
        for (size_t i = 0; i < kBounds.size(); ++i) {
            out << "aerialsd_request_duration_seconds_bucket{endpoint=\"" << endpoint << "\",le=\"" << kBounds[i]
                << "\"} " << h.buckets[i] << "\n";
        }
        out << "aerialsd_request_duration_seconds_bucket{endpoint=\"" << endpoint << "\",le=\"+Inf\"} " << h.count << "\n"
            << "aerialsd_request_duration_seconds_sum{endpoint=\"" << endpoint << "\"} " << h.sum << "\n"
            << "aerialsd_request_duration_seconds_count{endpoint=\"" << endpoint << "\"} " << h.count << "\n";
    }
    out << "# HELP aerialsd_errors_total Requests answered with a 4xx or 5xx status, and streamed answers that ended in an error frame or were cut off, by endpoint.\n"
        << "# TYPE aerialsd_errors_total counter\n";
    for (const auto& [endpoint, n] : errors_) out << "aerialsd_errors_total{endpoint=\"" << endpoint << "\"} " << n << "\n";
    out << "# HELP aerialsd_request_bytes_total Bytes of request bodies received.\n"
        << "# TYPE aerialsd_request_bytes_total counter\n"
        << "aerialsd_request_bytes_total " << bytes_in_ << "\n"
        << "# HELP aerialsd_response_bytes_total Bytes of response bodies sent.\n"
        << "# TYPE aerialsd_response_bytes_total counter\n"
        << "aerialsd_response_bytes_total " << bytes_out_ << "\n"
        << "# HELP aerialsd_forwarded_total Requests forwarded to the node owning their slot.\n"
        << "# TYPE aerialsd_forwarded_total counter\n"
        << "aerialsd_forwarded_total " << forwarded_ << "\n"
        << "# HELP aerialsd_buckets Bucket files of this node's store.\n"
        << "# TYPE aerialsd_buckets gauge\n"
        << "aerialsd_buckets " << buckets << "\n"
        << "# HELP aerialsd_epoch Epoch of the cluster map this node holds.\n"
        << "# TYPE aerialsd_epoch gauge\n"
        << "aerialsd_epoch " << epoch << "\n";
    out << "# HELP aerialsd_scrub_total Bucket checks of the scrub and what it found or did, by event.\n"
        << "# TYPE aerialsd_scrub_total counter\n";
    for (const auto& [event, n] : scrub_) out << "aerialsd_scrub_total{event=\"" << event << "\"} " << n << "\n";
    return out.str();
}

}  // namespace aerials::server
