// A bucket's identity: the hash range it owns and the file that holds it.
//
// Buckets form a binary trie over the 64-bit hash space: a bucket at `depth` d
// with `prefix` p owns every hash whose top d bits equal p, that is the range
// [p << (64-d), (p+1) << (64-d)). A split replaces a bucket by 2^k children at
// depth d+k. Ranges therefore never overlap and always cover the whole space,
// and a bucket's identity is never reused (no merges), which makes file names
// derived from it safe to recreate after a crashed split.
#pragma once

#include <cstdint>
#include <string>

#include "store/key_hash.h"

namespace aerials::store {

// Deeper than this and a bucket would hold a handful of hash values; a split
// that would pass it is refused.
inline constexpr int kMaxDepth = 48;

struct BucketId {
    int depth = 0;
    uint64_t prefix = 0;

    Hash lo() const { return depth == 0 ? 0 : prefix << (64 - depth); }
    // Inclusive upper end of the range.
    Hash hi() const { return depth == 0 ? ~Hash{0} : lo() | (~Hash{0} >> depth); }
    bool owns(Hash h) const { return depth == 0 || (h >> (64 - depth)) == prefix; }
    // The child at depth + k that owns `h` (requires owns(h)).
    uint64_t child_index(Hash h, int k) const {
        return (h >> (64 - depth - k)) & ((uint64_t{1} << k) - 1);
    }
    BucketId child(int k, uint64_t index) const { return {depth + k, (prefix << k) | index}; }

    // 16 hex digits naming the bucket file: XXH3-64 of "bucket:<depth>:<prefix>".
    std::string name() const;
    // Path of the bucket file relative to the store root: "28/dd/1a21d3fdabf7.sq3".
    std::string relative_path() const;

    bool operator==(const BucketId&) const = default;
};

std::string hex64(uint64_t v);

}  // namespace aerials::store
