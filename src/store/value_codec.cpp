#include "store/value_codec.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>

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

std::string values_as_json(std::string_view in) {
    auto u64 = [&](size_t at) {
        if (at + 8 > in.size()) throw std::invalid_argument("malformed value encoding");
        uint64_t v = 0;
        for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(in[at + i]);
        return v;
    };
    std::string out = "[";
    size_t at = 0;
    while (at < in.size()) {
        if (out.size() > 1) out += ",";
        char tag = in[at++];
        if (tag == 'n') {
            out += "null";
        } else if (tag == 'i') {
            out += std::to_string(static_cast<int64_t>(u64(at)));
            at += 8;
        } else if (tag == 'r') {
            uint64_t bits = u64(at);
            at += 8;
            double d;
            std::memcpy(&d, &bits, sizeof d);
            char buf[40];
            std::snprintf(buf, sizeof buf, "%.17g", d);
            std::string number = buf;
            if (number.find_first_of(".eEn") == std::string::npos) number += ".0";
            out += number;
        } else if (tag == 't' || tag == 'b') {
            uint64_t size = u64(at);
            at += 8;
            if (size > in.size() - at) throw std::invalid_argument("malformed value encoding");
            std::string_view payload = in.substr(at, size);
            at += size;
            static const char* hex = "0123456789abcdef";
            if (tag == 'b') {
                out += "{\"blob\":\"";
                for (unsigned char c : payload) {
                    out += hex[c >> 4];
                    out += hex[c & 15];
                }
                out += "\"}";
            } else {
                out += '"';
                for (unsigned char c : payload) {
                    if (c == '"' || c == '\\') {
                        out += '\\';
                        out += static_cast<char>(c);
                    } else if (c < 0x20) {
                        out += "\\u00";
                        out += hex[c >> 4];
                        out += hex[c & 15];
                    } else {
                        out += static_cast<char>(c);
                    }
                }
                out += '"';
            }
        } else {
            throw std::invalid_argument("malformed value encoding");
        }
    }
    return out + "]";
}

}  // namespace aerials::store
