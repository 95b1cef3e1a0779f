#include "store/catalog.h"

#include <cstdint>

#include <algorithm>
#include <chrono>
#include <system_error>
#include <unistd.h>

#include "schema_sql.h"
#include "store/bucket_builder.h"

namespace aerials::store {
namespace fs = std::filesystem;

int64_t unix_ms_now() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

namespace {

fs::path checked_root(const StoreOptions& options) {
    if (options.root.empty()) throw std::invalid_argument("root is empty: give the store directory, e.g. root='data'");
    fs::path root = fs::absolute(options.root).lexically_normal();
    std::error_code ec;
    auto status = fs::status(root, ec);
    if (fs::exists(status)) {
        if (!fs::is_directory(status)) throw std::invalid_argument("root '" + options.root + "' is not a directory");
    } else {
        if (!options.create_if_missing) {
            throw std::invalid_argument("root '" + options.root + "' does not exist");
        }
        if (!fs::create_directory(root, ec) && ec) {
            throw std::invalid_argument("cannot create root '" + options.root + "': " + ec.message());
        }
    }
    if (::access(root.c_str(), W_OK | X_OK) != 0) {
        throw std::invalid_argument("root '" + options.root + "' is not writable");
    }
    return root;
}

}  // namespace

Catalog::Catalog(const StoreOptions& options)
    : root_(checked_root(options)), synchronous_(options.synchronous), busy_timeout_ms_(options.busy_timeout_ms) {
    fs::path catalog_path = root_ / "aerial.sq3";
    if (!fs::exists(catalog_path) && !options.create_if_missing) {
        throw std::invalid_argument("root '" + options.root + "' holds no store (no aerial.sq3)");
    }
    db_ = sqlite::Database(catalog_path.string(),
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX);
    sqlite3_busy_timeout(db_.get(), busy_timeout_ms_);
    int64_t version;
    try {
        db_.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=" + synchronous_ + "; PRAGMA foreign_keys=ON");
        version = db_.query_int("PRAGMA user_version");
    } catch (const sqlite::Error& e) {
        throw sqlite::Error(e.code(), "catalog '" + catalog_path.string() + "' is damaged: " + e.what());
    }
    if (version > schema::kCatalogVersion) {
        throw sqlite::Error(SQLITE_ERROR, "catalog '" + catalog_path.string() + "' has schema version " +
                                              std::to_string(version) + ", newer than this build understands (" +
                                              std::to_string(schema::kCatalogVersion) + "): upgrade aerials");
    }
    if (version == 0) create_store(options);
    if (version == 1) migrate(version);
    load_settings();
    if (options.limits_given &&
        (options.limits.max_records != limits_.max_records || options.limits.max_bytes != limits_.max_bytes)) {
        write_limits(options.limits);
        limits_ = options.limits;
    }
}

void Catalog::create_store(const StoreOptions& options) {
    if (options.initial_depth < 0 || options.initial_depth > 16) {
        throw std::invalid_argument("initial_buckets must be between 1 and 65536");
    }
    sqlite::Transaction txn(db_, "BEGIN IMMEDIATE");
    // Another process may have created the store while we waited for the lock.
    if (db_.query_int("PRAGMA user_version") != 0) return;
    db_.exec(schema::kCatalogSql);
    sqlite::Statement setting = db_.prepare("INSERT INTO settings(name, value) VALUES (?1, ?2)");
    setting.bind(1, std::string_view("hash"));
    setting.bind(2, std::string_view(kHashName));
    setting.run();
    setting.bind(1, std::string_view("created_at"));
    setting.bind(2, unix_ms_now());
    setting.run();
    limits_ = options.limits;
    write_limits(options.limits);
    DurabilityBatch batch(synchronous_ != "OFF");
    uint64_t count = uint64_t{1} << options.initial_depth;
    for (uint64_t prefix = 0; prefix < count; ++prefix) {
        BucketId id{options.initial_depth, prefix};
        // Leftovers of a creation that crashed before this commit are replaced.
        BucketBuilder builder(root_, id, {}, options.page_size);
        BucketMeta meta;
        meta.bytes = builder.seal(batch);
        meta.mtime = unix_ms_now();
        add_bucket_row(id, meta);
    }
    batch.sync();
    txn.commit();
}

void Catalog::migrate(int64_t from) {
    sqlite::Transaction txn(db_, "BEGIN IMMEDIATE");
    // Another process may have migrated while we waited for the lock.
    if (db_.query_int("PRAGMA user_version") == from && from == 1) db_.exec(schema::kCatalogMigrate2Sql);
    txn.commit();
}

std::vector<Collection> Catalog::load_collections() {
    std::vector<Collection> collections;
    sqlite::Statement stmt = db_.prepare("SELECT name, shard_key, definition FROM collections ORDER BY name");
    while (stmt.step()) {
        collections.push_back(collection_from_catalog(stmt.column_text(0), stmt.column_text(1), stmt.column_text(2)));
    }
    stmt.reset();
    return collections;
}

void Catalog::register_collection(const Collection& collection) {
    sqlite::Transaction txn(db_, "BEGIN IMMEDIATE");
    sqlite::Statement find = db_.prepare("SELECT shard_key, definition FROM collections WHERE name = ?1");
    find.bind(1, collection.name);
    if (find.step()) {
        std::string shard_key = find.column_text(0), definition = find.column_text(1);
        find.reset();
        if (shard_key != collection.shard_key() || definition != collection.definition) {
            throw std::invalid_argument("table " + collection.name + " already exists in the store at '" +
                                        root_.string() + "' with a different schema: shard_key=" + shard_key +
                                        ", " + definition);
        }
        return;
    }
    find.reset();
    sqlite::Statement add = db_.prepare(
        "INSERT INTO collections(name, shard_key, definition, created_at) VALUES (?1, ?2, ?3, ?4)");
    add.bind(1, collection.name);
    add.bind(2, collection.shard_key());
    add.bind(3, collection.definition);
    add.bind(4, unix_ms_now());
    add.run();
    txn.commit();
}

void Catalog::write_limits(const StoreLimits& limits) {
    if (limits.max_records < 1) throw std::invalid_argument("max_records must be at least 1");
    if (limits.max_bytes < 4096) throw std::invalid_argument("max_bytes must be at least 4096");
    sqlite::Statement setting = db_.prepare("INSERT OR REPLACE INTO settings(name, value) VALUES (?1, ?2)");
    setting.bind(1, std::string_view("max_records"));
    setting.bind(2, limits.max_records);
    setting.run();
    setting.bind(1, std::string_view("max_bytes"));
    setting.bind(2, limits.max_bytes);
    setting.run();
}

int64_t Catalog::claim_ids(const std::string& name, int64_t count) {
    if (count < 1) throw std::invalid_argument("an id block needs at least one id");
    const std::string setting = "next_id:" + name;
    sqlite::Transaction txn(db_, "BEGIN IMMEDIATE");
    sqlite::Statement read = db_.prepare("SELECT value FROM settings WHERE name = ?1");
    read.bind(1, std::string_view(setting));
    int64_t first = read.step() ? read.column_int(0) : 1;
    read.reset();
    if (first > INT64_MAX - count) throw std::overflow_error("id sequence '" + name + "' is exhausted");
    sqlite::Statement write = db_.prepare("INSERT OR REPLACE INTO settings(name, value) VALUES (?1, ?2)");
    write.bind(1, std::string_view(setting));
    write.bind(2, first + count);
    write.run();
    txn.commit();
    return first;
}

void Catalog::load_settings() {
    sqlite::Statement stmt = db_.prepare("SELECT name, value FROM settings");
    std::string hash;
    while (stmt.step()) {
        std::string name = stmt.column_text(0);
        if (name == "max_records") limits_.max_records = stmt.column_int(1);
        if (name == "max_bytes") limits_.max_bytes = stmt.column_int(1);
        if (name == "hash") hash = stmt.column_text(1);
    }
    stmt.reset();
    if (hash != kHashName) {
        throw std::runtime_error("catalog in '" + root_.string() + "' uses hash '" + hash + "', this build uses '" +
                                 kHashName + "'");
    }
}

std::vector<BucketId> Catalog::load_buckets() {
    std::vector<BucketId> buckets;
    sqlite::Statement stmt = db_.prepare("SELECT depth, prefix FROM buckets");
    while (stmt.step()) {
        buckets.push_back(BucketId{static_cast<int>(stmt.column_int(0)), static_cast<uint64_t>(stmt.column_int(1))});
    }
    stmt.reset();
    std::sort(buckets.begin(), buckets.end(), [](const BucketId& a, const BucketId& b) { return a.lo() < b.lo(); });
    return buckets;
}

bool Catalog::lists(const BucketId& id) {
    sqlite::Statement stmt = db_.prepare("SELECT 1 FROM buckets WHERE name=?1");
    stmt.bind(1, id.name());
    bool found = stmt.step();
    stmt.reset();
    return found;
}

BucketMeta Catalog::meta(const BucketId& id) {
    BucketMeta meta;
    sqlite::Statement stmt = db_.prepare(
        "SELECT records, bytes, checksum, last_commit_id, mtime, status FROM buckets_meta WHERE name=?1");
    stmt.bind(1, id.name());
    if (stmt.step()) {
        meta.records = stmt.column_int(0);
        meta.bytes = stmt.column_int(1);
        meta.checksum = stmt.column_text(2);
        meta.last_commit_id = stmt.column_int(3);
        meta.mtime = stmt.column_int(4);
        meta.status = stmt.column_text(5);
    }
    stmt.reset();
    return meta;
}

void Catalog::update_meta(const BucketId& id, const BucketMeta& meta) {
    sqlite::Statement stmt = db_.prepare(
        "INSERT OR REPLACE INTO buckets_meta(name, records, bytes, checksum, last_commit_id, mtime, status) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    stmt.bind(1, id.name());
    stmt.bind(2, meta.records);
    stmt.bind(3, meta.bytes);
    if (meta.checksum.empty()) stmt.bind_null(4); else stmt.bind(4, meta.checksum);
    stmt.bind(5, meta.last_commit_id);
    stmt.bind(6, meta.mtime);
    stmt.bind(7, meta.status);
    stmt.run();
}

bool Catalog::replace_bucket(const BucketId& parent, const std::vector<BucketId>& children,
                             const std::vector<BucketMeta>& children_meta) {
    sqlite::Transaction txn(db_, "BEGIN IMMEDIATE");
    if (!replace_bucket_locked(parent, children, children_meta)) return false;
    txn.commit();
    return true;
}

bool Catalog::replace_bucket_locked(const BucketId& parent, const std::vector<BucketId>& children,
                                    const std::vector<BucketMeta>& children_meta) {
    if (!lists(parent)) return false;
    sqlite::Statement drop = db_.prepare("DELETE FROM buckets WHERE name=?1");
    drop.bind(1, parent.name());
    drop.run();
    for (size_t i = 0; i < children.size(); ++i) add_bucket_row(children[i], children_meta[i]);
    return true;
}

void Catalog::add_bucket_row(const BucketId& id, const BucketMeta& meta) {
    sqlite::Statement add = db_.prepare(
        "INSERT INTO buckets(name, path, depth, prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)");
    add.bind(1, id.name());
    add.bind(2, id.relative_path());
    add.bind(3, int64_t{id.depth});
    add.bind(4, static_cast<int64_t>(id.prefix));
    add.bind(5, unix_ms_now());
    add.run();
    update_meta(id, meta);
}

}  // namespace aerials::store
