// A collection: one logical table of a store, held as one real SQLite table in
// every bucket file. The key-value table is the built-in collection `bucket`
// (key, subkey, value) whose shard key is `key`; user collections are declared
// with columns and constraints and live in tables named "c_<name>".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace aerials::store {

struct CollectionColumn {
    std::string name;
    std::string type;       // declared type, may be empty
    std::string collation;  // "BINARY" unless declared otherwise
    std::string default_sql;  // the DEFAULT expression as declared, or empty
    // SQLite's type affinity of the declared type: 'i'nteger, 'r'eal,
    // 'n'umeric, 't'ext or 'b'lob (none).
    char affinity() const;
};

struct Collection {
    std::string name;                  // lower case; "" for the key-value collection
    std::string table;                 // table name inside bucket files
    std::vector<CollectionColumn> columns;
    int shard_column = 0;              // index into columns
    bool key_value = false;            // the built-in (key, subkey, value) collection
    std::string definition;            // the column and constraint definitions as declared
    std::string create_table_sql;      // CREATE TABLE for bucket files
    std::vector<std::string> create_index_sql;

    const std::string& shard_key() const { return columns[static_cast<size_t>(shard_column)].name; }
    char shard_affinity() const { return key_value ? 'b' : columns[static_cast<size_t>(shard_column)].affinity(); }
    // The table's name once a split froze its bucket.
    std::string frozen_table() const;
    // Whether bucket connections capture this collection's changes (before-
    // images for multi-bucket commits, the commit log). Not for the files
    // layer's collections: their writes are crash-safe by their own design
    // (reference counts too high, never too low; the collector removes
    // orphans), and logging a 4 MiB chunk would write it twice.
    bool captured() const { return name.rfind(kFilesPrefix, 0) != 0; }
    static constexpr const char* kFilesPrefix = "files_";
};

// The built-in key-value collection.
const Collection& key_value_collection();

// Builds a user collection from the module's column and constraint arguments
// (e.g. "order_id INTEGER", "PRIMARY KEY(a, b)", "INDEX(placed_at)"). SQLite
// itself validates the definitions, in a private in-memory database. Throws
// std::invalid_argument naming what is wrong.
Collection define_collection(const std::string& name, const std::vector<std::string>& definitions,
                             const std::string& shard_key);

// Splits SQL definitions at the commas outside quotes and parentheses, as
// written (parts keep their spaces). Throws std::invalid_argument naming the
// text when a quote or '(' is left open, a ')' has no '(', or a ';' stands
// outside quotes (no definition needs one; a statement could follow it).
std::vector<std::string> split_top_level(const std::string& text);

// Rebuilds a collection from what the catalog recorded.
Collection collection_from_catalog(const std::string& name, const std::string& shard_key,
                                   const std::string& definition);

// "name" with embedded quotes doubled.
std::string quote_identifier(const std::string& name);

// 'text' with embedded quotes doubled: an SQL string literal.
std::string quote_literal(const std::string& text);

}  // namespace aerials::store
