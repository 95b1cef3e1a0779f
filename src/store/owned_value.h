// A copy of one SQLite value that outlives its statement, for rows handed
// from worker threads to the thread that runs the query.
#pragma once

#include <cstdint>
#include <string>
#include <new>
#include <utility>

#include "sqlite/api.h"

namespace aerials::store {

struct OwnedValue {
    int type = SQLITE_NULL;
    int64_t integer = 0;
    double real = 0;
    std::string bytes;  // text or blob

    void assign(sqlite3_value* v) {
        type = sqlite3_value_type(v);
        switch (type) {
            case SQLITE_INTEGER: integer = sqlite3_value_int64(v); break;
            case SQLITE_FLOAT: real = sqlite3_value_double(v); break;
            case SQLITE_TEXT:
                bytes.assign(reinterpret_cast<const char*>(sqlite3_value_text(v)),
                             static_cast<size_t>(sqlite3_value_bytes(v)));
                break;
            case SQLITE_BLOB: {
                const void* data = sqlite3_value_blob(v);
                bytes.assign(data ? static_cast<const char*>(data) : "", static_cast<size_t>(sqlite3_value_bytes(v)));
                break;
            }
            default: break;
        }
    }

    void result(sqlite3_context* ctx) const {
        switch (type) {
            case SQLITE_INTEGER: sqlite3_result_int64(ctx, integer); break;
            case SQLITE_FLOAT: sqlite3_result_double(ctx, real); break;
            case SQLITE_TEXT:
                sqlite3_result_text(ctx, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
                break;
            case SQLITE_BLOB:
                sqlite3_result_blob(ctx, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
                break;
            default: sqlite3_result_null(ctx); break;
        }
    }
};

// A protected copy of a value (sqlite3_value_dup), for rows that worker
// threads read and the querying thread compares and returns as they are.
class ValueCopy {
public:
    ValueCopy() = default;
    explicit ValueCopy(sqlite3_value* v) : value_(sqlite3_value_dup(v)) {
        if (!value_) throw std::bad_alloc();
    }
    ~ValueCopy() { sqlite3_value_free(value_); }
    ValueCopy(ValueCopy&& other) noexcept : value_(std::exchange(other.value_, nullptr)) {}
    ValueCopy& operator=(ValueCopy&& other) noexcept {
        if (this != &other) {
            sqlite3_value_free(value_);
            value_ = std::exchange(other.value_, nullptr);
        }
        return *this;
    }
    ValueCopy(const ValueCopy&) = delete;
    ValueCopy& operator=(const ValueCopy&) = delete;

    sqlite3_value* get() const { return value_; }
    void result(sqlite3_context* ctx) const { sqlite3_result_value(ctx, value_); }

private:
    sqlite3_value* value_ = nullptr;
};

}  // namespace aerials::store
