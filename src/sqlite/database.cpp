#include "sqlite/database.h"

#include <utility>

namespace aerials::sqlite {

Database::Database(const std::string& path, int flags) : path_(path) {
    int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) {
        std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        sqlite3_close_v2(db_);
        db_ = nullptr;
        throw Error(rc, "cannot open '" + path + "': " + message);
    }
    sqlite3_extended_result_codes(db_, 1);
}

Database::~Database() { close(); }

Database::Database(Database&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), path_(std::move(other.path_)) {}

Database& Database::operator=(Database&& other) noexcept {
    if (this != &other) {
        close();
        db_ = std::exchange(other.db_, nullptr);
        path_ = std::move(other.path_);
    }
    return *this;
}

void Database::close() {
    if (db_) {
        // close_v2 defers the close until every statement is finalized, so an
        // ordering mistake elsewhere leaks a handle rather than crashing.
        sqlite3_close_v2(db_);
        db_ = nullptr;
    }
}

Error Database::error(int rc, std::string_view what) const {
    std::string message(what);
    message += " in '" + path_ + "': ";
    message += db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    return Error(db_ ? sqlite3_extended_errcode(db_) : rc, message);
}

void Database::exec(std::string_view sql) {
    std::string text(sql);
    char* err = nullptr;
    int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
        std::string message = err ? err : sqlite3_errstr(rc);
        sqlite3_free(err);
        throw Error(sqlite3_extended_errcode(db_),
                    "'" + text.substr(0, 60) + "' failed in '" + path_ + "': " + message);
    }
}

Statement Database::prepare(std::string_view sql) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) throw error(rc, "cannot prepare '" + std::string(sql.substr(0, 60)) + "'");
    return Statement(stmt, this);
}

int64_t Database::query_int(std::string_view sql) {
    Statement stmt = prepare(sql);
    int64_t value = stmt.step() ? stmt.column_int(0) : 0;
    stmt.reset();
    return value;
}

bool Database::table_exists(std::string_view name) {
    Statement stmt = prepare("SELECT 1 FROM sqlite_schema WHERE type='table' AND name=?1");
    stmt.bind(1, name);
    bool found = stmt.step();
    stmt.reset();
    return found;
}

Statement::~Statement() {
    if (stmt_) sqlite3_finalize(stmt_);
}

Statement::Statement(Statement&& other) noexcept
    : stmt_(std::exchange(other.stmt_, nullptr)), owner_(other.owner_) {}

Statement& Statement::operator=(Statement&& other) noexcept {
    if (this != &other) {
        if (stmt_) sqlite3_finalize(stmt_);
        stmt_ = std::exchange(other.stmt_, nullptr);
        owner_ = other.owner_;
    }
    return *this;
}

bool Statement::step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    Error failure = owner_->error(rc, "statement '" + std::string(sqlite3_sql(stmt_)).substr(0, 60) + "'");
    sqlite3_reset(stmt_);
    throw failure;
}

void Statement::reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
}

void Statement::check_bind(int rc, int i) {
    if (rc != SQLITE_OK) throw owner_->error(rc, "cannot bind parameter " + std::to_string(i));
}

void Statement::bind(int i, int64_t v) { check_bind(sqlite3_bind_int64(stmt_, i, v), i); }
void Statement::bind(int i, double v) { check_bind(sqlite3_bind_double(stmt_, i, v), i); }
void Statement::bind(int i, std::string_view text) {
    check_bind(sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT), i);
}
void Statement::bind_blob(int i, const void* data, int size) {
    check_bind(sqlite3_bind_blob(stmt_, i, data, size, SQLITE_TRANSIENT), i);
}
void Statement::bind_null(int i) { check_bind(sqlite3_bind_null(stmt_, i), i); }
void Statement::bind(int i, sqlite3_value* v) { check_bind(sqlite3_bind_value(stmt_, i, v), i); }

std::string Statement::column_text(int i) const {
    const unsigned char* text = sqlite3_column_text(stmt_, i);
    return text ? std::string(reinterpret_cast<const char*>(text), sqlite3_column_bytes(stmt_, i)) : std::string();
}

Transaction::Transaction(Database& db, std::string_view begin_sql) : db_(db) {
    db_.exec(begin_sql);
    open_ = true;
}

Transaction::~Transaction() {
    if (open_ && sqlite3_get_autocommit(db_.get()) == 0) {
        sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
}

void Transaction::commit() {
    db_.exec("COMMIT");
    open_ = false;
}

}  // namespace aerials::sqlite
