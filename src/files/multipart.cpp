// Multipart uploads, as S3 has them: parts in any order, then a completion
// that makes one object of a chosen list of parts in one transaction of the
// object's bucket file (parts and uploads live there too: schema.h).
#include <algorithm>
#include <random>

#include "files/clock.h"
#include "files/names.h"
#include "files/object_store.h"
#include "files/schema.h"

namespace aerials::files {

using store::BucketFile;
using store::StatementLease;

namespace {

constexpr int64_t kMinPartSize = 5 * 1024 * 1024;  // S3's EntityTooSmall bound, for all parts but the last
constexpr int kMaxPartNumber = 10000;

std::string describe(const std::string& bucket, const std::string& key, const std::string& upload_id) {
    return "upload '" + upload_id + "' of object '" + bucket + "/" + key + "'";
}

struct UploadRow {
    std::string content_type, metadata, tags;
};

std::optional<UploadRow> find_upload(std::shared_ptr<BucketFile>& file, const std::string& object,
                                     const std::string& upload_id) {
    StatementLease find(file, std::string("SELECT content_type, metadata, tags FROM ") + kUploadsTable +
                                  " WHERE object = ?1 AND upload_id = ?2 AND kind = 'multipart'");
    find->bind(1, object);
    find->bind(2, upload_id);
    if (!find.step("reading an upload")) return std::nullopt;
    UploadRow row{find->column_type(0) == SQLITE_NULL ? "" : find->column_text(0), find->column_text(1),
                  find->column_text(2)};
    return row;
}

struct PartRow {
    int number = 0;
    int64_t size = 0;
    std::string md5;  // hex
    std::vector<ChunkRef> chunks;
};

std::vector<PartRow> load_parts(std::shared_ptr<BucketFile>& file, const std::string& object,
                                const std::string& upload_id) {
    StatementLease rows(file, std::string("SELECT part_number, size, md5, chunks FROM ") + kPartsTable +
                                  " WHERE object = ?1 AND upload_id = ?2 ORDER BY part_number");
    rows->bind(1, object);
    rows->bind(2, upload_id);
    std::vector<PartRow> parts;
    while (rows.step("reading parts")) {
        PartRow p;
        p.number = static_cast<int>(rows->column_int(0));
        p.size = rows->column_int(1);
        p.md5 = rows->column_text(2);
        p.chunks = chunk_list_column(*rows, 3, object);
        parts.push_back(std::move(p));
    }
    return parts;
}

// The parts a completion names, checked as S3 checks them, with what the
// object is made of and what the completion leaves unused.
struct Selection {
    std::vector<ChunkRef> chunks;  // the object's, in order
    std::vector<ChunkRef> unused;  // of uploaded parts left out
    std::string md5s;              // the parts' binary MD5s, concatenated
    int64_t size = 0;
    size_t count = 0;
};

std::string unhex(const std::string& hex);

Selection select_parts(const std::vector<PartRow>& parts, const std::vector<int>& wanted, const std::string& what) {
    std::vector<int> numbers = wanted;
    if (numbers.empty()) {
        for (const PartRow& p : parts) numbers.push_back(p.number);
    }
    if (numbers.empty()) throw InvalidName(what + " has no parts to complete with");
    for (size_t i = 1; i < numbers.size(); ++i) {
        if (numbers[i] <= numbers[i - 1]) {
            throw InvalidName("parts of a completion must be listed in ascending order without repeats (part " +
                              std::to_string(numbers[i]) + " after " + std::to_string(numbers[i - 1]) + ")");
        }
    }
    Selection out;
    size_t next = 0;
    for (size_t i = 0; i < numbers.size(); ++i) {
        while (next < parts.size() && parts[next].number < numbers[i]) {
            out.unused.insert(out.unused.end(), parts[next].chunks.begin(), parts[next].chunks.end());
            ++next;
        }
        if (next == parts.size() || parts[next].number != numbers[i]) {
            throw InvalidName("part " + std::to_string(numbers[i]) + " of " + what + " was never uploaded");
        }
        const PartRow& p = parts[next++];
        if (i + 1 < numbers.size() && p.size < kMinPartSize) {
            throw InvalidName("part " + std::to_string(p.number) + " is " + std::to_string(p.size) +
                              " bytes: every part but the last must be at least 5 MiB (S3's EntityTooSmall)");
        }
        out.md5s += unhex(p.md5);
        out.size += p.size;
        out.chunks.insert(out.chunks.end(), p.chunks.begin(), p.chunks.end());
    }
    for (; next < parts.size(); ++next) {
        out.unused.insert(out.unused.end(), parts[next].chunks.begin(), parts[next].chunks.end());
    }
    out.count = numbers.size();
    return out;
}

bool same_chunks(const std::vector<ChunkRef>& a, const std::vector<ChunkRef>& b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](const ChunkRef& x, const ChunkRef& y) {
               return x.sha256 == y.sha256 && x.size == y.size;
           });
}

