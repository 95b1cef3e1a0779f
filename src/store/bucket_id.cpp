#include "store/bucket_id.h"

#include <cstdio>
#include <xxhash.h>

namespace aerials::store {

std::string hex64(uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

std::string BucketId::name() const {
    std::string seed = "bucket:" + std::to_string(depth) + ":" + std::to_string(prefix);
    return hex64(XXH3_64bits(seed.data(), seed.size()));
}

std::string BucketId::relative_path() const {
    std::string n = name();
    return n.substr(0, 2) + "/" + n.substr(2, 2) + "/" + n.substr(4) + ".sq3";
}

}  // namespace aerials::store
