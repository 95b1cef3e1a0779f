// The node's own buckets, reached the way the extension reaches them: SQL on
// an in-process SQLite connection on which the aerials modules are registered
// (src/vtab), so that routing, pushdown, splits, transactions and the
// read-only authorizer of aerials_map are the core's own, not copies.
//
// Each request checks out a Session (one connection, used by one thread at a
// time); sessions are made on demand, so there are at most as many as worker
// threads.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sqlite/database.h"
#include "store/key_hash.h"
#include "store/owned_value.h"

namespace aerials::server {

// A request named a collection this node does not know: 404.
class UnknownCollection : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

struct ColumnInfo {
    std::vector<std::string> names;
    int shard_column = 0;
    char shard_affinity = 'b';
};

class Session {
public:
    Session(const std::string& root, int max_open);
    sqlite3* db() { return db_.get(); }
    sqlite::Database& database() { return db_; }

    // The temp table serving `collection` ("" is the key-value table), made on
    // first use from the catalog's definition. Throws UnknownCollection.
    const std::string& table_for(const std::string& collection);
    const ColumnInfo& columns_of(const std::string& collection);
    // table_for() every collection the catalog records.
    void load_all_collections();
    // Defines a collection (or checks it against the recorded one).
    void define(const std::string& name, const std::string& shard_key, const std::vector<std::string>& definitions);

    // The placement hash of `value` as the shard key of `collection`.
    store::Hash hash_of(const std::string& collection, const store::OwnedValue& value);

    // Runs `sql` with `params` and returns its result columns and rows as
    // wire values.
    nlohmann::json query(const std::string& sql, const std::vector<store::OwnedValue>& params);
    // Runs a write; returns sqlite3_changes().
    int64_t run(const std::string& sql, const std::vector<store::OwnedValue>& params);
    // Runs a plain INSERT or UPDATE as its OR IGNORE form would, but counts
    // the ignored row as 0 changes: SQLite counts every row a virtual table
    // was asked to write as changed, also one its OR IGNORE skipped. A
    // constraint failure of one row leaves nothing behind, so ignoring it
    // after the fact is what OR IGNORE does.
    int64_t run_or_ignore(const std::string& sql, const std::vector<store::OwnedValue>& params);

    const std::string& root() const { return root_; }

    // The slots SQL's aerials_in_slots(key) accepts: `mask[slot]` non-zero
    // for slots of a map with mask.size() slots. A node serving a replicated
    // cluster answers reads for its primary slots only, and a catch-up
    // copies given slots: both filter with it.
    void set_slot_filter(std::vector<char> mask) { slot_filter_ = std::move(mask); }

private:
    static void in_slots_function(sqlite3_context* ctx, int argc, sqlite3_value** argv);
    sqlite::Statement& cached(const std::string& sql);
    std::string module_args() const;

    std::string root_;
    int max_open_;
    sqlite::Database db_;
    std::map<std::string, std::string> tables_;  // collection -> quoted temp table name
    std::map<std::string, ColumnInfo> columns_;
    std::map<std::string, sqlite::Statement> statements_;
    std::vector<char> slot_filter_;
};

class LocalStore {
public:
    // Opens (creating if missing) the store at `root`.
    LocalStore(std::string root, int max_open);

    class Lease {
    public:
        Lease(LocalStore& owner, std::unique_ptr<Session> session) : owner_(owner), session_(std::move(session)) {}
        ~Lease();
        Lease(const Lease&) = delete;
        // Movable, so that a streamed answer can keep its session after the
        // handler returned (src/server/scan_stream.h).
        Lease(Lease&& other) noexcept : owner_(other.owner_), session_(std::move(other.session_)) {}
        Lease& operator=(Lease&&) = delete;
        Session* operator->() { return session_.get(); }
        Session& operator*() { return *session_; }
        // The session failed in a way that may have left state behind (an
        // open transaction): do not give it back to the pool.
        void discard() { session_.reset(); }

    private:
        LocalStore& owner_;
        std::unique_ptr<Session> session_;
    };
    Lease session();

    const std::string& root() const { return root_; }

    // The buckets as GET /v1/buckets lists them, with the slots each covers.
    nlohmann::json bucket_listing(uint32_t slots);

private:
    std::string root_;
    int max_open_;
    std::mutex mutex_;
    std::vector<std::unique_ptr<Session>> idle_;
};

// Splits module arguments at top-level commas and refuses any part that is
// an option (name=value): definitions from requests must never set root.
// Throws cluster::WireError.
void check_definitions(const std::vector<std::string>& definitions);

}  // namespace aerials::server
