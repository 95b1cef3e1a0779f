// SQL functions of the files layer (see files_sql.h for the list).
#include <cstring>
#include <nlohmann/json.hpp>

#include "files/clock.h"
#include "files/files_context.h"
#include "files/files_sql.h"
#include "files/names.h"
#include "files/progress.h"

namespace aerials::files {
namespace {

struct Call {
    sqlite3_context* ctx;
    const char* name;
    int argc;
    sqlite3_value** argv;

    FilesContext& files() const { return **static_cast<std::shared_ptr<FilesContext>*>(sqlite3_user_data(ctx)); }

    bool has(int i) const { return i < argc && sqlite3_value_type(argv[i]) != SQLITE_NULL; }
    std::string text(int i, const char* what) const {
        if (i >= argc || sqlite3_value_type(argv[i]) == SQLITE_NULL) {
            throw InvalidName(std::string(what) + " must not be NULL");
        }
        const auto* p = reinterpret_cast<const char*>(sqlite3_value_text(argv[i]));
        return std::string(p, static_cast<size_t>(sqlite3_value_bytes(argv[i])));
    }
    std::optional<std::string> optional_text(int i) const {
        if (!has(i)) return std::nullopt;
        return text(i, "");
    }
    int64_t integer(int i, const char* what) const {
        if (i >= argc || sqlite3_value_numeric_type(argv[i]) != SQLITE_INTEGER) {
            throw InvalidName(std::string(what) + " must be an integer");
        }
        return sqlite3_value_int64(argv[i]);
    }
    ObjectStore& store() const { return files().open(text(0, "root")); }
};

using Body = void (*)(const Call&);

template <Body body>
void entry(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
    Call call{ctx, "aerials", argc, argv};
    try {
        body(call);
    } catch (const std::exception& e) {
        sqlite3_result_error(ctx, e.what(), -1);
        sqlite3_result_error_code(ctx, files_error_code(e));
    }
}

std::string version_json(const ObjectVersion& v) {
    nlohmann::json j = {{"bucket", v.bucket}, {"key", v.key},   {"version_id", v.version_id}, {"size", v.size},
                        {"sha256", v.sha256}, {"etag", v.etag}, {"chunks", v.chunk_count}};
    return j.dump();
}

void result_text(const Call& c, const std::string& text) {
    sqlite3_result_text(c.ctx, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
}

PutOptions put_options(const Call& c, int first) {
    PutOptions o;
    if (c.has(first)) o.content_type = c.text(first, "content_type");
    if (c.has(first + 1)) o.metadata = c.text(first + 1, "metadata");
    if (c.has(first + 2)) o.tags = c.text(first + 2, "tags");
    return o;
}

// --- host files ---

void put_fn(const Call& c) {
    ObjectStore& s = c.store();
    std::string bucket = c.text(1, "bucket"), key = c.text(2, "key"), path = c.text(3, "path");
    check_bucket_name(bucket);
    check_key(key);
    FileSource source(path);
    Transfer progress(s.root(), "put", bucket, key, source.size());
    result_text(c, version_json(s.put(bucket, key, source, put_options(c, 4), &progress)));
}

void get_fn(const Call& c) {
    ObjectStore& s = c.store();
    std::string bucket = c.text(1, "bucket"), key = c.text(2, "key"), path = c.text(3, "path");
    ObjectVersion v = s.head(bucket, key, c.optional_text(4));
    FileSink sink(path);
    Transfer progress(s.root(), "get", bucket, key, v.size);
    s.get(v, sink, &progress);
    sink.commit();
    sqlite3_result_int64(c.ctx, v.size);
}

void part_file_fn(const Call& c) {
    ObjectStore& s = c.store();
    std::string bucket = c.text(1, "bucket"), key = c.text(2, "key");
    FileSource source(c.text(5, "path"));
    Transfer progress(s.root(), "part", bucket, key, source.size());
    PartInfo p = s.put_part(bucket, key, c.text(3, "upload_id"), static_cast<int>(c.integer(4, "part_number")), source,
                            &progress);
    result_text(c, p.etag);
}

// --- store only ---

void read_fn(const Call& c) {
    ObjectStore& s = c.store();
    ObjectVersion v = s.head(c.text(1, "bucket"), c.text(2, "key"), c.optional_text(5));
    int64_t length = c.integer(4, "length");
    if (length > 1000000000) throw InvalidName("aerials_read: length is limited to 1,000,000,000 bytes per call");
    std::string bytes = s.read_range(v, c.integer(3, "offset"), length);
    sqlite3_result_blob64(c.ctx, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
}

void delete_fn(const Call& c) {
    DeleteResult r = c.store().remove(c.text(1, "bucket"), c.text(2, "key"), c.optional_text(3));
    result_text(c, nlohmann::json({{"version_id", r.version_id}, {"delete_marker", r.delete_marker}}).dump());
}

void versioning_fn(const Call& c) {
    ObjectStore& s = c.store();
    std::string bucket = c.text(1, "bucket");
    if (c.has(2)) s.set_versioning(bucket, parse_versioning(c.text(2, "state")));
    result_text(c, versioning_name(s.versioning(bucket)));
}

void lifecycle_fn(const Call& c) {
    c.store().set_lifecycle(c.text(1, "bucket"), c.has(2) ? c.text(2, "rules") : "");
    result_text(c, "ok");
}

void tag_fn(const Call& c) {
    c.store().set_tags(c.text(1, "bucket"), c.text(2, "key"), c.optional_text(4), c.text(3, "tags"));
    result_text(c, "ok");
}

void upload_create_fn(const Call& c) {
    result_text(c, c.store().create_upload(c.text(1, "bucket"), c.text(2, "key"), put_options(c, 3)));
}

void upload_part_fn(const Call& c) {
    if (c.argc < 6 || sqlite3_value_type(c.argv[5]) == SQLITE_NULL) throw InvalidName("aerials_upload_part: content must not be NULL");
    std::string_view data(static_cast<const char*>(sqlite3_value_blob(c.argv[5])),
                          static_cast<size_t>(sqlite3_value_bytes(c.argv[5])));
    MemorySource source(data);
    PartInfo p = c.store().put_part(c.text(1, "bucket"), c.text(2, "key"), c.text(3, "upload_id"),
                                    static_cast<int>(c.integer(4, "part_number")), source);
    result_text(c, p.etag);
}

void upload_complete_fn(const Call& c) {
    std::vector<int> parts;
    if (c.has(4)) {
        nlohmann::json list;
        try {
            list = nlohmann::json::parse(c.text(4, "parts"));
        } catch (const std::exception& e) {
            throw InvalidName(std::string("aerials_upload_complete: parts must be a JSON array of part numbers: ") + e.what());
        }
        if (!list.is_array()) throw InvalidName("aerials_upload_complete: parts must be a JSON array of part numbers");
        for (const auto& n : list) {
            if (!n.is_number_integer()) throw InvalidName("aerials_upload_complete: part numbers must be integers");
            parts.push_back(n.get<int>());
        }
    }
    result_text(c, version_json(c.store().complete_upload(c.text(1, "bucket"), c.text(2, "key"), c.text(3, "upload_id"), parts)));
}

void upload_abort_fn(const Call& c) {
    c.store().abort_upload(c.text(1, "bucket"), c.text(2, "key"), c.text(3, "upload_id"));
    result_text(c, "ok");
}

void collect_fn(const Call& c) {
    int64_t now = c.has(1) ? c.integer(1, "now (Unix milliseconds)") : unix_now_ms();
    int64_t grace = c.has(2) ? c.integer(2, "grace (milliseconds)") : ObjectStore::kDefaultGraceMs;
    result_text(c, c.store().collect(now, grace).to_json());
}

void progress_fn(const Call& c) {
    std::string previous = progress_to_stderr() ? "stderr" : "off";
    if (c.has(0)) {
        std::string mode = c.text(0, "mode");
        if (mode == "stderr") {
            set_progress_to_stderr(true);
        } else if (mode == "off") {
            set_progress_to_stderr(false);
        } else {
            throw InvalidName("aerials_progress: mode '" + mode + "' is not 'stderr' or 'off'");
        }
    }
    result_text(c, previous);
}

struct FunctionDef {
    const char* name;
    int min_args, max_args;
    void (*fn)(sqlite3_context*, int, sqlite3_value**);
    bool host_files;
};

const FunctionDef kFunctions[] = {
    {"aerials_put", 4, 7, entry<put_fn>, true},
    {"aerials_get", 4, 5, entry<get_fn>, true},
    {"aerials_upload_part_file", 6, 6, entry<part_file_fn>, true},
    {"aerials_read", 5, 6, entry<read_fn>, false},
    {"aerials_delete", 3, 4, entry<delete_fn>, false},
    {"aerials_versioning", 2, 3, entry<versioning_fn>, false},
    {"aerials_lifecycle", 2, 3, entry<lifecycle_fn>, false},
    {"aerials_tag", 4, 5, entry<tag_fn>, false},
    {"aerials_upload_create", 3, 6, entry<upload_create_fn>, false},
    {"aerials_upload_part", 6, 6, entry<upload_part_fn>, false},
    {"aerials_upload_complete", 4, 5, entry<upload_complete_fn>, false},
    {"aerials_upload_abort", 4, 4, entry<upload_abort_fn>, false},
    {"aerials_collect", 1, 3, entry<collect_fn>, false},
    {"aerials_progress", 0, 1, entry<progress_fn>, false},
};

void destroy_context(void* p) { delete static_cast<std::shared_ptr<FilesContext>*>(p); }

}  // namespace

int register_files_functions(sqlite3* db, const std::shared_ptr<FilesContext>& context, bool host_files) {
    for (const FunctionDef& f : kFunctions) {
        if (f.host_files && !host_files) continue;
        for (int n = f.min_args; n <= f.max_args; ++n) {
            auto* holder = new std::shared_ptr<FilesContext>(context);
            int rc = sqlite3_create_function_v2(db, f.name, n, SQLITE_UTF8 | SQLITE_DIRECTONLY, holder, f.fn, nullptr,
                                                nullptr, destroy_context);
            if (rc != SQLITE_OK) return rc;  // SQLite called destroy_context on failure
        }
    }
    return SQLITE_OK;
}

}  // namespace aerials::files