std::string unhex(const std::string& hex) {
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    return out;
}

}  // namespace

std::string ObjectStore::create_upload(const std::string& bucket, const std::string& key, const PutOptions& options) {
    check_key(key);
    // Checked now: the completion copies them into the manifest.
    check_metadata(options.metadata);
    check_tags(options.tags);
    ensure_bucket(bucket);
    std::string upload_id;
    {
        // An id unique enough to be a name: the same form as version ids.
        upload_id = std::to_string(unix_now_ms());
        static thread_local std::mt19937_64 random(std::random_device{}());
        char buf[24];
        std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(random()));
        upload_id += buf;
    }
    begin_upload_row(object_path(bucket, key), upload_id, "multipart", bucket, key, options);
    return upload_id;
}

PartInfo ObjectStore::put_part(const std::string& bucket, const std::string& key, const std::string& upload_id,
                               int part_number, Source& source, Transfer* progress) {
    check_bucket_name(bucket);
    check_key(key);
    if (part_number < 1 || part_number > kMaxPartNumber) {
        throw InvalidName("part number " + std::to_string(part_number) + " is outside 1 to " +
                          std::to_string(kMaxPartNumber));
    }
    std::string object = object_path(bucket, key);
    bool exists = store_->with_bucket(hash_of_text(object), [&](std::shared_ptr<BucketFile>& file) {
        return find_upload(file, object, upload_id).has_value();
    });
    if (!exists) throw NotFound(describe(bucket, key, upload_id) + " does not exist (completed or aborted?)");
    Stream stream;
    stream.whole_sha = false;
    std::vector<ChunkRef> chunks = write_chunks(stream, source, progress, object, upload_id);
    PartInfo info{part_number, stream.size, to_hex(stream.md5.finish())};
    std::vector<ChunkRef> replaced;
    try {
        in_transaction([&] {
            auto file = store_->writable(hash_of_text(object));
            if (!find_upload(file, object, upload_id)) {
                throw NotFound(describe(bucket, key, upload_id) + " was completed or aborted during the part's upload");
            }
            for (PartRow& old : load_parts(file, object, upload_id)) {
                if (old.number == part_number) replaced = std::move(old.chunks);
            }
            StatementLease add(file, std::string("INSERT OR REPLACE INTO ") + kPartsTable +
                                         "(object, upload_id, part_number, size, md5, created, chunks) VALUES "
                                         "(?1, ?2, ?3, ?4, ?5, ?6, ?7)");
            add->bind(1, object);
            add->bind(2, upload_id);
            add->bind(3, int64_t{part_number});
            add->bind(4, info.size);
            add->bind(5, info.etag);
            add->bind(6, unix_now_ms());
            std::string list = encode_chunk_list(chunks);
            add->bind_blob(7, list.data(), static_cast<int>(list.size()));
            add.step("recording a part");
            add.reset();
            if (replaced.empty()) file->add_records(1);
        });
    } catch (...) {
        try {
            chunks_.release(chunks);
        } catch (...) {
        }
        throw;
    }
    chunks_.release(replaced);
    return info;
}

