// What the table-valued functions that describe a store (aerials_buckets,
// aerials_collections) have in common: a hidden `root` argument, text results,
// JSON columns, and the collections as the catalog lists them right now.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "sqlite/api.h"
#include "store/store.h"

namespace aerials::vtab {

// xBestIndex of a view whose hidden column `root_column` must be given with =
// (it becomes argv[0] of xFilter). `function` names the view in the error.
inline int best_index_on_root(sqlite3_vtab* vtab, sqlite3_index_info* info, int root_column, const char* function) {
    for (int i = 0; i < info->nConstraint; ++i) {
        const auto& c = info->aConstraint[i];
        if (c.iColumn == root_column && c.op == SQLITE_INDEX_CONSTRAINT_EQ) {
            if (!c.usable) return SQLITE_CONSTRAINT;
            info->aConstraintUsage[i].argvIndex = 1;
            info->aConstraintUsage[i].omit = 1;
            info->estimatedCost = 1000;
            return SQLITE_OK;
        }
    }
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = sqlite3_mprintf("%s needs the store root: SELECT * FROM %s('data')", function, function);
    return SQLITE_ERROR;
}

// The root argument of xFilter, or an error naming `function`.
inline std::string root_argument(int argc, sqlite3_value** argv, const char* function) {
    if (argc < 1 || sqlite3_value_type(argv[0]) != SQLITE_TEXT) {
        throw std::invalid_argument(std::string(function) + " needs the store root as text");
    }
    return reinterpret_cast<const char*>(sqlite3_value_text(argv[0]));
}

inline void set_view_error(sqlite3_vtab* vtab, const char* function, const char* message) {
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = sqlite3_mprintf("%s: %s", function, message);
}

// Empty text is NULL: every text column of these views is either meaningful
// or absent.
inline void result_text(sqlite3_context* ctx, const std::string& text) {
    if (text.empty()) {
        sqlite3_result_null(ctx);
    } else {
        sqlite3_result_text(ctx, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    }
}

// `text` as a JSON string literal (RFC 8259 escapes; bytes >= 0x80 pass
// through, so UTF-8 stays UTF-8).
inline std::string json_quote(std::string_view text) {
    std::string out = "\"";
    for (char ch : text) {
        auto c = static_cast<unsigned char>(ch);
        switch (ch) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out.push_back(ch);
                }
        }
    }
    return out + "\"";
}

// The sqlite3_module of an eponymous-only view: without xCreate it exists in
// every schema under its module name, and CREATE VIRTUAL TABLE cannot make
// another. View and Cursor are its sqlite3_vtab and sqlite3_vtab_cursor
// types; a Cursor counts its rows in `index`.
template <class View, class Cursor>
struct EponymousView {
    static int disconnect(sqlite3_vtab* vtab) {
        delete static_cast<View*>(vtab);
        return SQLITE_OK;
    }
    static int open(sqlite3_vtab*, sqlite3_vtab_cursor** out) {
        *out = new Cursor();
        return SQLITE_OK;
    }
    static int close(sqlite3_vtab_cursor* cursor) {
        delete static_cast<Cursor*>(cursor);
        return SQLITE_OK;
    }
    static int rowid(sqlite3_vtab_cursor* cursor, sqlite3_int64* rowid) {
        *rowid = static_cast<sqlite3_int64>(static_cast<Cursor*>(cursor)->index);
        return SQLITE_OK;
    }
    static sqlite3_module module(decltype(sqlite3_module::xConnect) connect,
                                 decltype(sqlite3_module::xBestIndex) best_index,
                                 decltype(sqlite3_module::xFilter) filter, decltype(sqlite3_module::xNext) next,
                                 decltype(sqlite3_module::xEof) eof, decltype(sqlite3_module::xColumn) column) {
        sqlite3_module m{};
        m.iVersion = 1;
        m.xConnect = connect;
        m.xBestIndex = best_index;
        m.xDisconnect = disconnect;
        m.xOpen = open;
        m.xClose = close;
        m.xFilter = filter;
        m.xNext = next;
        m.xEof = eof;
        m.xColumn = column;
        m.xRowid = rowid;
        return m;
    }
};

// A collection as the catalog records it.
struct CatalogCollection {
    std::string name;
    std::string shard_key;
    std::string definition;
    int64_t created_at = 0;
    std::string table() const { return "c_" + name; }
};

// The catalog's collections ordered by name, read now: a store kept open
// since then may not know a collection another connection has created.
inline std::vector<CatalogCollection> catalog_collections(store::Store& store) {
    std::vector<CatalogCollection> out;
    sqlite::Statement stmt =
        store.catalog().db().prepare("SELECT name, shard_key, definition, created_at FROM collections ORDER BY name");
    while (stmt.step()) {
        out.push_back({stmt.column_text(0), stmt.column_text(1), stmt.column_text(2), stmt.column_int(3)});
    }
    stmt.reset();
    return out;
}

}  // namespace aerials::vtab
