#include "cluster/wire_values.h"

#include <cctype>
#include <limits>
#include <vector>

namespace aerials::cluster {

namespace {

const char* type_name(const nlohmann::json& j) {
    switch (j.type()) {
        case nlohmann::json::value_t::null: return "nil";
        case nlohmann::json::value_t::boolean: return "bool";
        case nlohmann::json::value_t::number_integer:
        case nlohmann::json::value_t::number_unsigned: return "int";
        case nlohmann::json::value_t::number_float: return "float";
        case nlohmann::json::value_t::string: return "str";
        case nlohmann::json::value_t::binary: return "bin";
        case nlohmann::json::value_t::array: return "array";
        case nlohmann::json::value_t::object: return "map";
        default: return "unknown";
    }
}

// nlohmann's MessagePack reader recurses once per nesting level: a body of a
// million one-element arrays would overflow the stack. This walk checks the
// structure without recursion first: nesting depth, and counts and lengths
// that fit in what is left of the body.
void check_msgpack_shape(std::string_view b) {
    constexpr size_t kMaxDepth = 32;
    std::vector<uint64_t> open;  // items still expected by each open container
    size_t at = 0;
    auto need = [&](uint64_t n) {
        if (n > b.size() - at) throw WireError("malformed MessagePack body: truncated at byte " + std::to_string(at));
    };
    auto big_endian = [&](size_t width) {
        need(width);
        uint64_t v = 0;
        for (size_t i = 0; i < width; ++i) v = (v << 8) | static_cast<uint8_t>(b[at + i]);
        at += width;
        return v;
    };
    uint64_t expected = 1;  // the top-level object
    while (expected > 0 || !open.empty()) {
        if (expected == 0) {
            expected = open.back();
            open.pop_back();
            continue;
        }
        --expected;
        need(1);
        uint8_t t = static_cast<uint8_t>(b[at++]);
        uint64_t skip = 0, children = 0;
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        } else if (t >= 0x80 && t <= 0x8f) {
            children = 2 * uint64_t(t & 0x0f);
        } else if (t >= 0x90 && t <= 0x9f) {
            children = t & 0x0f;
        } else if (t >= 0xa0 && t <= 0xbf) {
            skip = t & 0x1f;
        } else {
            switch (t) {
                case 0xc4: case 0xd9: skip = big_endian(1); break;
                case 0xc5: case 0xda: skip = big_endian(2); break;
                case 0xc6: case 0xdb: skip = big_endian(4); break;
                case 0xc7: skip = big_endian(1) + 1; break;
                case 0xc8: skip = big_endian(2) + 1; break;
                case 0xc9: skip = big_endian(4) + 1; break;
                case 0xca: skip = 4; break;
                case 0xcb: skip = 8; break;
                case 0xcc: case 0xd0: skip = 1; break;
                case 0xcd: case 0xd1: skip = 2; break;
                case 0xce: case 0xd2: skip = 4; break;
                case 0xcf: case 0xd3: skip = 8; break;
                case 0xd4: skip = 2; break;
                case 0xd5: skip = 3; break;
                case 0xd6: skip = 5; break;
                case 0xd7: skip = 9; break;
                case 0xd8: skip = 17; break;
                case 0xdc: children = big_endian(2); break;
                case 0xdd: children = big_endian(4); break;
                case 0xde: children = 2 * big_endian(2); break;
                case 0xdf: children = 2 * big_endian(4); break;
                default: throw WireError("malformed MessagePack body: byte 0x" + std::to_string(t) + " is no type");
            }
        }
        need(skip);
        at += skip;
        if (children > 0) {
            need(children);  // every item takes at least one byte
            if (open.size() + 1 > kMaxDepth) {
                throw WireError("MessagePack body nested deeper than " + std::to_string(kMaxDepth) + " levels");
            }
            open.push_back(expected);
            expected = children;
        }
    }
    if (at != b.size()) throw WireError("malformed MessagePack body: " + std::to_string(b.size() - at) + " bytes after the end");
}

}  // namespace

nlohmann::json decode_msgpack_body(std::string_view body) {
    if (body.empty()) throw WireError("empty body: expected a MessagePack map");
    check_msgpack_shape(body);
    nlohmann::json document;
    try {
        document = nlohmann::json::from_msgpack(body.begin(), body.end(), true, true);
    } catch (const nlohmann::json::exception& e) {
        throw WireError(std::string("malformed MessagePack body: ") + e.what());
    }
    if (!document.is_object()) {
        throw WireError(std::string("the MessagePack body must be a map, got ") + type_name(document));
    }
    return document;
}

std::string encode_msgpack(const nlohmann::json& document) {
    std::string out;
    nlohmann::json::to_msgpack(document, nlohmann::detail::output_adapter<char>(out));
    return out;
}

nlohmann::json decode_json_body(std::string_view body) {
    nlohmann::json document = nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
    if (document.is_discarded()) throw WireError("malformed JSON body");
    if (!document.is_object()) throw WireError(std::string("the JSON body must be an object, got ") + type_name(document));
    return document;
}

