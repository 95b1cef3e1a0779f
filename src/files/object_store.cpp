#include "files/object_store.h"

#include <algorithm>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "files/clock.h"
#include "files/durability.h"
#include "files/names.h"
#include "files/progress.h"
#include "files/schema.h"
#include "store/crash_point.h"

namespace aerials::files {

using store::BucketFile;
using store::StatementLease;

namespace {

// A put refreshes its upload row's heartbeat and drops the bucket files'
// unused cache pages after about this many bytes.
constexpr int64_t kBatchBytes = 32 * 1024 * 1024;

const char* const kVersionColumns =
    "bucket, key, version_id, seq, is_latest, delete_marker, size, content_type, sha256, etag, created, "
    "noncurrent_since, metadata, tags, length(chunks) / 40";

std::string new_id() {
    static thread_local std::mt19937_64 random(std::random_device{}());
    char buf[40];
    std::snprintf(buf, sizeof buf, "%012llx%016llx", static_cast<unsigned long long>(unix_now_ms()),
                  static_cast<unsigned long long>(random()));
    return buf;
}

std::string quoted_object(const std::string& bucket, const std::string& key) { return "'" + bucket + "/" + key + "'"; }

// Fills `buffer` from `source` unless the source ends first.
size_t read_full(Source& source, std::vector<uint8_t>& buffer) {
    size_t have = 0;
    while (have < buffer.size()) {
        size_t n = source.read(buffer.data() + have, buffer.size() - have);
        if (n == 0) break;
        have += n;
    }
    return have;
}

void check_string_map(const std::string& json_text, const char* what, size_t max_entries, size_t max_key,
                      size_t max_value) {
    nlohmann::json doc;
    try {
        doc = nlohmann::json::parse(json_text);
    } catch (const std::exception& e) {
        throw InvalidName(std::string(what) + " must be a JSON object of strings: " + e.what());
    }
    if (!doc.is_object()) throw InvalidName(std::string(what) + " must be a JSON object of strings");
    if (doc.size() > max_entries) {
        throw InvalidName(std::string(what) + " may have at most " + std::to_string(max_entries) + " entries");
    }
    for (auto& [k, v] : doc.items()) {
        if (!v.is_string()) throw InvalidName(std::string(what) + " value of '" + k + "' must be a string");
        if (k.empty() || k.size() > max_key) {
            throw InvalidName(std::string(what) + " key '" + k + "' must be 1 to " + std::to_string(max_key) + " bytes");
        }
        if (v.get<std::string>().size() > max_value) {
            throw InvalidName(std::string(what) + " value of '" + k + "' is longer than " + std::to_string(max_value) +
                              " bytes");
        }
    }
}


}  // namespace

void check_tags(const std::string& tags) { check_string_map(tags, "tags", 10, 128, 256); }
void check_metadata(const std::string& metadata) {
    if (metadata.size() > 2048) throw InvalidName("user metadata is larger than S3's limit of 2 KiB");
    check_string_map(metadata, "metadata", 2048, 2048, 2048);
}

namespace {

void bind_all(sqlite::Statement& stmt, const std::vector<std::string>& values) {
    for (size_t i = 0; i < values.size(); ++i) stmt.bind(static_cast<int>(i + 1), values[i]);
}

std::string text_or_empty(sqlite::Statement& stmt, int column) {
    return stmt.column_type(column) == SQLITE_NULL ? std::string() : stmt.column_text(column);
}

}  // namespace

const char* versioning_name(Versioning v) {
    switch (v) {
        case Versioning::kEnabled: return "Enabled";
        case Versioning::kSuspended: return "Suspended";
        default: return "Off";
    }
}

Versioning parse_versioning(const std::string& text) {
    std::string t;
    for (char c : text) t.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    if (t == "enabled") return Versioning::kEnabled;
    if (t == "suspended") return Versioning::kSuspended;
    if (t == "off") return Versioning::kOff;
    throw InvalidName("versioning state '" + text + "' is not one of Enabled, Suspended, Off");
}

std::string CollectReport::to_json() const {
    nlohmann::json j = {{"expired_current", expired_current},   {"expired_noncurrent", expired_noncurrent},
                        {"aborted_uploads", aborted_uploads},   {"dead_uploads", dead_uploads},
                        {"chunks_removed", chunks_removed},     {"bytes_removed", bytes_removed},
                        {"refs_fixed", refs_fixed}};
    return j.dump();
}

ObjectStore::ObjectStore(const store::StoreOptions& options)
    : root_(options.root), synchronous_(options.synchronous), store_(std::make_unique<store::Store>(options)),
      chunks_(*store_) {
    register_file_collections(*store_);
}

ObjectStore::~ObjectStore() = default;

void ObjectStore::set_chunk_size(int64_t bytes) {
    if (bytes < 64 * 1024 || bytes > 256 * 1024 * 1024) {
        throw InvalidName("chunk_size " + std::to_string(bytes) + " is outside 64 KiB to 256 MiB");
    }
    chunk_size_ = bytes;
}

void ObjectStore::for_each_bucket_file(const std::function<void(std::shared_ptr<BucketFile>&)>& fn) {
    std::deque<store::BucketId> todo(store_->buckets().begin(), store_->buckets().end());
    while (!todo.empty()) {
        store::BucketId id = todo.front();
        todo.pop_front();
        try {
            std::shared_ptr<BucketFile> file = store_->open(id);
            fn(file);
        } catch (const store::BucketRetired&) {
            for (const store::BucketId& child : store_->reload_after(id)) todo.push_back(child);
        }
    }
}

// --- object buckets ---------------------------------------------------------

Versioning ObjectStore::versioning(const std::string& bucket) {
    check_bucket_name(bucket);
    std::optional<std::string> state = store_->with_bucket(hash_of_text(bucket), [&](std::shared_ptr<BucketFile>& file) {
        StatementLease find(file, std::string("SELECT versioning FROM ") + kBucketsTable + " WHERE name = ?1");
        find->bind(1, bucket);
        std::optional<std::string> found;
        if (find.step("reading an object bucket")) found = find->column_text(0);
        return found;
    });
    return state ? parse_versioning(*state) : Versioning::kOff;
}

Versioning ObjectStore::ensure_bucket(const std::string& bucket) {
    check_bucket_name(bucket);
    bool exists = store_->with_bucket(hash_of_text(bucket), [&](std::shared_ptr<BucketFile>& file) {
        StatementLease find(file, std::string("SELECT 1 FROM ") + kBucketsTable + " WHERE name = ?1");
        find->bind(1, bucket);
        return find.step("reading an object bucket");
    });
    if (!exists) {
        in_transaction([&] {
            auto file = store_->writable(hash_of_text(bucket));
            StatementLease add(file, std::string("INSERT OR IGNORE INTO ") + kBucketsTable +
                                         "(name, versioning, created) VALUES (?1, 'Off', ?2)");
            add->bind(1, bucket);
            add->bind(2, unix_now_ms());
            add.step("creating an object bucket");
            add->reset();
            file->add_records(sqlite3_changes(file->db().get()));
        });
    }
    return versioning(bucket);
}

void ObjectStore::set_versioning(const std::string& bucket, Versioning state) {
    Versioning now = ensure_bucket(bucket);
    if (state == Versioning::kOff && now != Versioning::kOff) {
        throw InvalidName("versioning of bucket '" + bucket + "' was enabled once: it can be suspended, not turned off");
    }
    in_transaction([&] {
        auto file = store_->writable(hash_of_text(bucket));
        StatementLease set(file, std::string("UPDATE ") + kBucketsTable + " SET versioning = ?2 WHERE name = ?1");
        set->bind(1, bucket);
        set->bind(2, std::string_view(versioning_name(state)));
        set.step("setting versioning");
    });
}

void ObjectStore::set_lifecycle(const std::string& bucket, const std::string& rules_json) {
    if (!rules_json.empty()) {
        nlohmann::json rules;
        try {
            rules = nlohmann::json::parse(rules_json);
        } catch (const std::exception& e) {
            throw InvalidName(std::string("lifecycle rules must be a JSON array: ") + e.what());
        }
        if (!rules.is_array()) throw InvalidName("lifecycle rules must be a JSON array of rule objects");
        for (const auto& rule : rules) {
            if (!rule.is_object()) throw InvalidName("each lifecycle rule must be a JSON object");
            for (auto& [name, value] : rule.items()) {
                if (name == "prefix" || name == "id") {
                    if (!value.is_string()) throw InvalidName("lifecycle rule field '" + name + "' must be a string");
                } else if (name == "expiration_days" || name == "noncurrent_days" || name == "abort_incomplete_days") {
                    if (!value.is_number_integer() || value.get<int64_t>() < 0) {
                        throw InvalidName("lifecycle rule field '" + name + "' must be a whole number of days >= 0");
                    }
                } else {
                    throw InvalidName("unknown lifecycle rule field '" + name +
                                      "' (known: id, prefix, expiration_days, noncurrent_days, abort_incomplete_days)");
                }
            }
        }
    }
    ensure_bucket(bucket);
    in_transaction([&] {
        auto file = store_->writable(hash_of_text(bucket));
        StatementLease set(file, std::string("UPDATE ") + kBucketsTable + " SET lifecycle = ?2 WHERE name = ?1");
        set->bind(1, bucket);
        if (rules_json.empty()) {
            set->bind_null(2);
        } else {
            set->bind(2, rules_json);
        }
        set.step("setting lifecycle rules");
    });
}

// --- writing ----------------------------------------------------------------

void ObjectStore::begin_upload_row(const std::string& object, const std::string& upload_id, const char* kind,
                                   const std::string& bucket, const std::string& key, const PutOptions& options) {
    in_transaction([&] {
        auto file = store_->writable(hash_of_text(object));
        StatementLease add(file, std::string("INSERT INTO ") + kUploadsTable +
                                     "(object, upload_id, kind, bucket, key, created, touched, content_type, metadata, "
                                     "tags) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9)");
        add->bind(1, object);
        add->bind(2, upload_id);
        add->bind(3, std::string_view(kind));
        add->bind(4, bucket);
        add->bind(5, key);
        add->bind(6, unix_now_ms());
        add->bind(7, options.content_type);
        add->bind(8, options.metadata);
        add->bind(9, options.tags);
        add.step("recording an upload");
        file->add_records(1);
    });
}

void ObjectStore::drop_upload_row(const std::string& object, const std::string& upload_id) {
    in_transaction([&] {
        auto file = store_->writable(hash_of_text(object));
        StatementLease drop(file, std::string("DELETE FROM ") + kUploadsTable + " WHERE object = ?1 AND upload_id = ?2");
        drop->bind(1, object);
        drop->bind(2, upload_id);
        drop.step("removing an upload");
        drop->reset();
        file->add_records(-sqlite3_changes(file->db().get()));
    });
}

std::vector<ChunkRef> ObjectStore::write_chunks(Stream& stream, Source& source, Transfer* progress,
                                                const std::string& object, const std::string& upload_id) {
    // Two chunk buffers: while chunk i is addressed and stored on this thread,
    // the object's own digests of it (SHA-256 and MD5, each inherently
    // sequential, MD5 the slowest step of a put) run on two other threads, and
    // chunk i + 1 is read into the other buffer. The digest jobs are declared
    // after the buffers, so that on every path they finish before the buffers go.
    std::vector<uint8_t> buffers[2] = {std::vector<uint8_t>(static_cast<size_t>(chunk_size_)),
                                       std::vector<uint8_t>(static_cast<size_t>(chunk_size_))};
    std::future<void> digest_jobs[2];
    auto wait_digests = [&] {
        for (std::future<void>& job : digest_jobs) {
            if (job.valid()) job.get();
        }
    };
    // Each chunk is committed alone in its bucket file (chunks need no
    // atomicity among themselves: a crash leaves reference counts too high,
    // never too low), without an fsync when the store's setting would make
    // one; the barrier makes every bucket file that took one durable before
    // the manifest (or part) naming them commits (decision 0007).
    const bool deferred = defers_chunk_syncs(synchronous_);
    DurabilityBarrier barrier;
    std::vector<ChunkRef> committed;
    int64_t since_heartbeat = 0;
    auto heartbeat = [&] {
        // The upload row's heartbeat tells the collector this writer lives.
        in_transaction([&] {
            auto file = store_->writable(hash_of_text(object));
            StatementLease touch(file, std::string("UPDATE ") + kUploadsTable +
                                           " SET touched = ?3 WHERE object = ?1 AND upload_id = ?2");
            touch->bind(1, object);
            touch->bind(2, upload_id);
            touch->bind(3, unix_now_ms());
            touch.step("touching an upload");
        });
        store_->release_caches();
        if (deferred) barrier.flush();
        since_heartbeat = 0;
        store::crash_point("files:batch_committed");
    };
    try {
        for (size_t i = 0;; ++i) {
            std::vector<uint8_t>& buffer = buffers[i % 2];
            size_t n = read_full(source, buffer);
            wait_digests();  // of chunk i - 1: each digest takes the chunks in order
            if (n == 0) break;
            const uint8_t* data = buffer.data();
            if (stream.whole_sha) {
                digest_jobs[0] = std::async(std::launch::async, [&stream, data, n] { stream.sha.update(data, n); });
            }
            digest_jobs[1] = std::async(std::launch::async, [&stream, data, n] { stream.md5.update(data, n); });
            ChunkRef ref{sha256_of(data, n), static_cast<int64_t>(n)};
            std::shared_ptr<BucketFile> file;
            {
                // The connection is relaxed before add_ref begins its
                // transaction, and restored after it ended.
                std::optional<RelaxedCommits> relaxed;
                if (deferred) {
                    relaxed.emplace(store_->with_bucket(hash_of_blob(ref.sha256.data(), ref.sha256.size()),
                                                        [](std::shared_ptr<BucketFile>& f) { return f; }),
                                    synchronous_);
                }
                try {
                    file = chunks_.add_ref(ref.sha256, data, ref.size, unix_now_ms());
                    store_->commit_all();
                } catch (...) {
                    store_->rollback_all();
                    throw;
                }
            }
            if (deferred) barrier.note(file->path());
            committed.push_back(ref);
            // A split now keeps every bucket file within a chunk of its bound.
            store_->split_pending();
            stream.size += ref.size;
            if (progress) progress->add(ref.size);
            since_heartbeat += ref.size;
            if (since_heartbeat >= kBatchBytes) heartbeat();
            if (n < buffer.size()) break;
        }
        wait_digests();
        if (deferred) barrier.sync();
        heartbeat();
    } catch (...) {
        for (std::future<void>& job : digest_jobs) {
            if (job.valid()) job.wait();
        }
        store_->rollback_all();
        try {
            chunks_.release(committed);
        } catch (const std::exception& e) {
            sqlite3_log(SQLITE_WARNING, "aerials: chunks of a failed upload to %s are left for the collector: %s",
                        object.c_str(), e.what());
        }
        throw;
    }
    return committed;
}

// Inside the object's bucket transaction: makes `v` the object's current
// version as the bucket's versioning state says, and removes the upload (and
// its parts). Returns in `replaced` the chunks of the version it replaced.
void install_version_locked(std::shared_ptr<BucketFile>& file, ObjectVersion& v, Versioning state,
                    const std::string& upload_id, std::vector<ChunkRef>& replaced) {
    std::string object = object_path(v.bucket, v.key);
    auto run = [&](const std::string& sql, const char* what, auto&&... binds) {
        StatementLease stmt(file, sql);
        int i = 0;
        ((stmt->bind(++i, binds)), ...);
        stmt.step(what);
        stmt->reset();
        return sqlite3_changes(file->db().get());
    };
    int64_t now = unix_now_ms();
    if (state == Versioning::kEnabled) {
        v.version_id = new_id();
    } else {
        v.version_id = "null";
        StatementLease old(file, std::string("SELECT chunks FROM ") + kObjectsTable +
                                     " WHERE object = ?1 AND version_id = 'null'");
        old->bind(1, object);
        if (old.step("reading the replaced version")) {
            auto more = chunk_list_column(*old, 0, object);
            replaced.insert(replaced.end(), more.begin(), more.end());
        }
        old.reset();
        file->add_records(-run(std::string("DELETE FROM ") + kObjectsTable + " WHERE object = ?1 AND version_id = 'null'",
                               "removing the replaced version", object));
    }
    run(std::string("UPDATE ") + kObjectsTable +
            " SET is_latest = 0, noncurrent_since = ?2 WHERE object = ?1 AND is_latest = 1",
        "demoting the current version", object, now);
    StatementLease seq(file, std::string("SELECT coalesce(max(seq), 0) + 1 FROM ") + kObjectsTable + " WHERE object = ?1");
    seq->bind(1, object);
    seq.step("numbering a version");
    v.seq = seq->column_int(0);
    seq.reset();
    v.is_latest = true;
    v.created = now;
    StatementLease add(file, std::string("INSERT INTO ") + kObjectsTable +
                                 "(object, bucket, key, version_id, seq, is_latest, delete_marker, size, content_type, "
                                 "sha256, etag, created, noncurrent_since, metadata, tags, chunks) VALUES "
                                 "(?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?9, ?10, ?11, NULL, ?12, ?13, ?14)");
    add->bind(1, object);
    add->bind(2, v.bucket);
    add->bind(3, v.key);
    add->bind(4, v.version_id);
    add->bind(5, v.seq);
    add->bind(6, int64_t{v.delete_marker});
    add->bind(7, v.size);
    if (v.content_type.empty()) add->bind_null(8); else add->bind(8, v.content_type);
    if (v.sha256.empty()) add->bind_null(9); else add->bind(9, v.sha256);
    if (v.etag.empty()) add->bind_null(10); else add->bind(10, v.etag);
    add->bind(11, v.created);
    add->bind(12, v.metadata);
    add->bind(13, v.tags);
    if (v.delete_marker) {
        add->bind_null(14);
    } else {
        std::string list = encode_chunk_list(v.chunks);
        add->bind_blob(14, list.data(), static_cast<int>(list.size()));
    }
    add.step("writing a manifest");
    add.reset();
    file->add_records(1);
    if (!upload_id.empty()) {
        file->add_records(-run(std::string("DELETE FROM ") + kPartsTable + " WHERE object = ?1 AND upload_id = ?2",
                               "removing the upload's parts", object, upload_id));
        file->add_records(-run(std::string("DELETE FROM ") + kUploadsTable + " WHERE object = ?1 AND upload_id = ?2",
                               "removing the upload", object, upload_id));
    }
}

ObjectVersion ObjectStore::install(ObjectVersion version, const std::string& upload_id,
                                   std::vector<ChunkRef>& replaced) {
    Versioning state = versioning(version.bucket);
    std::string object = object_path(version.bucket, version.key);
    in_transaction([&] {
        auto file = store_->writable(hash_of_text(object));
        install_version_locked(file, version, state, upload_id, replaced);
    });
    return version;
}

ObjectVersion ObjectStore::put(const std::string& bucket, const std::string& key, Source& source,
                               const PutOptions& options, Transfer* progress) {
    check_key(key);
    check_metadata(options.metadata);
    check_tags(options.tags);
    ensure_bucket(bucket);
    std::string object = object_path(bucket, key);
    std::string upload_id = new_id();
    begin_upload_row(object, upload_id, "put", bucket, key, options);
    Stream stream;
    ObjectVersion v;
    try {
        v.chunks = write_chunks(stream, source, progress, object, upload_id);
    } catch (...) {
        try {
            drop_upload_row(object, upload_id);
        } catch (...) {
        }
        throw;
    }
    store::crash_point("files:chunks_durable");
    v.bucket = bucket;
    v.key = key;
    v.size = stream.size;
    v.content_type = options.content_type;
    v.metadata = options.metadata;
    v.tags = options.tags;
    v.sha256 = to_hex(stream.sha.finish());
    v.etag = to_hex(stream.md5.finish());
    v.chunk_count = static_cast<int64_t>(v.chunks.size());
    std::vector<ChunkRef> replaced;
    try {
        v = install(std::move(v), upload_id, replaced);
    } catch (...) {
        try {
            chunks_.release(v.chunks);
            drop_upload_row(object, upload_id);
        } catch (...) {
        }
        throw;
    }
    chunks_.release(replaced);
    return v;
}

// --- reading ----------------------------------------------------------------

std::vector<ObjectVersion> ObjectStore::query_versions(std::shared_ptr<BucketFile>& file, const std::string& where,
                                                       const std::vector<std::string>& values, bool with_chunks) {
    std::string sql = std::string("SELECT ") + kVersionColumns + (with_chunks ? ", chunks" : ", NULL") + " FROM " +
                      kObjectsTable + (where.empty() ? "" : " WHERE " + where);
    StatementLease rows(file, sql);
    bind_all(*rows, values);
    std::vector<ObjectVersion> out;
    while (rows.step("reading manifests")) {
        sqlite::Statement& r = *rows;
        ObjectVersion v;
        v.bucket = r.column_text(0);
        v.key = r.column_text(1);
        v.version_id = r.column_text(2);
        v.seq = r.column_int(3);
        v.is_latest = r.column_int(4) != 0;
        v.delete_marker = r.column_int(5) != 0;
        v.size = r.column_int(6);
        v.content_type = text_or_empty(r, 7);
        v.sha256 = text_or_empty(r, 8);
        v.etag = text_or_empty(r, 9);
        v.created = r.column_int(10);
        if (r.column_type(11) != SQLITE_NULL) v.noncurrent_since = r.column_int(11);
        v.metadata = text_or_empty(r, 12);
        v.tags = text_or_empty(r, 13);
        v.chunk_count = r.column_int(14);
        if (with_chunks) v.chunks = chunk_list_column(r, 15, object_path(v.bucket, v.key));
        out.push_back(std::move(v));
    }
    return out;
}

ObjectVersion ObjectStore::head(const std::string& bucket, const std::string& key,
                                const std::optional<std::string>& version_id) {
    check_bucket_name(bucket);
    check_key(key);
    std::string object = object_path(bucket, key);
    std::vector<ObjectVersion> found = store_->with_bucket(hash_of_text(object), [&](std::shared_ptr<BucketFile>& file) {
        if (version_id) return query_versions(file, "object = ?1 AND version_id = ?2", {object, *version_id}, true);
        return query_versions(file, "object = ?1 AND is_latest = 1", {object}, true);
    });
    if (found.empty()) {
        if (version_id) {
            throw NotFound("version '" + *version_id + "' of object " + quoted_object(bucket, key) + " does not exist");
        }
        throw NotFound("object " + quoted_object(bucket, key) + " does not exist");
    }
    if (found[0].delete_marker) {
        if (version_id) {
            throw NotFound("version '" + *version_id + "' of object " + quoted_object(bucket, key) +
                           " is a delete marker and has no content");
        }
        throw NotFound("object " + quoted_object(bucket, key) + " does not exist (its current version is a delete marker)");
    }
    return found[0];
}

namespace {
std::string chunk_context(const ObjectVersion& v, size_t index) {
    return "chunk " + std::to_string(index) + " of object " + quoted_object(v.bucket, v.key) + " (version " +
           v.version_id + ")";
}
}  // namespace

void ObjectStore::get(const ObjectVersion& version, Sink& sink, Transfer* progress) {
    // Three buffers in three stages: chunk i + 2 is read from its bucket file
    // on this thread while chunk i + 1 is verified and chunk i written out,
    // each on a thread of its own (verification and the write each cost about
    // as much as the read). A chunk is written only after its SHA-256 matched
    // and after the chunk before it was written, so no byte reaches the sink
    // unverified or out of order. The jobs are declared after the buffers, so
    // that on every path they finish before the buffers go.
    constexpr size_t kSlots = 3;
    std::vector<uint8_t> buffers[kSlots];
    std::shared_future<void> written[kSlots];  // the write of the chunk each buffer last held
    for (size_t i = 0; i < version.chunks.size(); ++i) {
        size_t slot = i % kSlots;
        if (written[slot].valid()) written[slot].get();  // chunk i - 3: its buffer is free again
        std::vector<uint8_t>& buffer = buffers[slot];
        std::string context = chunk_context(version, i);
        std::string path = chunks_.read_raw(version.chunks[i], buffer, context);
        std::shared_future<void> verified =
            std::async(std::launch::async, [&buffer, &chunk = version.chunks[i], context, path] {
                ChunkStore::verify(chunk, buffer, context, path);
            }).share();
        std::shared_future<void> previous = written[(i + kSlots - 1) % kSlots];
        written[slot] = std::async(std::launch::async, [&buffer, &sink, progress, verified, previous] {
                            verified.get();
                            if (previous.valid()) previous.get();
                            sink.write(buffer.data(), buffer.size());
                            if (progress) progress->add(static_cast<int64_t>(buffer.size()));
                        }).share();
    }
    // The last write waits for every one before it (and rethrows their errors).
    for (size_t k = 0; k < kSlots; ++k) {
        size_t slot = (version.chunks.size() + k) % kSlots;
        if (written[slot].valid()) written[slot].get();
    }
}

std::string ObjectStore::read_range(const ObjectVersion& version, int64_t offset, int64_t length) {
    if (offset < 0 || length < 0) throw InvalidName("a range needs offset >= 0 and length >= 0");
    if (offset > version.size) {
        throw InvalidName("range starts at byte " + std::to_string(offset) + ", past the end of object " +
                          quoted_object(version.bucket, version.key) + " (" + std::to_string(version.size) + " bytes)");
    }
    int64_t end = std::min(version.size, offset + std::min<int64_t>(length, version.size));
    std::string out;
    out.reserve(static_cast<size_t>(end - offset));
    std::vector<uint8_t> buffer;
    int64_t at = 0;
    for (size_t i = 0; i < version.chunks.size() && at < end; ++i) {
        const ChunkRef& chunk = version.chunks[i];
        int64_t chunk_end = at + chunk.size;
        if (chunk_end > offset) {
            chunks_.read(chunk, buffer, chunk_context(version, i));
            int64_t from = std::max(offset, at) - at;
            int64_t to = std::min(end, chunk_end) - at;
            out.append(reinterpret_cast<const char*>(buffer.data()) + from, static_cast<size_t>(to - from));
        }
        at = chunk_end;
    }
    return out;
}

std::vector<ObjectVersion> ObjectStore::list(const ListFilter& filter) {
    std::string where = filter.where;
    if (!filter.all_versions) where = (where.empty() ? "" : "(" + where + ") AND ") + "is_latest = 1 AND delete_marker = 0";
    std::vector<ObjectVersion> out;
    for_each_bucket_file([&](std::shared_ptr<BucketFile>& file) {
        std::vector<ObjectVersion> part = query_versions(file, where, filter.values, false);
        std::move(part.begin(), part.end(), std::back_inserter(out));
    });
    std::sort(out.begin(), out.end(), [](const ObjectVersion& a, const ObjectVersion& b) {
        if (a.bucket != b.bucket) return a.bucket < b.bucket;
        if (a.key != b.key) return a.key < b.key;
        return a.seq > b.seq;
    });
    return out;
}

std::vector<ObjectVersion> ObjectStore::versions_of(const std::string& bucket, const std::string& key) {
    check_bucket_name(bucket);
    check_key(key);
    std::string object = object_path(bucket, key);
    auto out = store_->with_bucket(hash_of_text(object), [&](std::shared_ptr<BucketFile>& file) {
        return query_versions(file, "object = ?1", {object}, false);
    });
    std::sort(out.begin(), out.end(), [](const ObjectVersion& a, const ObjectVersion& b) { return a.seq > b.seq; });
    return out;
}

// --- deleting and tagging ------------------------------------------------------

DeleteResult ObjectStore::remove(const std::string& bucket, const std::string& key,
                                 const std::optional<std::string>& version_id) {
    check_bucket_name(bucket);
    check_key(key);
    std::string object = object_path(bucket, key);
    Versioning state = versioning(bucket);
    std::vector<ChunkRef> replaced;
    DeleteResult result;
    in_transaction([&] {
        auto file = store_->writable(hash_of_text(object));
        auto take = [&](const std::string& version) -> std::optional<bool> {
            // Removes one version row; returns whether it was the latest.
            StatementLease row(file, std::string("SELECT is_latest, chunks FROM ") + kObjectsTable +
                                         " WHERE object = ?1 AND version_id = ?2");
            row->bind(1, object);
            row->bind(2, version);
            if (!row.step("reading a version")) return std::nullopt;
            bool latest = row->column_int(0) != 0;
            auto more = chunk_list_column(*row, 1, object);
            replaced.insert(replaced.end(), more.begin(), more.end());
            row.reset();
            StatementLease del(file, std::string("DELETE FROM ") + kObjectsTable +
                                         " WHERE object = ?1 AND version_id = ?2");
            del->bind(1, object);
            del->bind(2, version);
            del.step("removing a version");
            del.reset();
            file->add_records(-1);
            return latest;
        };
        if (version_id) {
            std::optional<bool> latest = take(*version_id);
            if (!latest) {
                throw NotFound("version '" + *version_id + "' of object " + quoted_object(bucket, key) +
                               " does not exist");
            }
            result.version_id = *version_id;
            if (*latest) {
                StatementLease promote(file, std::string("UPDATE ") + kObjectsTable +
                                                 " SET is_latest = 1, noncurrent_since = NULL WHERE object = ?1 AND "
                                                 "seq = (SELECT max(seq) FROM " + kObjectsTable + " WHERE object = ?1)");
                promote->bind(1, object);
                promote.step("promoting the newest remaining version");
            }
            return;
        }
        if (state == Versioning::kOff) {
            take("null");
            result.version_id = "null";
            return;
        }
        ObjectVersion marker;
        marker.bucket = bucket;
        marker.key = key;
        marker.delete_marker = true;
        marker.metadata = "{}";
        marker.tags = "{}";
        install_version_locked(file, marker, state, "", replaced);
        result.version_id = marker.version_id;
        result.delete_marker = true;
    });
    chunks_.release(replaced);
    return result;
}

void ObjectStore::set_tags(const std::string& bucket, const std::string& key,
                           const std::optional<std::string>& version_id, const std::string& tags_json) {
    check_tags(tags_json);
    ObjectVersion v = head(bucket, key, version_id);
    in_transaction([&] {
        auto file = store_->writable(hash_of_text(object_path(bucket, key)));
        StatementLease set(file, std::string("UPDATE ") + kObjectsTable +
                                     " SET tags = ?3 WHERE object = ?1 AND version_id = ?2");
        set->bind(1, object_path(bucket, key));
        set->bind(2, v.version_id);
        set->bind(3, tags_json);
        set.step("setting tags");
    });
}

}  // namespace aerials::files
