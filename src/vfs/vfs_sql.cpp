#include "vfs/vfs_sql.h"

#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "sqlite/error.h"
#include "vfs/copy.h"
#include "vfs/inspect.h"
#include "vfs/sharding_vfs.h"
#include "vfs/vfs_error.h"

namespace aerials::vfs {
namespace {

int code_of(const std::exception& e) {
    if (auto* v = dynamic_cast<const VfsError*>(&e)) return v->code();
    if (auto* s = dynamic_cast<const sqlite::Error*>(&e)) return s->code();
    return SQLITE_ERROR;
}

std::string text_arg(sqlite3_value* v, const char* function, const char* what) {
    if (sqlite3_value_type(v) != SQLITE_TEXT) {
        throw VfsError(SQLITE_MISUSE, std::string(function) + " needs " + what + " as text");
    }
    return reinterpret_cast<const char*>(sqlite3_value_text(v));
}

// --- aerials_chunks(database) -------------------------------------------------

enum Column { kKind, kChunk, kPath, kBytes, kPages, kBadPages, kState, kDetail, kDatabase };

struct ChunksCursor : sqlite3_vtab_cursor {
    std::string database;
    Inspection inspection;
    size_t index = 0;
};

int chunks_connect(sqlite3* db, void*, int, const char* const*, sqlite3_vtab** out, char** err) {
    int rc = sqlite3_declare_vtab(
        db, "CREATE TABLE x(kind, chunk, path, bytes, pages, bad_pages, state, detail, database HIDDEN)");
    if (rc != SQLITE_OK) {
        *err = sqlite3_mprintf("aerials_chunks: %s", sqlite3_errmsg(db));
        return rc;
    }
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
    auto* vtab = static_cast<sqlite3_vtab*>(sqlite3_malloc(sizeof(sqlite3_vtab)));
    if (!vtab) return SQLITE_NOMEM;
    std::memset(vtab, 0, sizeof *vtab);
    *out = vtab;
    return SQLITE_OK;
}

int chunks_disconnect(sqlite3_vtab* vtab) {
    sqlite3_free(vtab);
    return SQLITE_OK;
}

// The hidden `database` column must be constrained with =; its value is
// argv[0] of xFilter. There is no other plan.
int chunks_best_index(sqlite3_vtab* vtab, sqlite3_index_info* info) {
    for (int i = 0; i < info->nConstraint; ++i) {
        const auto& c = info->aConstraint[i];
        if (c.iColumn == kDatabase && c.op == SQLITE_INDEX_CONSTRAINT_EQ) {
            if (!c.usable) return SQLITE_CONSTRAINT;
            info->aConstraintUsage[i].argvIndex = 1;
            info->aConstraintUsage[i].omit = 1;
            info->estimatedCost = 1e6;
            return SQLITE_OK;
        }
    }
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = sqlite3_mprintf("aerials_chunks needs the database path: SELECT * FROM aerials_chunks('big.db')");
    return SQLITE_ERROR;
}

int chunks_open(sqlite3_vtab*, sqlite3_vtab_cursor** out) {
    try {
        *out = new ChunksCursor();
        return SQLITE_OK;
    } catch (const std::bad_alloc&) {
        return SQLITE_NOMEM;
    }
}

int chunks_close(sqlite3_vtab_cursor* cursor) {
    delete static_cast<ChunksCursor*>(cursor);
    return SQLITE_OK;
}

int chunks_filter(sqlite3_vtab_cursor* base, int, const char*, int argc, sqlite3_value** argv) {
    auto* cursor = static_cast<ChunksCursor*>(base);
    try {
        if (argc < 1) throw VfsError(SQLITE_MISUSE, "aerials_chunks needs the database path");
        cursor->database = text_arg(argv[0], "aerials_chunks", "the database path");
        if (!inner_vfs()) throw VfsError(SQLITE_ERROR, "the aerials VFS is not registered");
        cursor->inspection = inspect_database(inner_vfs(), cursor->database, true);
        cursor->index = 0;
        return SQLITE_OK;
    } catch (const std::exception& e) {
        sqlite3_free(base->pVtab->zErrMsg);
        base->pVtab->zErrMsg = sqlite3_mprintf("aerials_chunks: %s", e.what());
        return code_of(e);
    }
}

int chunks_next(sqlite3_vtab_cursor* base) {
    ++static_cast<ChunksCursor*>(base)->index;
    return SQLITE_OK;
}

int chunks_eof(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<ChunksCursor*>(base);
    return cursor->index >= cursor->inspection.chunks.size();
}

void result_text(sqlite3_context* ctx, const std::string& text) {
    sqlite3_result_text(ctx, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
}

int chunks_column(sqlite3_vtab_cursor* base, sqlite3_context* ctx, int column) {
    auto* cursor = static_cast<ChunksCursor*>(base);
    const ChunkStatus& row = cursor->inspection.chunks[cursor->index];
    switch (column) {
        case kKind: result_text(ctx, kind_name(row.kind)); break;
        case kChunk: sqlite3_result_int64(ctx, static_cast<sqlite3_int64>(row.number)); break;
        case kPath: result_text(ctx, row.path); break;
        case kBytes:
            if (row.bytes >= 0) sqlite3_result_int64(ctx, row.bytes);
            break;
        case kPages:
            if (row.pages >= 0) sqlite3_result_int64(ctx, row.pages);
            break;
        case kBadPages:
            if (row.kind == FileKind::kDatabase && row.bytes >= 0) sqlite3_result_int64(ctx, row.bad_pages);
            break;
        case kState: result_text(ctx, row.state); break;
        case kDetail:
            if (!row.detail.empty()) result_text(ctx, row.detail);
            break;
        case kDatabase: result_text(ctx, cursor->database); break;
        default: break;
    }
    return SQLITE_OK;
}

int chunks_rowid(sqlite3_vtab_cursor* base, sqlite3_int64* rowid) {
    *rowid = static_cast<sqlite3_int64>(static_cast<ChunksCursor*>(base)->index);
    return SQLITE_OK;
}

sqlite3_module make_chunks_module() {
    sqlite3_module m{};
    m.iVersion = 1;
    m.xCreate = nullptr;  // eponymous only
    m.xConnect = chunks_connect;
    m.xBestIndex = chunks_best_index;
    m.xDisconnect = chunks_disconnect;
    m.xOpen = chunks_open;
    m.xClose = chunks_close;
    m.xFilter = chunks_filter;
    m.xNext = chunks_next;
    m.xEof = chunks_eof;
    m.xColumn = chunks_column;
    m.xRowid = chunks_rowid;
    return m;
}

const sqlite3_module kChunksModule = make_chunks_module();

// --- functions ------------------------------------------------------------------

// Runs `body` and reports any exception as the function's error.
template <class Body>
void run_function(sqlite3_context* ctx, const char* name, Body&& body) {
    try {
        body();
    } catch (const std::exception& e) {
        std::string message = std::string(name) + ": " + e.what();
        sqlite3_result_error(ctx, message.c_str(), -1);
        sqlite3_result_error_code(ctx, code_of(e));
    }
}

// aerials_vfs_verify(database): reads every chunk and page without opening
// the database through SQL; returns a JSON object, "ok" true when every
// chunk is present and every checksum matches.
void verify_function(sqlite3_context* ctx, int, sqlite3_value** argv) {
    run_function(ctx, "aerials_vfs_verify", [&] {
        std::string database = text_arg(argv[0], "aerials_vfs_verify", "the database path");
        if (!inner_vfs()) throw VfsError(SQLITE_ERROR, "the aerials VFS is not registered");
        Inspection in = inspect_database(inner_vfs(), database, true);
        nlohmann::json report = {
            {"database", database},
            {"ok", in.ok()},
            {"chunk_size", in.header.chunk_size},
            {"page_size", in.header.page_size},
            {"chunks", in.header.chunk_count},
            {"pages", in.pages},
            {"bad_pages", in.bad_pages},
            {"problems", in.problems},
        };
        result_text(ctx, report.dump());
    });
}

void import_function(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
    run_function(ctx, "aerials_vfs_import", [&] {
        std::string source = text_arg(argv[0], "aerials_vfs_import", "the source path");
        std::string target = text_arg(argv[1], "aerials_vfs_import", "the target path");
        std::optional<uint64_t> chunk_size;
        if (argc > 2 && sqlite3_value_type(argv[2]) != SQLITE_NULL) {
            const char* text = reinterpret_cast<const char*>(sqlite3_value_text(argv[2]));
            chunk_size = parse_chunk_size(text ? text : "");
        }
        sqlite3_result_int64(ctx, import_database(source, target, chunk_size));
    });
}

void export_function(sqlite3_context* ctx, int, sqlite3_value** argv) {
    run_function(ctx, "aerials_vfs_export", [&] {
        std::string source = text_arg(argv[0], "aerials_vfs_export", "the source path");
        std::string target = text_arg(argv[1], "aerials_vfs_export", "the target path");
        sqlite3_result_int64(ctx, export_database(source, target));
    });
}

}  // namespace

int register_sharding_vfs(sqlite3* db) {
    int rc = register_vfs();
    if (rc != SQLITE_OK) return rc;
    const int flags = SQLITE_UTF8 | SQLITE_DIRECTONLY;
    rc = sqlite3_create_module_v2(db, "aerials_chunks", &kChunksModule, nullptr, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_create_function_v2(db, "aerials_vfs_verify", 1, flags, nullptr, verify_function, nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_create_function_v2(db, "aerials_vfs_import", 2, flags, nullptr, import_function, nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_create_function_v2(db, "aerials_vfs_import", 3, flags, nullptr, import_function, nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_create_function_v2(db, "aerials_vfs_export", 2, flags, nullptr, export_function, nullptr, nullptr, nullptr);
    return rc;
}

}  // namespace aerials::vfs
