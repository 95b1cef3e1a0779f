#include "server/local_store.h"

#include <cctype>

#include "cluster/slots.h"
#include "cluster/wire_values.h"
#include "store/collection.h"
#include "vtab/buckets_view.h"
#include "vtab/connection_context.h"
#include "vtab/map_function.h"
#include "vtab/table_module.h"

namespace aerials::server {
namespace {

bool is_identifier(const std::string& s) {
    if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
    for (char c : s) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
    }
    return true;
}

std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// Rows of a stepped statement as wire values.
nlohmann::json rows_of(sqlite3_stmt* stmt, sqlite3* db) {
    nlohmann::json result;
    int n = sqlite3_column_count(stmt);
    nlohmann::json names = nlohmann::json::array();
    for (int i = 0; i < n; ++i) names.push_back(sqlite3_column_name(stmt, i));
    nlohmann::json rows = nlohmann::json::array();
    for (;;) {
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_DONE) break;
        if (rc != SQLITE_ROW) {
            int code = sqlite3_extended_errcode(db);
            std::string message = sqlite3_errmsg(db);
            sqlite3_reset(stmt);
            throw sqlite::Error(code, message);
        }
        nlohmann::json row = nlohmann::json::array();
        for (int i = 0; i < n; ++i) row.push_back(cluster::value_to_wire(sqlite3_column_value(stmt, i)));
        rows.push_back(std::move(row));
    }
    sqlite3_reset(stmt);
    result["columns"] = std::move(names);
    result["rows"] = std::move(rows);
    return result;
}

}  // namespace

void check_definitions(const std::vector<std::string>& definitions) {
    for (const std::string& definition : definitions) {
        std::vector<std::string> parts;
        try {
            parts = store::split_top_level(definition);
        } catch (const std::invalid_argument& e) {
            throw cluster::WireError(e.what());
        }
        for (const std::string& part : parts) {
            size_t eq = part.find('=');
            if (trim(part).empty()) throw cluster::WireError("definition '" + definition + "' has an empty part");
            if (eq != std::string::npos && is_identifier(trim(part.substr(0, eq)))) {
                throw cluster::WireError("definition '" + trim(part) +
                                         "' is an option (name=value); only column and constraint definitions are accepted");
            }
        }
    }
}

Session::Session(const std::string& root, int max_open)
    : root_(root), max_open_(max_open), db_(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX) {
    auto context = std::make_shared<vtab::ConnectionContext>();
    int rc = vtab::register_table_module(db_.get(), context);
    if (rc == SQLITE_OK) rc = vtab::register_buckets_view(db_.get(), context);
    if (rc == SQLITE_OK) rc = vtab::register_map_module(db_.get(), context);
    if (rc != SQLITE_OK) throw sqlite::Error(rc, std::string("registering the aerials modules: ") + sqlite3_errmsg(db_.get()));
    db_.exec("CREATE VIRTUAL TABLE temp.aerials_kv USING aerials(" + module_args() + ")");
    tables_[""] = "temp.aerials_kv";
    rc = sqlite3_create_function_v2(db_.get(), "aerials_in_slots", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, this,
                                    in_slots_function, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) throw sqlite::Error(rc, "registering aerials_in_slots");
}

void Session::in_slots_function(sqlite3_context* ctx, int, sqlite3_value** argv) {
    auto* self = static_cast<Session*>(sqlite3_user_data(ctx));
    const std::vector<char>& mask = self->slot_filter_;
    if (mask.empty() || sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        sqlite3_result_int(ctx, 0);
        return;
    }
    // The key-value table places a key by hash_key_as(key, 'b'), as hash_of("") does.
    uint32_t slot = cluster::slot_of(store::hash_key_as(argv[0], 'b'), static_cast<uint32_t>(mask.size()));
    sqlite3_result_int(ctx, mask[slot] ? 1 : 0);
}

std::string Session::module_args() const {
    return "root=" + store::quote_literal(root_) + ", max_open=" + std::to_string(max_open_);
}

sqlite::Statement& Session::cached(const std::string& sql) {
    auto it = statements_.find(sql);
    if (it == statements_.end()) {
        if (statements_.size() > 256) statements_.clear();
        it = statements_.emplace(sql, db_.prepare(sql)).first;
    }
    return it->second;
}

