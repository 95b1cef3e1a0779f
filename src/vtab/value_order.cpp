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

int compare_values(sqlite3_value* a, sqlite3_value* b) {
    int ta = sqlite3_value_type(a), tb = sqlite3_value_type(b);
    int ca = type_class(ta), cb = type_class(tb);
    if (ca != cb) return ca - cb;
    switch (ca) {
        case 0:
            return 0;
        case 1:
            if (ta == SQLITE_INTEGER && tb == SQLITE_INTEGER) {
                sqlite3_int64 x = sqlite3_value_int64(a), y = sqlite3_value_int64(b);
                return x < y ? -1 : (x > y ? 1 : 0);
            }
            if (ta == SQLITE_INTEGER) return compare_int_real(sqlite3_value_int64(a), sqlite3_value_double(b));
            if (tb == SQLITE_INTEGER) return -compare_int_real(sqlite3_value_int64(b), sqlite3_value_double(a));
            {
                double x = sqlite3_value_double(a), y = sqlite3_value_double(b);
                return x < y ? -1 : (x > y ? 1 : 0);
            }
        case 2: {
            const unsigned char* x = sqlite3_value_text(a);
            int nx = sqlite3_value_bytes(a);
            const unsigned char* y = sqlite3_value_text(b);
            int ny = sqlite3_value_bytes(b);
            return compare_bytes(x, nx, y, ny);
        }
        default: {
            const void* x = sqlite3_value_blob(a);
            int nx = sqlite3_value_bytes(a);
            const void* y = sqlite3_value_blob(b);
            int ny = sqlite3_value_bytes(b);
            return compare_bytes(x, nx, y, ny);
        }
    }
}

}  // namespace aerials::vtab
