// libFuzzer target for what aerialsd decodes from a request before anything
// else touches it: MessagePack bodies down to SQLite values and names, JSON
// bodies down to a cluster map or a join request. Every input must end in a
// value or a WireError/invalid_argument: never a crash, a hang, a leak or
// undefined behaviour (built with ASan and UBSan).
//
//   by hand, longer:  build/request_fuzz -max_total_time=600 fuzz/corpus
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>

#include "cluster/cluster_map.h"
#include "cluster/wire_values.h"

namespace {

using aerials::cluster::WireError;

// Walks a decoded document the way the handlers do: values where values are
// expected, names where names are.
void walk(const nlohmann::json& j, int depth) {
    if (depth > 64) __builtin_trap();  // the shape check must have refused this
    if (j.is_object()) {
        for (const auto& [key, value] : j.items()) {
            try {
                aerials::cluster::checked_name(key, "field");
            } catch (const WireError&) {
            }
            walk(value, depth + 1);
        }
    } else if (j.is_array()) {
        for (const auto& value : j) walk(value, depth + 1);
    } else {
        try {
            aerials::store::OwnedValue v = aerials::cluster::value_from_wire(j, "value");
            nlohmann::json back = aerials::cluster::value_to_wire(v);
            if (v.type != SQLITE_NULL && back != j && !(j.is_number_unsigned() && back.is_number_integer())) {
                __builtin_trap();  // a value must survive the round trip exactly
            }
        } catch (const WireError&) {
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view body(reinterpret_cast<const char*>(data), size);
    try {
        nlohmann::json document = aerials::cluster::decode_msgpack_body(body);
        walk(document, 0);
        aerials::cluster::integer_field(document, "limit", -1);
        aerials::cluster::string_field(document, "collection");
    } catch (const WireError&) {
    }
    try {
        nlohmann::json document = aerials::cluster::decode_json_body(body);
        aerials::cluster::ClusterMap map = aerials::cluster::ClusterMap::from_json(document);
        for (uint32_t s = 0; s < map.slots; s += 97) map.owner(s);
        aerials::cluster::ClusterMap::from_json(map.to_json());
    } catch (const std::invalid_argument&) {
    }
    return 0;
}
