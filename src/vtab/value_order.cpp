#include "vtab/value_order.h"

#include <cmath>
#include <cstring>

namespace aerials::vtab {
namespace {

int type_class(int type) {
    switch (type) {
        case SQLITE_NULL: return 0;
        case SQLITE_INTEGER:
        case SQLITE_FLOAT: return 1;
        case SQLITE_TEXT: return 2;
        default: return 3;
    }
}

// An integer against a real, exactly (a double cannot hold every int64).
int compare_int_real(sqlite3_int64 i, double r) {
    if (std::isnan(r)) return 1;
    if (r < -9223372036854775808.0) return 1;
    if (r >= 9223372036854775808.0) return -1;
    auto truncated = static_cast<sqlite3_int64>(r);
    if (i < truncated) return -1;
    if (i > truncated) return 1;
    double fraction = r - static_cast<double>(truncated);
    return fraction > 0 ? -1 : (fraction < 0 ? 1 : 0);
}

int compare_bytes(const void* a, int na, const void* b, int nb) {
    int n = na < nb ? na : nb;
    int c = n > 0 ? std::memcmp(a, b, static_cast<size_t>(n)) : 0;
    if (c != 0) return c;
    return na - nb;
}

}  // namespace

namespace {

// What the comparison needs of a value, from either representation.
struct ValueView {
    int type = SQLITE_NULL;
    sqlite3_int64 integer = 0;
    double real = 0;
    const void* bytes = nullptr;
    int size = 0;
};

ValueView view_of(sqlite3_value* v) {
    ValueView out;
    out.type = sqlite3_value_type(v);
    switch (out.type) {
        case SQLITE_INTEGER: out.integer = sqlite3_value_int64(v); break;
        case SQLITE_FLOAT: out.real = sqlite3_value_double(v); break;
        case SQLITE_TEXT: out.bytes = sqlite3_value_text(v); out.size = sqlite3_value_bytes(v); break;
        case SQLITE_BLOB: out.bytes = sqlite3_value_blob(v); out.size = sqlite3_value_bytes(v); break;
        default: break;
    }
    return out;
}

ValueView view_of(const store::OwnedValue& v) {
    ValueView out;
    out.type = v.type;
    out.integer = v.integer;
    out.real = v.real;
    out.bytes = v.bytes.data();
    out.size = static_cast<int>(v.bytes.size());
    return out;
}

int compare_views(const ValueView& a, const ValueView& b) {
    int ca = type_class(a.type), cb = type_class(b.type);
    if (ca != cb) return ca - cb;
    switch (ca) {
        case 0:
            return 0;
        case 1:
            if (a.type == SQLITE_INTEGER && b.type == SQLITE_INTEGER) return a.integer < b.integer ? -1 : (a.integer > b.integer ? 1 : 0);
            if (a.type == SQLITE_INTEGER) return compare_int_real(a.integer, b.real);
            if (b.type == SQLITE_INTEGER) return -compare_int_real(b.integer, a.real);
            return a.real < b.real ? -1 : (a.real > b.real ? 1 : 0);
        default:
            return compare_bytes(a.bytes, a.size, b.bytes, b.size);
    }
}

}  // namespace

int compare_values(sqlite3_value* a, sqlite3_value* b) { return compare_views(view_of(a), view_of(b)); }

int compare_values(const store::OwnedValue& a, const store::OwnedValue& b) { return compare_views(view_of(a), view_of(b)); }

}  // namespace aerials::vtab
