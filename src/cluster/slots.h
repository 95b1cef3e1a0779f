// Slots: the fixed top-bits ranges of the placement hash that the cluster map
// assigns to nodes (docs/protocol.md, "Slots and keys"). Shared by the daemon
// and the extension's cluster client.
#pragma once

#include <cstdint>

#include "store/key_hash.h"

namespace aerials::cluster {

// 2^12 slots: a node's share stays fine-grained up to a few hundred nodes,
// and a slot still covers 2^52 hash values (many buckets' worth).
inline constexpr uint32_t kDefaultSlots = 4096;
inline constexpr uint32_t kMaxSlots = 1u << 16;

// A power of two from 1 to kMaxSlots.
bool valid_slot_count(uint64_t slots);

// The slot owning `hash`: its top log2(slots) bits.
uint32_t slot_of(store::Hash hash, uint32_t slots);

}  // namespace aerials::cluster
