// Thin RAII owners of sqlite3 and sqlite3_stmt handles. Everything above this
// layer uses them; nothing above it calls sqlite3_close or sqlite3_finalize.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "sqlite/api.h"
#include "sqlite/error.h"

namespace aerials::sqlite {

class Statement;

class Database {
public:
    Database() = default;
    // Opens `path` with `flags` (SQLITE_OPEN_*). Throws Error naming the path.
    Database(const std::string& path, int flags);
    ~Database();
    Database(Database&& other) noexcept;
    Database& operator=(Database&& other) noexcept;
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;

    sqlite3* get() const { return db_; }
    const std::string& path() const { return path_; }
    bool is_open() const { return db_ != nullptr; }

    // Runs one or more statements that return no rows worth keeping.
    void exec(std::string_view sql);
    Statement prepare(std::string_view sql);
    // Runs a query expected to give one integer (PRAGMA user_version, count(*)).
    int64_t query_int(std::string_view sql);
    bool table_exists(std::string_view name);
    void close();

    // An Error for the last failure on this connection, with `what` and the path.
    Error error(int rc, std::string_view what) const;

private:
    sqlite3* db_ = nullptr;
    std::string path_;
};

class Statement {
public:
    Statement() = default;
    Statement(sqlite3_stmt* stmt, const Database* owner) : stmt_(stmt), owner_(owner) {}
    ~Statement();
    Statement(Statement&& other) noexcept;
    Statement& operator=(Statement&& other) noexcept;
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;

    sqlite3_stmt* get() const { return stmt_; }
    explicit operator bool() const { return stmt_ != nullptr; }

    // Returns true while a row is available, false when done; throws on error.
    // The statement is reset when it fails so that its read transaction ends.
    bool step();
    // Resets and clears bindings: a statement left un-reset holds a read
    // transaction open, which pins an old snapshot and blocks checkpoints.
    void reset();
    void run() { step(); reset(); }

    void bind(int i, int64_t v);
    void bind(int i, double v);
    void bind(int i, std::string_view text);
    void bind_blob(int i, const void* data, int size);
    void bind_null(int i);
    void bind(int i, sqlite3_value* v);

    int64_t column_int(int i) const { return sqlite3_column_int64(stmt_, i); }
    double column_double(int i) const { return sqlite3_column_double(stmt_, i); }
    std::string column_text(int i) const;
    sqlite3_value* column_value(int i) const { return sqlite3_column_value(stmt_, i); }
    int column_type(int i) const { return sqlite3_column_type(stmt_, i); }

private:
    void check_bind(int rc, int i);

    sqlite3_stmt* stmt_ = nullptr;
    const Database* owner_ = nullptr;
};

// Holds a transaction open and rolls it back unless commit() was called: the
// unwinding path of an exception never leaves a write lock behind.
class Transaction {
public:
    // `begin_sql` is e.g. "BEGIN IMMEDIATE".
    Transaction(Database& db, std::string_view begin_sql);
    ~Transaction();
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    void commit();

private:
    Database& db_;
    bool open_ = false;
};

}  // namespace aerials::sqlite
