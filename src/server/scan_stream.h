// A scan answered as a stream of frames (docs/protocol.md, "Streamed scans"):
// the statement is stepped batch by batch from httplib's chunked content
// provider, so memory stays bounded however many rows the scan returns.
//
// A frame is a 4-byte big-endian length and that many bytes of one
// MessagePack map: {"columns": [...]}, then {"rows": [[...], ...]} frames,
// then {"end": true, "rows": n} or {"error": code, "message": text}.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <httplib.h>

#include "server/local_store.h"
#include "sqlite/database.h"

namespace aerials::server {

inline constexpr const char* kFramesContentType = "application/x-aerials-frames";

// The 4-byte big-endian length of `msgpack_map`, then the map.
std::string frame_of(const std::string& msgpack_map);

// What a stream did, for the request's log line and the metrics.
struct StreamOutcome {
    int64_t rows = 0;
    int64_t frames = 0;
    uint64_t bytes = 0;
    bool complete = false;  // the end or the error frame was written
    std::string error;      // the error frame's message, or why the stream stopped early
};

class ScanStream {
public:
    static constexpr size_t kMaxRowsPerFrame = 256;
    static constexpr size_t kMaxFrameBytes = size_t{1} << 20;

    // `stmt` is prepared on `lease`'s session and bound. The first row is
    // stepped here, so that a failure before anything was sent throws and is
    // answered with the usual JSON error and status.
    ScanStream(LocalStore::Lease lease, sqlite::Statement stmt);
    ScanStream(const ScanStream&) = delete;
    ScanStream& operator=(const ScanStream&) = delete;

    // Writes the next frames to `sink` (one call writes at most one frame of
    // rows). Returns false once the client is gone: then the statement is
    // finalized and the session given back, and httplib stops calling.
    bool pump(httplib::DataSink& sink);
    const StreamOutcome& outcome() const { return outcome_; }

private:
    void advance();  // steps to the next row; an error becomes the error frame
    bool write(httplib::DataSink& sink, const std::string& msgpack_map);
    bool give_up(const std::string& why);
    void finish();

    // Declared before the statement: the statement is finalized first.
    std::optional<LocalStore::Lease> lease_;
    std::optional<sqlite::Statement> stmt_;
    int columns_ = 0;
    bool columns_sent_ = false;
    bool has_row_ = false;
    std::optional<std::pair<std::string, std::string>> error_;  // code, message
    StreamOutcome outcome_;
};

}  // namespace aerials::server