ObjectVersion ObjectStore::complete_upload(const std::string& bucket, const std::string& key,
                                           const std::string& upload_id, const std::vector<int>& wanted) {
    check_bucket_name(bucket);
    check_key(key);
    std::string object = object_path(bucket, key);
    std::string what = describe(bucket, key, upload_id);
    Versioning state = versioning(bucket);
    // The object's SHA-256 is computed from its parts' chunks, read (and
    // verified) one at a time before the completion's transaction: parts may
    // have come in any order, so no digest of the whole could run as they
    // arrived. A part replaced meanwhile changes the chunk list: then again.
    constexpr int kAttempts = 3;
    for (int attempt = 1;; ++attempt) {
        std::vector<ChunkRef> hashed = store_->with_bucket(hash_of_text(object), [&](std::shared_ptr<BucketFile>& file) {
            if (!find_upload(file, object, upload_id)) throw NotFound(what + " does not exist (completed or aborted?)");
            return select_parts(load_parts(file, object, upload_id), wanted, what).chunks;
        });
        Digest sha(Digest::Kind::kSha256);
        std::vector<uint8_t> buffer;
        for (size_t i = 0; i < hashed.size(); ++i) {
            chunks_.read(hashed[i], buffer,
                         "chunk " + std::to_string(i) + " of " + what);
            sha.update(buffer.data(), buffer.size());
        }
        std::string sha256 = to_hex(sha.finish());
        std::vector<ChunkRef> unused, replaced;
        ObjectVersion v;
        bool changed = false;
        in_transaction([&] {
            auto file = store_->writable(hash_of_text(object));
            std::optional<UploadRow> upload = find_upload(file, object, upload_id);
            if (!upload) throw NotFound(what + " does not exist (completed or aborted?)");
            Selection chosen = select_parts(load_parts(file, object, upload_id), wanted, what);
            if (!same_chunks(chosen.chunks, hashed)) {
                changed = true;  // nothing written: the transaction is committed empty
                return;
            }
            Md5 combined = md5_of(chosen.md5s.data(), chosen.md5s.size());
            v.etag = to_hex(combined) + "-" + std::to_string(chosen.count);
            v.sha256 = sha256;
            v.size = chosen.size;
            v.chunks = std::move(chosen.chunks);
            unused = std::move(chosen.unused);
            v.bucket = bucket;
            v.key = key;
            v.content_type = upload->content_type;
            v.metadata = upload->metadata;
            v.tags = upload->tags;
            v.chunk_count = static_cast<int64_t>(v.chunks.size());
            install_version_locked(file, v, state, upload_id, replaced);
        });
        if (changed) {
            if (attempt < kAttempts) continue;
            throw sqlite::Error(SQLITE_BUSY, "parts of " + what + " kept being replaced while it was completed (" +
                                                 std::to_string(kAttempts) + " attempts): complete it again");
        }
        unused.insert(unused.end(), replaced.begin(), replaced.end());
        chunks_.release(unused);
        return v;
    }
}

void ObjectStore::abort_upload(const std::string& bucket, const std::string& key, const std::string& upload_id) {
    check_bucket_name(bucket);
    check_key(key);
    std::string object = object_path(bucket, key);
    std::vector<ChunkRef> freed;
    in_transaction([&] {
        auto file = store_->writable(hash_of_text(object));
        if (!find_upload(file, object, upload_id)) {
            throw NotFound(describe(bucket, key, upload_id) + " does not exist (completed or aborted?)");
        }
        for (PartRow& p : load_parts(file, object, upload_id)) freed.insert(freed.end(), p.chunks.begin(), p.chunks.end());
        StatementLease parts(file, std::string("DELETE FROM ") + kPartsTable + " WHERE object = ?1 AND upload_id = ?2");
        parts->bind(1, object);
        parts->bind(2, upload_id);
        parts.step("removing parts");
        parts.reset();
        file->add_records(-sqlite3_changes(file->db().get()));
        StatementLease up(file, std::string("DELETE FROM ") + kUploadsTable + " WHERE object = ?1 AND upload_id = ?2");
        up->bind(1, object);
        up->bind(2, upload_id);
        up.step("removing an upload");
        up.reset();
        file->add_records(-1);
    });
    chunks_.release(freed);
}

}  // namespace aerials::files
