#include "store/splitter.h"

#include <xxhash.h>

#include "sqlite/database.h"
#include "store/bucket_builder.h"
#include "store/change_capture.h"
#include "store/txn_records.h"
#include "store/crash_point.h"
#include "store/key_hash.h"
#include "store/value_codec.h"

namespace aerials::store {
namespace {

// Children open at once during a split: 2^kMaxSplitWays connections (three file
// descriptors each in WAL mode).
constexpr int kMaxSplitWays = 6;

int choose_split_ways(const BucketId& parent, int64_t records, int64_t bytes, const StoreLimits& limits) {
    // Aim for children about half full, so they do not split again at once.
    int k = 1;
    while (k < kMaxSplitWays && parent.depth + k < kMaxDepth &&
           ((records >> k) > limits.max_records / 2 || (bytes >> k) > limits.max_bytes / 2)) {
        ++k;
    }
    return k;
}

// Copies every row of every collection in `source` (its live tables, or its
// frozen ones) into the 2^k children of `parent`.
std::vector<BucketMeta> build_children(Catalog& catalog, sqlite::Database& source, bool frozen,
                                       const BucketId& parent, int k, const BucketConnectionSettings& settings,
                                       std::vector<BucketId>& children) {
    size_t ways = size_t{1} << k;
    std::vector<Collection> collections = catalog.load_collections();
    // Children keep the parent's page size: the store chose it at creation.
    int page_size = static_cast<int>(source.query_int("PRAGMA page_size"));
    children.clear();
    std::vector<std::unique_ptr<BucketBuilder>> builders;
    std::vector<XXH3_state_t*> digests(ways, nullptr);
    struct DigestFree {
        std::vector<XXH3_state_t*>& states;
        ~DigestFree() {
            for (auto* s : states) XXH3_freeState(s);
        }
    } digest_free{digests};
    for (size_t i = 0; i < ways; ++i) {
        children.push_back(parent.child(k, i));
        builders.push_back(std::make_unique<BucketBuilder>(catalog.root(), children.back(), collections, page_size,
                                                                settings.cache_kib));
        digests[i] = XXH3_createState();
        if (!digests[i]) throw std::bad_alloc();
        XXH3_64bits_reset(digests[i]);
    }
    std::string row_bytes;
    auto digest_row = [&](size_t child, sqlite::Statement& rows, int columns) {
        row_bytes.clear();
        for (int c = 0; c < columns; ++c) append_value(rows.column_value(c), row_bytes);
        XXH3_64bits_update(digests[child], row_bytes.data(), row_bytes.size());
    };
    const Collection& kv = key_value_collection();
    sqlite::Statement rows = source.prepare("SELECT key, subkey, value FROM " +
                                            quote_identifier(frozen ? kv.frozen_table() : kv.table));
    while (rows.step()) {
        size_t i = parent.child_index(hash_key(rows.column_value(0)), k);
        builders[i]->insert(rows.column_value(0), rows.column_value(1), rows.column_value(2));
        digest_row(i, rows, 3);
    }
    rows.reset();
    for (size_t c = 0; c < collections.size(); ++c) {
        const Collection& collection = collections[c];
        std::string table = frozen ? collection.frozen_table() : collection.table;
        if (!source.table_exists(table)) continue;  // collection created after this bucket last changed
        std::string columns;
        for (const CollectionColumn& column : collection.columns) columns += quote_identifier(column.name) + ", ";
        sqlite::Statement rows =
            source.prepare("SELECT " + columns + "rowid FROM " + quote_identifier(table));
        int n = static_cast<int>(collection.columns.size());
        while (rows.step()) {
            size_t i = parent.child_index(hash_key(rows.column_value(collection.shard_column)), k);
            builders[i]->insert_row(c, rows);
            digest_row(i, rows, n + 1);
        }
        rows.reset();
    }
    // Transaction records follow their anchor (the hash that routes them),
    // log entries their element, so each child's log covers its own records.
    if (source.table_exists("aerials_txn")) {
        sqlite::Statement txns =
            source.prepare("SELECT txn_id, anchor, state, commit_ts, owner, created, participants FROM aerials_txn");
        while (txns.step()) {
            builders[parent.child_index(static_cast<Hash>(txns.column_int(1)), k)]->insert_txn_record(txns);
        }
    }
    if (source.table_exists("aerials_log")) {
        sqlite::Statement log =
            source.prepare("SELECT seq, ts, commit_id, change_type, element_id, data FROM aerials_log ORDER BY seq");
        while (log.step()) {
            sqlite3_value* element = log.column_value(4);
            std::string_view id(static_cast<const char*>(sqlite3_value_blob(element)),
                                static_cast<size_t>(sqlite3_value_bytes(element)));
            builders[parent.child_index(hash_encoded_key(decode_record_id(id).key), k)]->insert_log_entry(log);
        }
    }
    int64_t last_commit = 0;
    {
        sqlite::Statement meta = source.prepare("SELECT value FROM bucket_meta WHERE name = 'last_commit_id'");
        if (meta.step()) last_commit = meta.column_int(0);
    }
    for (auto& builder : builders) builder->set_meta("last_commit_id", last_commit);
    DurabilityBatch batch(settings.synchronous != "OFF");
    std::vector<BucketMeta> metas(ways);
    for (size_t i = 0; i < ways; ++i) {
        metas[i].records = builders[i]->records();
        metas[i].bytes = builders[i]->seal(batch);
        metas[i].checksum = hex64(XXH3_64bits_digest(digests[i]));
        metas[i].mtime = unix_ms_now();
    }
    batch.sync();
    return metas;
}

}  // namespace

SplitOutcome split_if_over_bounds(Catalog& catalog, BucketFile& parent, const BucketConnectionSettings& settings) {
    SplitOutcome outcome;
    const BucketId id = parent.id();
    if (id.depth + 1 > kMaxDepth) return outcome;
    sqlite::Database& db = parent.db();
    sqlite::Transaction lock(db, "BEGIN IMMEDIATE");
    if (!db.table_exists("bucket")) return outcome;  // already frozen by another process
    // Change records pin a bucket: their before-images name rows by rowid in
    // this file. The split is retried after a later commit.
    if (!read_change_records(db).empty()) return outcome;
    int64_t records = parent.records();
    int64_t bytes = parent.bytes_in_use();
    const StoreLimits& limits = catalog.limits();
    if ((records <= limits.max_records && bytes <= limits.max_bytes) || records < 2) return outcome;

    int k = choose_split_ways(id, records, bytes, limits);
    std::vector<BucketMeta> metas = build_children(catalog, db, false, id, k, settings, outcome.children);
    outcome.children_meta = metas;
    crash_point("split:children_built");

    sqlite::Statement mark = db.prepare("UPDATE bucket_meta SET value=?1 WHERE name='split_k'");
    mark.bind(1, int64_t{k});
    mark.run();
    // Every data table is renamed, so that every statement prepared against
    // any of them fails to re-prepare; `bucket` going is the marker.
    // This connection's capture triggers would follow the renamed tables.
    drop_capture(db, key_value_collection());
    for (const Collection& c : catalog.load_collections()) {
        drop_capture(db, c);
        if (db.table_exists(c.table)) {
            db.exec("ALTER TABLE " + quote_identifier(c.table) + " RENAME TO " + quote_identifier(c.frozen_table()));
        }
    }
    db.exec("ALTER TABLE bucket RENAME TO bucket_frozen");
    lock.commit();
    crash_point("split:frozen");

    outcome.split = catalog.replace_bucket(id, outcome.children, metas);
    crash_point("split:switched");
    return outcome;
}

bool finish_frozen_split(Catalog& catalog, const BucketId& parent, const BucketConnectionSettings& settings) {
    sqlite::Database& cat = catalog.db();
    sqlite::Transaction catalog_lock(cat, "BEGIN IMMEDIATE");
    if (!catalog.lists(parent)) return false;
    std::string path = (catalog.root() / parent.relative_path()).string();
    if (!std::filesystem::exists(path)) {
        throw sqlite::Error(SQLITE_CANTOPEN, "bucket file '" + path + "' is listed in the catalog but missing");
    }
    sqlite::Database frozen(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
    sqlite3_busy_timeout(frozen.get(), settings.busy_timeout_ms);
    if (!frozen.table_exists("bucket_frozen")) return false;
    int k = static_cast<int>(frozen.query_int("SELECT value FROM bucket_meta WHERE name='split_k'"));
    if (k < 1 || k > kMaxSplitWays) {
        throw sqlite::Error(SQLITE_CORRUPT, "frozen bucket '" + path + "' records an invalid split_k " + std::to_string(k));
    }
    std::vector<BucketId> children;
    // Holding the catalog's write lock with the parent still listed, no
    // process can be using any child: they become visible only at the switch.
    std::vector<BucketMeta> metas = build_children(catalog, frozen, true, parent, k, settings, children);
    catalog.replace_bucket_locked(parent, children, metas);
    catalog_lock.commit();
    frozen.close();
    BucketFile::remove_files(path);
    return true;
}

}  // namespace aerials::store
