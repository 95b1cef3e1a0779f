// Random lowercase hex strings: node ids, trace ids, transaction ids.
#pragma once

#include <cstddef>
#include <string>

namespace aerials::cluster {

// `digits` random hex digits from a per-thread generator seeded with 128
// bits of std::random_device, so that two processes (or threads) started
// together do not draw the same ids.
std::string random_hex(size_t digits);

}  // namespace aerials::cluster
