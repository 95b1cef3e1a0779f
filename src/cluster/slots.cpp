#include "cluster/slots.h"

#include <bit>

namespace aerials::cluster {

bool valid_slot_count(uint64_t slots) { return slots >= 1 && slots <= kMaxSlots && std::has_single_bit(slots); }

uint32_t slot_of(store::Hash hash, uint32_t slots) {
    int bits = std::countr_zero(slots);
    if (bits == 0) return 0;  // one slot: a shift by 64 would be undefined
    return static_cast<uint32_t>(hash >> (64 - bits));
}

}  // namespace aerials::cluster
