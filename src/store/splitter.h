// Splitting a bucket that passed its bounds into 2^k children.
//
// The protocol (crash-safe at every step; see docs/decisions/0002-split-protocol.md):
//  1. Hold the parent's write lock (BEGIN IMMEDIATE). That excludes writers and
//     any other splitter of the same bucket.
//  2. Build every child file from the parent's rows, each committed durably.
//     Leftover child files of an earlier crashed attempt are removed first.
//  3. Freeze the parent: record split_k and rename its `bucket` table to
//     `bucket_frozen`, in the same transaction, and commit. From now on every
//     statement any process prepared against the parent fails to re-prepare,
//     which is how stale processes learn that they must reload the catalog.
//  4. In one catalog transaction, replace the parent by its children: the
//     switch-over point.
//  5. Remove the parent's files.
// A crash before 3 leaves the parent live and unchanged (children are
// unreferenced leftovers). A crash between 3 and 4 leaves a frozen parent that
// the catalog still lists: whoever meets it finishes the split (rebuilding the
// children from the frozen rows, under the catalog's write lock). A crash after
// 4 leaves only a file that nothing references.
#pragma once

#include <filesystem>
#include <vector>

#include "store/bucket_file.h"
#include "store/catalog.h"

namespace aerials::store {

struct SplitOutcome {
    bool split = false;           // this call switched the catalog over
    std::vector<BucketId> children;
    std::vector<BucketMeta> children_meta;  // as built: records and bytes of each child
};

// Splits the bucket if it is still over the store's bounds. `parent` must not
// hold a transaction. The caller closes the parent afterwards and, if
// `split`, removes its files.
SplitOutcome split_if_over_bounds(Catalog& catalog, BucketFile& parent, const BucketConnectionSettings& settings);

// Finishes the split of a bucket that was frozen but is still listed (its
// splitter died between steps 3 and 4). Returns true if this call did it.
bool finish_frozen_split(Catalog& catalog, const BucketId& parent, const BucketConnectionSettings& settings);

}  // namespace aerials::store
