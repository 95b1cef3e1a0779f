// Names shared by the client and the nodes for transactions across nodes
// (src/server/cluster_txn.h): the reserved blob prefix of intents and
// decision records, and where a transaction's decision lives.
#pragma once

#include <string>

#include "store/key_hash.h"

namespace aerials::cluster {

// Keys and subkeys starting with these bytes are reserved.
inline const std::string kReservedPrefix("\0aerials\0", 9);

// The key (a blob; its subkey is '') of the record holding the decision of
// transaction `txn` (16 hex digits).
inline std::string txn_record_key_bytes(const std::string& txn) { return kReservedPrefix + "t" + txn; }

// The hash that routes that record: its home is the primary of its slot.
inline store::Hash txn_home_hash(const std::string& txn) {
    return store::hash_encoded_key("b" + txn_record_key_bytes(txn));  // a blob key's canonical encoding
}

}  // namespace aerials::cluster
