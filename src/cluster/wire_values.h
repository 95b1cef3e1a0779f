// SQLite values on the wire: one MessagePack object per value, of the type
// that keeps SQLite's type exact (docs/protocol.md, "Values"). Decoding
// never trusts its input: every malformed body or misplaced type is a
// WireError naming the field, which the server answers with 400.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "sqlite/api.h"
#include "store/owned_value.h"

namespace aerials::cluster {

class WireError : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

// The body as a MessagePack document (a map at the top). Throws WireError.
nlohmann::json decode_msgpack_body(std::string_view body);
std::string encode_msgpack(const nlohmann::json& document);
// The body as a JSON object. Throws WireError.
nlohmann::json decode_json_body(std::string_view body);

nlohmann::json value_to_wire(sqlite3_value* value);
nlohmann::json value_to_wire(const store::OwnedValue& value);
// `field` names the value in messages. Throws WireError for anything that is
// not int, float, str, bin or nil, and for integers beyond int64.
store::OwnedValue value_from_wire(const nlohmann::json& j, const std::string& field);

// Binds a value to parameter `index` of a statement.
void bind_value(sqlite3_stmt* stmt, int index, const store::OwnedValue& value);

// Accessors for request fields, throwing WireError that names the field.
const nlohmann::json* optional_field(const nlohmann::json& object, const char* name);
std::string string_field(const nlohmann::json& object, const char* name);
int64_t integer_field(const nlohmann::json& object, const char* name, int64_t fallback);

// Collection and column names: [A-Za-z_][A-Za-z0-9_]*, at most 128 bytes.
// Anything else (a path such as ../../etc/passwd above all) is a WireError.
std::string checked_name(const std::string& name, const char* what);

}  // namespace aerials::cluster
