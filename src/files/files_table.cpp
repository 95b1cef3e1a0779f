// The aerials_files table: object versions as rows, and small objects in and
// out as blobs; and the aerials_transfers table (transfers in progress).
//
// Rows are read from every bucket file (manifests are placed by object), with
// the constraints on bucket and key pushed into each bucket file's query; an
// equality on both reads one bucket file. Writes commit at once, each one an
// S3-style request: INSERT puts an object, DELETE removes it (a delete marker
// where versioning is on), UPDATE may change only tags.
#include <cstring>

#include "files/clock.h"
#include "files/files_context.h"
#include "files/files_sql.h"
#include "files/names.h"
#include "files/progress.h"
#include "vtab/module_args.h"

namespace aerials::files {
namespace {

enum Col {
    kBucket, kKey, kVersionId, kIsLatest, kDeleteMarker, kSize, kContentType, kSha256, kEtag, kCreated,
    kMetadata, kTags, kChunks, kContent, kId
};

constexpr const char* kSchema =
    "CREATE TABLE x(bucket TEXT, key TEXT, version_id TEXT, is_latest INTEGER, delete_marker INTEGER, size INTEGER, "
    "content_type TEXT, sha256 TEXT, etag TEXT, created TEXT, metadata TEXT, tags TEXT, chunks INTEGER, content BLOB, "
    "id HIDDEN PRIMARY KEY) WITHOUT ROWID";

struct FilesTable : sqlite3_vtab {
    std::shared_ptr<FilesContext> context;
    ObjectStore* store = nullptr;
    bool all_versions = false;
};

struct FilesCursor : sqlite3_vtab_cursor {
    std::vector<ObjectVersion> rows;
    size_t at = 0;
};

void set_error(sqlite3_vtab* vtab, const std::string& message) {
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = sqlite3_mprintf("%s", message.c_str());
}

// "bucket\x1fkey\x1fversion": the row's identity for DELETE and UPDATE.
std::string row_id(const ObjectVersion& v) { return v.bucket + '\x1f' + v.key + '\x1f' + v.version_id; }

int connect_common(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out, char** err, bool create) {
    try {
        std::vector<std::string> args;
        int64_t chunk_size = 0;
        bool versions = false;
        bool page_size_given = false, max_bytes_given = false;
        for (int i = 3; i < argc; ++i) {
            std::string arg = argv[i];
            size_t eq = arg.find('=');
            std::string name = arg.substr(0, eq);
            while (!name.empty() && name.back() == ' ') name.pop_back();
            while (!name.empty() && name.front() == ' ') name.erase(0, 1);
            std::string value = eq == std::string::npos ? "" : vtab::unquote(arg.substr(eq + 1));
            while (!value.empty() && value.front() == ' ') value.erase(0, 1);
            while (!value.empty() && value.back() == ' ') value.pop_back();
            if (name == "chunk_size") {
                char* end = nullptr;
                long long n = std::strtoll(value.c_str(), &end, 10);
                std::string unit = end ? end : "";
                if (unit == "K" || unit == "k") n <<= 10;
                else if (unit == "M" || unit == "m") n <<= 20;
                else if (!unit.empty()) throw InvalidName("chunk_size '" + value + "' is not a byte count (e.g. 4194304 or 4M)");
                chunk_size = n;
            } else if (name == "versions") {
                versions = value == "1" || value == "true" || value == "yes";
                if (!versions && value != "0" && value != "false" && value != "no") {
                    throw InvalidName("versions must be 1 or 0, not '" + value + "'");
                }
            } else {
                if (name == "page_size") page_size_given = true;
                if (name == "max_bytes") max_bytes_given = true;
                args.push_back(arg);
            }
        }
        vtab::ModuleArgs parsed = vtab::parse_module_args(args);
        if (!parsed.definitions.empty() || !parsed.shard_key.empty()) {
            throw InvalidName("aerials_files takes no column definitions or shard_key (unknown argument '" +
                              (parsed.definitions.empty() ? parsed.shard_key : parsed.definitions[0]) + "')");
        }
        parsed.store.create_if_missing = true;
        if (!page_size_given) parsed.store.page_size = ObjectStore::kPageSize;
        parsed.store.cache_kib = ObjectStore::kCacheKib;
        // Only a store created here takes these: an existing one keeps its own.
        if (!max_bytes_given) parsed.store.limits.max_bytes = ObjectStore::kBucketMaxBytes;
        auto context = *static_cast<std::shared_ptr<FilesContext>*>(aux);
        ObjectStore& store = context->open(parsed.store);
        if (chunk_size) store.set_chunk_size(chunk_size);
        int rc = sqlite3_declare_vtab(db, kSchema);
        if (rc != SQLITE_OK) throw std::runtime_error(sqlite3_errmsg(db));
        sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
        auto* table = new FilesTable();
        table->context = context;
        table->store = &store;
        table->all_versions = versions;
        *out = table;
        return SQLITE_OK;
    } catch (const std::exception& e) {
        *err = sqlite3_mprintf("aerials_files: %s", e.what());
        return files_error_code(e);
    }
}

int x_create(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out, char** err) {
    return connect_common(db, aux, argc, argv, out, err, true);
}
int x_connect(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out, char** err) {
    return connect_common(db, aux, argc, argv, out, err, false);
}

int x_disconnect(sqlite3_vtab* vtab) {
    delete static_cast<FilesTable*>(vtab);
    return SQLITE_OK;
}

// idxStr lists, per argv value, its column and operator ("b=", "k>", ...),
// turned into SQL for each bucket file at filter time.
int x_best_index(sqlite3_vtab*, sqlite3_index_info* info) {
    std::string plan;
    int argv_index = 0;
    bool bucket_eq = false, key_eq = false;
    for (int i = 0; i < info->nConstraint; ++i) {
        const auto& c = info->aConstraint[i];
        if (!c.usable || (c.iColumn != kBucket && c.iColumn != kKey && c.iColumn != kVersionId)) continue;
        const char* op = nullptr;
        switch (c.op) {
            case SQLITE_INDEX_CONSTRAINT_EQ: op = "="; break;
            case SQLITE_INDEX_CONSTRAINT_GT: op = ">"; break;
            case SQLITE_INDEX_CONSTRAINT_GE: op = "}"; break;
            case SQLITE_INDEX_CONSTRAINT_LT: op = "<"; break;
            case SQLITE_INDEX_CONSTRAINT_LE: op = "{"; break;
            case SQLITE_INDEX_CONSTRAINT_LIKE: op = "~"; break;
            case SQLITE_INDEX_CONSTRAINT_GLOB: op = "*"; break;
            default: break;
        }
        if (!op) continue;
        if (c.op == SQLITE_INDEX_CONSTRAINT_EQ && c.iColumn == kBucket) bucket_eq = true;
        if (c.op == SQLITE_INDEX_CONSTRAINT_EQ && c.iColumn == kKey) key_eq = true;
        info->aConstraintUsage[i].argvIndex = ++argv_index;
        plan += (c.iColumn == kBucket ? 'b' : c.iColumn == kKey ? 'k' : 'v');
        plan += op;
    }
    info->idxStr = sqlite3_mprintf("%s", plan.c_str());
    info->needToFreeIdxStr = 1;
    info->estimatedCost = bucket_eq && key_eq ? 10 : bucket_eq ? 1e5 : 1e6;
    info->estimatedRows = bucket_eq && key_eq ? 1 : 1000;
    return SQLITE_OK;
}

int x_open(sqlite3_vtab*, sqlite3_vtab_cursor** out) {
    *out = new FilesCursor();
    return SQLITE_OK;
}

int x_close(sqlite3_vtab_cursor* cursor) {
    delete static_cast<FilesCursor*>(cursor);
    return SQLITE_OK;
}

int x_filter(sqlite3_vtab_cursor* base, int, const char* idx_str, int argc, sqlite3_value** argv) {
    auto* cursor = static_cast<FilesCursor*>(base);
    auto* table = static_cast<FilesTable*>(base->pVtab);
    try {
        cursor->rows.clear();
        cursor->at = 0;
        ListFilter filter;
        filter.all_versions = table->all_versions;
        std::string plan = idx_str ? idx_str : "";
        std::optional<std::string> bucket_eq, key_eq;
        for (int i = 0; i < argc; ++i) {
            char column = plan[2 * static_cast<size_t>(i)], op = plan[2 * static_cast<size_t>(i) + 1];
            if (sqlite3_value_type(argv[i]) == SQLITE_NULL) return SQLITE_OK;  // no row compares with NULL
            const char* name = column == 'b' ? "bucket" : column == 'k' ? "key" : "version_id";
            std::string sql_op = op == '=' ? "=" : op == '>' ? ">" : op == '}' ? ">=" : op == '<' ? "<"
                               : op == '{' ? "<=" : op == '~' ? "LIKE" : "GLOB";
            std::string value(reinterpret_cast<const char*>(sqlite3_value_text(argv[i])),
                              static_cast<size_t>(sqlite3_value_bytes(argv[i])));
            if (op == '=' && column == 'b') bucket_eq = value;
            if (op == '=' && column == 'k') key_eq = value;
            filter.values.push_back(value);
            filter.where += (filter.where.empty() ? "" : " AND ") + std::string(name) + " " + sql_op + " ?" +
                            std::to_string(filter.values.size());
        }
        if (bucket_eq && key_eq) {
            // One object: only its bucket file.
            try {
                check_bucket_name(*bucket_eq);
                check_key(*key_eq);
            } catch (const InvalidName&) {
                return SQLITE_OK;  // no such object can exist
            }
            for (ObjectVersion& v : table->store->versions_of(*bucket_eq, *key_eq)) {
                if (!table->all_versions && (!v.is_latest || v.delete_marker)) continue;
                cursor->rows.push_back(std::move(v));
            }
        } else {
            cursor->rows = table->store->list(filter);
        }
        return SQLITE_OK;
    } catch (const std::exception& e) {
        set_error(base->pVtab, e.what());
        return files_error_code(e);
    }
}

int x_next(sqlite3_vtab_cursor* base) {
    ++static_cast<FilesCursor*>(base)->at;
    return SQLITE_OK;
}

int x_eof(sqlite3_vtab_cursor* base) {
    auto* c = static_cast<FilesCursor*>(base);
    return c->at >= c->rows.size();
}

void result_string(sqlite3_context* ctx, const std::string& s, bool null_if_empty = true) {
    if (s.empty() && null_if_empty) {
        sqlite3_result_null(ctx);
    } else {
        sqlite3_result_text(ctx, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    }
}

int x_column(sqlite3_vtab_cursor* base, sqlite3_context* ctx, int column) {
    auto* cursor = static_cast<FilesCursor*>(base);
    auto* table = static_cast<FilesTable*>(base->pVtab);
    const ObjectVersion& v = cursor->rows[cursor->at];
    try {
        switch (column) {
            case kBucket: result_string(ctx, v.bucket); break;
            case kKey: result_string(ctx, v.key); break;
            case kVersionId: result_string(ctx, v.version_id); break;
            case kIsLatest: sqlite3_result_int(ctx, v.is_latest); break;
            case kDeleteMarker: sqlite3_result_int(ctx, v.delete_marker); break;
            case kSize: sqlite3_result_int64(ctx, v.size); break;
            case kContentType: result_string(ctx, v.content_type); break;
            case kSha256: result_string(ctx, v.sha256); break;
            case kEtag: result_string(ctx, v.etag); break;
            case kCreated: result_string(ctx, iso_time(v.created)); break;
            case kMetadata: result_string(ctx, v.metadata); break;
            case kTags: result_string(ctx, v.tags); break;
            case kChunks: sqlite3_result_int64(ctx, v.chunk_count); break;
            case kContent: {
                // An UPDATE that leaves content alone must not read the object.
                if (sqlite3_vtab_nochange(ctx) || v.delete_marker) break;
                if (v.size > 1000000000) {
                    throw InvalidName("object '" + v.bucket + "/" + v.key + "' is " + std::to_string(v.size) +
                                      " bytes, too large for a blob: use aerials_get or aerials_read");
                }
                ObjectVersion full = table->store->head(v.bucket, v.key, v.version_id);
                std::string bytes = table->store->read_range(full, 0, full.size);
                sqlite3_result_blob64(ctx, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
                break;
            }
            case kId: result_string(ctx, row_id(v)); break;
        }
        return SQLITE_OK;
    } catch (const std::exception& e) {
        sqlite3_result_error(ctx, e.what(), -1);
        return files_error_code(e);
    }
}

int x_rowid(sqlite3_vtab_cursor*, sqlite3_int64*) { return SQLITE_ERROR; }

std::optional<std::string> text_of(sqlite3_value* v) {
    if (sqlite3_value_type(v) == SQLITE_NULL) return std::nullopt;
    return std::string(reinterpret_cast<const char*>(sqlite3_value_text(v)), static_cast<size_t>(sqlite3_value_bytes(v)));
}

int x_update(sqlite3_vtab* vtab, int argc, sqlite3_value** argv, sqlite3_int64*) {
    auto* table = static_cast<FilesTable*>(vtab);
    ObjectStore& store = *table->store;
    try {
        auto parse_id = [](sqlite3_value* v) {
            std::string id = text_of(v).value_or("");
            size_t a = id.find('\x1f'), b = id.rfind('\x1f');
            if (a == std::string::npos || a == b) throw InvalidName("malformed row id");
            return std::tuple{id.substr(0, a), id.substr(a + 1, b - a - 1), id.substr(b + 1)};
        };
        if (argc == 1) {
            auto [bucket, key, version] = parse_id(argv[0]);
            if (table->all_versions) {
                store.remove(bucket, key, version);
            } else {
                store.remove(bucket, key);
            }
            return SQLITE_OK;
        }
        sqlite3_value** col = argv + 2;
        if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
            for (int c : {kVersionId, kIsLatest, kDeleteMarker, kSize, kSha256, kEtag, kCreated, kChunks}) {
                if (sqlite3_value_type(col[c]) != SQLITE_NULL) {
                    throw InvalidName("INSERT INTO an aerials_files table sets only bucket, key, content, content_type, "
                                      "metadata and tags; the others are computed");
                }
            }
            std::optional<std::string> bucket = text_of(col[kBucket]), key = text_of(col[kKey]);
            if (!bucket || !key) throw InvalidName("INSERT INTO an aerials_files table needs bucket and key");
            if (sqlite3_value_type(col[kContent]) == SQLITE_NULL) throw InvalidName("INSERT needs content (a blob or text)");
            std::string_view data(static_cast<const char*>(sqlite3_value_blob(col[kContent])),
                                  static_cast<size_t>(sqlite3_value_bytes(col[kContent])));
            PutOptions options;
            options.content_type = text_of(col[kContentType]).value_or("");
            options.metadata = text_of(col[kMetadata]).value_or("{}");
            options.tags = text_of(col[kTags]).value_or("{}");
            MemorySource source(data);
            store.put(*bucket, *key, source, options);
            return SQLITE_OK;
        }
        auto [bucket, key, version] = parse_id(argv[0]);
        if (sqlite3_value_type(argv[1]) != SQLITE_NULL && text_of(argv[1]) != text_of(argv[0])) {
            throw InvalidName("the id of an aerials_files row cannot be changed");
        }
        for (int c : {kBucket, kKey, kVersionId}) {
            if (text_of(col[c]) != (c == kBucket ? std::optional(bucket) : c == kKey ? std::optional(key) : std::optional(version))) {
                throw InvalidName("UPDATE of an aerials_files table may change only tags (S3 objects are immutable)");
            }
        }
        ObjectVersion old = store.head(bucket, key, version);
        if (!sqlite3_value_nochange(col[kContent]) || text_of(col[kContentType]).value_or("") != old.content_type ||
            text_of(col[kMetadata]).value_or("") != old.metadata || text_of(col[kEtag]).value_or("") != old.etag ||
            sqlite3_value_int64(col[kSize]) != old.size) {
            throw InvalidName("UPDATE of an aerials_files table may change only tags (S3 objects are immutable)");
        }
        store.set_tags(bucket, key, version, text_of(col[kTags]).value_or("{}"));
        return SQLITE_OK;
    } catch (const std::exception& e) {
        set_error(vtab, e.what());
        return files_error_code(e);
    }
}

sqlite3_module files_module() {
    sqlite3_module m{};
    m.iVersion = 2;
    m.xCreate = x_create;
    m.xConnect = x_connect;
    m.xBestIndex = x_best_index;
    m.xDisconnect = x_disconnect;
    m.xDestroy = x_disconnect;
    m.xOpen = x_open;
    m.xClose = x_close;
    m.xFilter = x_filter;
    m.xNext = x_next;
    m.xEof = x_eof;
    m.xColumn = x_column;
    m.xRowid = x_rowid;
    m.xUpdate = x_update;
    return m;
}

const sqlite3_module kFilesModule = files_module();

// --- aerials_transfers ---

struct TransfersCursor : sqlite3_vtab_cursor {
    std::vector<TransferInfo> rows;
    size_t at = 0;
};

int t_connect(sqlite3* db, void*, int, const char* const*, sqlite3_vtab** out, char** err) {
    int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(id INTEGER, root TEXT, direction TEXT, bucket TEXT, key TEXT, "
                                      "done INTEGER, total INTEGER, started TEXT)");
    if (rc != SQLITE_OK) return rc;
    auto* vtab = new sqlite3_vtab();
    *out = vtab;
    return SQLITE_OK;
}
int t_disconnect(sqlite3_vtab* vtab) {
    delete vtab;
    return SQLITE_OK;
}
int t_best_index(sqlite3_vtab*, sqlite3_index_info* info) {
    info->estimatedCost = 10;
    return SQLITE_OK;
}
int t_open(sqlite3_vtab*, sqlite3_vtab_cursor** out) {
    *out = new TransfersCursor();
    return SQLITE_OK;
}
int t_close(sqlite3_vtab_cursor* c) {
    delete static_cast<TransfersCursor*>(c);
    return SQLITE_OK;
}
int t_filter(sqlite3_vtab_cursor* base, int, const char*, int, sqlite3_value**) {
    auto* c = static_cast<TransfersCursor*>(base);
    c->rows = transfers_in_progress();
    c->at = 0;
    return SQLITE_OK;
}
int t_next(sqlite3_vtab_cursor* base) {
    ++static_cast<TransfersCursor*>(base)->at;
    return SQLITE_OK;
}
int t_eof(sqlite3_vtab_cursor* base) {
    auto* c = static_cast<TransfersCursor*>(base);
    return c->at >= c->rows.size();
}
int t_column(sqlite3_vtab_cursor* base, sqlite3_context* ctx, int column) {
    auto* c = static_cast<TransfersCursor*>(base);
    const TransferInfo& t = c->rows[c->at];
    switch (column) {
        case 0: sqlite3_result_int64(ctx, t.id); break;
        case 1: result_string(ctx, t.root); break;
        case 2: result_string(ctx, t.direction); break;
        case 3: result_string(ctx, t.bucket); break;
        case 4: result_string(ctx, t.key); break;
        case 5: sqlite3_result_int64(ctx, t.done); break;
        case 6: if (t.total >= 0) sqlite3_result_int64(ctx, t.total); break;
        case 7: result_string(ctx, iso_time(t.started)); break;
    }
    return SQLITE_OK;
}
int t_rowid(sqlite3_vtab_cursor* base, sqlite3_int64* rowid) {
    auto* c = static_cast<TransfersCursor*>(base);
    *rowid = c->rows[c->at].id;
    return SQLITE_OK;
}

sqlite3_module transfers_module() {
    sqlite3_module m{};
    m.xConnect = t_connect;  // eponymous only: no xCreate
    m.xBestIndex = t_best_index;
    m.xDisconnect = t_disconnect;
    m.xOpen = t_open;
    m.xClose = t_close;
    m.xFilter = t_filter;
    m.xNext = t_next;
    m.xEof = t_eof;
    m.xColumn = t_column;
    m.xRowid = t_rowid;
    return m;
}

const sqlite3_module kTransfersModule = transfers_module();

void destroy_context(void* p) { delete static_cast<std::shared_ptr<FilesContext>*>(p); }

}  // namespace

int register_files_table(sqlite3* db, const std::shared_ptr<FilesContext>& context) {
    int rc = sqlite3_create_module_v2(db, "aerials_files", &kFilesModule, new std::shared_ptr<FilesContext>(context),
                                      destroy_context);
    if (rc == SQLITE_OK) rc = sqlite3_create_module_v2(db, "aerials_transfers", &kTransfersModule, nullptr, nullptr);
    return rc;
}

}  // namespace aerials::files
