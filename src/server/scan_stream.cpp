#include "server/scan_stream.h"

#include "cluster/wire_values.h"
#include "server/errors.h"

namespace aerials::server {
namespace {

void append_be32(uint32_t v, std::string& out) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

}  // namespace

std::string frame_of(const std::string& msgpack_map) {
    std::string out;
    out.reserve(4 + msgpack_map.size());
    append_be32(static_cast<uint32_t>(msgpack_map.size()), out);
    out += msgpack_map;
    return out;
}

ScanStream::ScanStream(LocalStore::Lease lease, sqlite::Statement stmt) {
    lease_.emplace(std::move(lease));
    stmt_.emplace(std::move(stmt));
    columns_ = sqlite3_column_count(stmt_->get());
    has_row_ = stmt_->step();  // throws: nothing was sent yet
}

void ScanStream::advance() {
    try {
        has_row_ = stmt_->step();
    } catch (...) {
        // The 200 went out already: the error travels as the last frame.
        has_row_ = false;
        ErrorAnswer e = error_answer(std::current_exception());
        error_.emplace(e.code, e.message);
    }
}

bool ScanStream::write(httplib::DataSink& sink, const std::string& msgpack_map) {
    std::string frame = frame_of(msgpack_map);
    if (!sink.write(frame.data(), frame.size())) return false;
    ++outcome_.frames;
    outcome_.bytes += frame.size();
    return true;
}

bool ScanStream::give_up(const std::string& why) {
    outcome_.error = why + " after " + std::to_string(outcome_.rows) + " rows";
    finish();
    return false;
}

void ScanStream::finish() {
    // The statement's read transactions end before the session goes back.
    stmt_.reset();
    lease_.reset();
}

bool ScanStream::pump(httplib::DataSink& sink) {
    if (!stmt_) return outcome_.complete;  // finished: nothing more to write
    if (!sink.is_writable()) return give_up("the client went away");
    if (!columns_sent_) {
        nlohmann::json names = nlohmann::json::array();
        for (int i = 0; i < columns_; ++i) names.push_back(sqlite3_column_name(stmt_->get(), i));
        if (!write(sink, cluster::encode_msgpack({{"columns", std::move(names)}}))) return give_up("the client went away");
        columns_sent_ = true;
    }
    if (has_row_) {
        // The rows are encoded one by one into the frame's array, whose
        // count is known only at the end: an array 32 header, then the rows.
        std::string rows;
        uint32_t count = 0;
        while (has_row_ && count < kMaxRowsPerFrame && rows.size() < kMaxFrameBytes) {
            nlohmann::json row = nlohmann::json::array();
            for (int i = 0; i < columns_; ++i) row.push_back(cluster::value_to_wire(stmt_->column_value(i)));
            rows += cluster::encode_msgpack(row);
            ++count;
            advance();
        }
        std::string map("\x81\xa4rows\xdd", 7);
        append_be32(count, map);
        map += rows;
        rows.clear();
        if (!write(sink, map)) return give_up("the client went away");
        outcome_.rows += count;
    }
    if (has_row_) return true;
    nlohmann::json last;
    if (error_) {
        last = {{"error", error_->first}, {"message", error_->second}};
        outcome_.error = error_->second;
    } else {
        last = {{"end", true}, {"rows", outcome_.rows}};
    }
    if (!write(sink, cluster::encode_msgpack(last))) return give_up("the client went away");
    outcome_.complete = true;
    finish();
    sink.done();
    return true;
}

}  // namespace aerials::server