const std::string& Session::table_for(const std::string& collection) {
    auto found = tables_.find(collection);
    if (found != tables_.end()) return found->second;
    cluster::checked_name(collection, "collection");
    sqlite::Statement lookup = db_.prepare("SELECT shard_key, definition FROM aerials_collections(?1) WHERE name = lower(?2)");
    lookup.bind(1, std::string_view(root_));
    lookup.bind(2, std::string_view(collection));
    if (!lookup.step()) throw UnknownCollection("collection '" + collection + "' is not defined on this node");
    std::string shard_key = lookup.column_text(0);
    std::string definition = lookup.column_text(1);
    lookup.reset();
    std::string table = "temp." + store::quote_identifier(collection);
    db_.exec("CREATE VIRTUAL TABLE " + table + " USING aerials(" + module_args() + ", shard_key=" +
             store::quote_identifier(shard_key) + ", " + definition + ")");
    return tables_[collection] = table;
}

void Session::load_all_collections() {
    std::vector<std::string> names;
    {
        sqlite::Statement list = db_.prepare("SELECT name FROM aerials_collections(?1)");
        list.bind(1, std::string_view(root_));
        while (list.step()) names.push_back(list.column_text(0));
    }
    for (const std::string& name : names) {
        if (!tables_.count(name) && name.rfind(store::Collection::kFilesPrefix, 0) != 0) table_for(name);
    }
}

void Session::define(const std::string& name, const std::string& shard_key, const std::vector<std::string>& definitions) {
    cluster::checked_name(name, "collection");
    cluster::checked_name(shard_key, "shard_key");
    if (name.rfind("aerials_", 0) == 0) throw cluster::WireError("collection names starting with aerials_ are reserved");
    if (definitions.empty()) throw cluster::WireError("a collection needs at least one column definition");
    check_definitions(definitions);
    // Defined again (every client sends the definition when it connects):
    // the store checks it against the recorded one when the table is made
    // anew. Dropping the temp table drops its SQL face only, not the rows.
    if (auto had = tables_.find(name); had != tables_.end()) {
        statements_.clear();  // cached statements may name the table
        db_.exec("DROP TABLE " + had->second);
        tables_.erase(had);
        columns_.erase(name);
    }
    std::string sql = "CREATE VIRTUAL TABLE temp." + store::quote_identifier(name) + " USING aerials(" + module_args() +
                      ", shard_key=" + store::quote_identifier(shard_key);
    for (const std::string& d : definitions) sql += ", " + d;
    sql += ")";
    sqlite3_stmt* stmt = nullptr;
    const char* tail = nullptr;
    int rc = sqlite3_prepare_v2(db_.get(), sql.c_str(), -1, &stmt, &tail);
    if (rc != SQLITE_OK || (tail && !trim(tail).empty())) {
        std::string message = rc != SQLITE_OK ? sqlite3_errmsg(db_.get()) : "the definitions end the statement early";
        sqlite3_finalize(stmt);
        throw cluster::WireError("invalid definition of collection " + name + ": " + message);
    }
    rc = sqlite3_step(stmt);
    std::string message = sqlite3_errmsg(db_.get());
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) throw cluster::WireError(message);
    tables_[name] = "temp." + store::quote_identifier(name);
    columns_.erase(name);
}

const ColumnInfo& Session::columns_of(const std::string& collection) {
    auto found = columns_.find(collection);
    if (found != columns_.end()) return found->second;
    const std::string& table = table_for(collection);
    ColumnInfo info;
    std::string bare = table.substr(5);  // after "temp."
    sqlite::Statement pragma = db_.prepare("SELECT name, type FROM pragma_table_info(" + store::quote_literal(collection.empty() ? "aerials_kv" : collection) + ", 'temp')");
    while (pragma.step()) info.names.push_back(pragma.column_text(0));
    if (!collection.empty()) {
        sqlite::Statement lookup = db_.prepare("SELECT shard_key FROM aerials_collections(?1) WHERE name = lower(?2)");
        lookup.bind(1, std::string_view(root_));
        lookup.bind(2, std::string_view(collection));
        if (lookup.step()) {
            std::string key = lookup.column_text(0);
            for (size_t i = 0; i < info.names.size(); ++i) {
                if (sqlite3_stricmp(info.names[i].c_str(), key.c_str()) == 0) info.shard_column = static_cast<int>(i);
            }
        }
        sqlite::Statement type = db_.prepare("SELECT type FROM pragma_table_info(" + store::quote_literal(collection) + ", 'temp') WHERE cid = ?1");
        type.bind(1, static_cast<int64_t>(info.shard_column));
        std::string declared = type.step() ? type.column_text(0) : "";
        store::CollectionColumn column;
        column.type = declared;
        info.shard_affinity = column.affinity();
    }
    (void)bare;
    return columns_[collection] = info;
}