nlohmann::json value_to_wire(sqlite3_value* value) {
    switch (sqlite3_value_type(value)) {
        case SQLITE_INTEGER: return static_cast<int64_t>(sqlite3_value_int64(value));
        case SQLITE_FLOAT: return sqlite3_value_double(value);
        case SQLITE_TEXT:
            return std::string(reinterpret_cast<const char*>(sqlite3_value_text(value)),
                               static_cast<size_t>(sqlite3_value_bytes(value)));
        case SQLITE_BLOB: {
            const auto* data = static_cast<const uint8_t*>(sqlite3_value_blob(value));
            std::vector<uint8_t> bytes(data, data + sqlite3_value_bytes(value));
            return nlohmann::json::binary(std::move(bytes));
        }
        default: return nullptr;
    }
}

nlohmann::json value_to_wire(const store::OwnedValue& value) {
    switch (value.type) {
        case SQLITE_INTEGER: return value.integer;
        case SQLITE_FLOAT: return value.real;
        case SQLITE_TEXT: return value.bytes;
        case SQLITE_BLOB: return nlohmann::json::binary(std::vector<uint8_t>(value.bytes.begin(), value.bytes.end()));
        default: return nullptr;
    }
}

store::OwnedValue value_from_wire(const nlohmann::json& j, const std::string& field) {
    store::OwnedValue v;
    switch (j.type()) {
        case nlohmann::json::value_t::null: break;
        case nlohmann::json::value_t::number_integer:
            v.type = SQLITE_INTEGER;
            v.integer = j.get<int64_t>();
            break;
        case nlohmann::json::value_t::number_unsigned: {
            uint64_t u = j.get<uint64_t>();
            if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                throw WireError(field + ": integer " + std::to_string(u) + " is beyond SQLite's 64-bit signed range");
            }
            v.type = SQLITE_INTEGER;
            v.integer = static_cast<int64_t>(u);
            break;
        }
        case nlohmann::json::value_t::number_float:
            v.type = SQLITE_FLOAT;
            v.real = j.get<double>();
            break;
        case nlohmann::json::value_t::string:
            v.type = SQLITE_TEXT;
            v.bytes = j.get_ref<const std::string&>();
            break;
        case nlohmann::json::value_t::binary: {
            const auto& bytes = j.get_binary();
            if (bytes.has_subtype()) {
                throw WireError(field + ": expected a SQLite value (int, float, str, bin or nil), got an ext type");
            }
            v.type = SQLITE_BLOB;
            v.bytes.assign(bytes.begin(), bytes.end());
            break;
        }
        default:
            throw WireError(field + ": expected a SQLite value (int, float, str, bin or nil), got " + type_name(j));
    }
    return v;
}

void bind_value(sqlite3_stmt* stmt, int index, const store::OwnedValue& value) {
    switch (value.type) {
        case SQLITE_INTEGER: sqlite3_bind_int64(stmt, index, value.integer); break;
        case SQLITE_FLOAT: sqlite3_bind_double(stmt, index, value.real); break;
        case SQLITE_TEXT:
            sqlite3_bind_text64(stmt, index, value.bytes.data(), value.bytes.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
            break;
        case SQLITE_BLOB: sqlite3_bind_blob64(stmt, index, value.bytes.data(), value.bytes.size(), SQLITE_TRANSIENT); break;
        default: sqlite3_bind_null(stmt, index); break;
    }
}

const nlohmann::json* optional_field(const nlohmann::json& object, const char* name) {
    auto it = object.find(name);
    return it == object.end() ? nullptr : &*it;
}

std::string string_field(const nlohmann::json& object, const char* name) {
    const nlohmann::json* j = optional_field(object, name);
    if (!j) throw WireError(std::string("missing field '") + name + "'");
    if (!j->is_string()) throw WireError(std::string("field '") + name + "' must be a string, got " + type_name(*j));
    return j->get<std::string>();
}

int64_t integer_field(const nlohmann::json& object, const char* name, int64_t fallback) {
    const nlohmann::json* j = optional_field(object, name);
    if (!j || j->is_null()) return fallback;
    if (j->is_number_integer() && (!j->is_number_unsigned() || j->get<uint64_t>() <= uint64_t(INT64_MAX))) {
        return j->get<int64_t>();
    }
    throw WireError(std::string("field '") + name + "' must be an integer, got " + type_name(*j));
}

std::string checked_name(const std::string& name, const char* what) {
    bool ok = !name.empty() && name.size() <= 128 && !std::isdigit(static_cast<unsigned char>(name[0]));
    for (char c : name) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') ok = false;
    }
    if (ok) return name;
    std::string shown = name.substr(0, 80);
    if (name.find('/') != std::string::npos || name.find("..") != std::string::npos || name.find('\\') != std::string::npos) {
        throw WireError(std::string(what) + " '" + shown + "' looks like a path: names are identifiers ([A-Za-z_][A-Za-z0-9_]*), never paths");
    }
    throw WireError(std::string(what) + " '" + shown + "' is not a name: use [A-Za-z_][A-Za-z0-9_]* (at most 128 characters)");
}

}  // namespace aerials::cluster
