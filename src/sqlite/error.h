// Errors of the SQLite layer carry the SQLite result code and a message made
// where the fact is known (which file, which statement).
#pragma once

#include <stdexcept>
#include <string>

namespace aerials::sqlite {

class Error : public std::runtime_error {
public:
    Error(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
    // The primary or extended SQLite result code (SQLITE_BUSY, SQLITE_CORRUPT, ...).
    int code() const { return code_; }
    int primary_code() const { return code_ & 0xff; }

private:
    int code_;
};

}  // namespace aerials::sqlite