store::Hash Session::hash_of(const std::string& collection, const store::OwnedValue& value) {
    if (value.type == SQLITE_NULL) throw cluster::WireError("a shard key cannot be NULL");
    char affinity = collection.empty() ? 'b' : columns_of(collection).shard_affinity;
    sqlite::Statement& echo = cached("SELECT ?1");
    cluster::bind_value(echo.get(), 1, value);
    echo.step();
    store::Hash h = store::hash_key_as(echo.column_value(0), affinity);
    echo.reset();
    return h;
}

nlohmann::json Session::query(const std::string& sql, const std::vector<store::OwnedValue>& params) {
    sqlite::Statement& stmt = cached(sql);
    for (size_t i = 0; i < params.size(); ++i) cluster::bind_value(stmt.get(), static_cast<int>(i + 1), params[i]);
    nlohmann::json result = rows_of(stmt.get(), db_.get());
    sqlite3_clear_bindings(stmt.get());
    return result;
}

int64_t Session::run(const std::string& sql, const std::vector<store::OwnedValue>& params) {
    sqlite::Statement& stmt = cached(sql);
    for (size_t i = 0; i < params.size(); ++i) cluster::bind_value(stmt.get(), static_cast<int>(i + 1), params[i]);
    int rc = sqlite3_step(stmt.get());
    int code = sqlite3_extended_errcode(db_.get());
    std::string message = sqlite3_errmsg(db_.get());
    stmt.reset();
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) throw sqlite::Error(code, message);
    return sqlite3_changes64(db_.get());
}

int64_t Session::run_or_ignore(const std::string& sql, const std::vector<store::OwnedValue>& params) {
    try {
        return run(sql, params);
    } catch (const sqlite::Error& e) {
        if (e.primary_code() == SQLITE_CONSTRAINT) return 0;
        throw;
    }
}

LocalStore::LocalStore(std::string root, int max_open) : root_(std::move(root)), max_open_(max_open) {
    // The first session creates the store (CREATE VIRTUAL TABLE creates a
    // missing root) and stays in the pool.
    idle_.push_back(std::make_unique<Session>(root_, max_open_));
}

nlohmann::json LocalStore::bucket_listing(uint32_t slots) {
    Lease s = session();
    sqlite::Statement list =
        s->database().prepare("SELECT bucket, depth, lo, hi, records, bytes, status, checksum, last_commit_id, mtime, "
                              "error, collections, kv_records FROM aerials_buckets(?1)");
    list.bind(1, std::string_view(root_));
    nlohmann::json buckets = nlohmann::json::array();
    while (list.step()) {
        std::string lo = list.column_text(2), hi = list.column_text(3);
        buckets.push_back({{"bucket", list.column_text(0)},
                           {"depth", list.column_int(1)},
                           {"lo", lo},
                           {"hi", hi},
                           {"records", list.column_int(4)},
                           {"bytes", list.column_int(5)},
                           {"status", list.column_text(6)},
                           {"first_slot", cluster::slot_of(std::stoull(lo, nullptr, 16), slots)},
                           {"last_slot", cluster::slot_of(std::stoull(hi, nullptr, 16), slots)}});
        // What the bucket file says now, as the local view shows it; absent
        // where the view has NULL (a damaged file's counts).
        nlohmann::json& b = buckets.back();
        static const char* const more[] = {"checksum", "last_commit_id", "mtime", "error", "collections", "kv_records"};
        for (int i = 0; i < 6; ++i) {
            int column = 7 + i;
            switch (list.column_type(column)) {
                case SQLITE_INTEGER: b[more[i]] = list.column_int(column); break;
                case SQLITE_TEXT: b[more[i]] = list.column_text(column); break;
                default: break;
            }
        }
    }
    return {{"buckets", std::move(buckets)}};
}

LocalStore::Lease LocalStore::session() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!idle_.empty()) {
            std::unique_ptr<Session> s = std::move(idle_.back());
            idle_.pop_back();
            return Lease(*this, std::move(s));
        }
    }
    return Lease(*this, std::make_unique<Session>(root_, max_open_));
}

LocalStore::Lease::~Lease() {
    if (!session_) return;
    if (!sqlite3_get_autocommit(session_->db())) {
        sqlite3_exec(session_->db(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
    std::lock_guard<std::mutex> lock(owner_.mutex_);
    owner_.idle_.push_back(std::move(session_));
}

}  // namespace aerials::server
