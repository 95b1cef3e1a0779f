#include "cluster/random_hex.h"

#include <random>

namespace aerials::cluster {

std::string random_hex(size_t digits) {
    static thread_local std::mt19937_64 engine = [] {
        std::random_device device;
        std::seed_seq seed{device(), device(), device(), device()};
        return std::mt19937_64(seed);
    }();
    static const char* const hex = "0123456789abcdef";
    std::string out;
    out.reserve(digits);
    for (size_t i = 0; i < digits; ++i) out.push_back(hex[engine() & 15]);
    return out;
}

}  // namespace aerials::cluster
