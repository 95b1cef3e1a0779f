#include "store/value_codec.h"

#include <cstdint>
#include <cstring>

namespace aerials::store {
namespace {

void append_u64(uint64_t v, std::string& out) {
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

}  // namespace

void append_value(sqlite3_value* value, std::string& out) {
    switch (sqlite3_value_type(value)) {
        case SQLITE_INTEGER:
            out.push_back('i');
            append_u64(static_cast<uint64_t>(sqlite3_value_int64(value)), out);
            return;
        case SQLITE_FLOAT: {
            double d = sqlite3_value_double(value);
            uint64_t bits;
            std::memcpy(&bits, &d, sizeof bits);
            out.push_back('r');
            append_u64(bits, out);
            return;
        }
        case SQLITE_TEXT:
        case SQLITE_BLOB: {
            bool text = sqlite3_value_type(value) == SQLITE_TEXT;
            const void* data = text ? static_cast<const void*>(sqlite3_value_text(value)) : sqlite3_value_blob(value);
            auto size = static_cast<uint64_t>(sqlite3_value_bytes(value));
            out.push_back(text ? 't' : 'b');
            append_u64(size, out);
            if (size) out.append(static_cast<const char*>(data), size);
            return;
        }
        default:
            out.push_back('n');
    }
}

}  // namespace aerials::store
