#include "files/chunks.h"

#include "files/schema.h"

namespace aerials::files {

using store::BucketFile;
using store::StatementLease;

namespace {

// Holds an sqlite3_blob and closes it on every path.
class BlobHandle {
public:
    ~BlobHandle() {
        if (blob_) sqlite3_blob_close(blob_);
    }
    sqlite3_blob** out() { return &blob_; }
    sqlite3_blob* get() const { return blob_; }

private:
    sqlite3_blob* blob_ = nullptr;
};

std::string short_hex(const Sha256& sha) { return to_hex(sha); }

}  // namespace

std::vector<ChunkRef> chunk_list_column(sqlite::Statement& row, int column, const std::string& object) {
    if (row.column_type(column) != SQLITE_BLOB) return {};
    auto* data = static_cast<const char*>(sqlite3_column_blob(row.get(), column));
    return decode_chunk_list({data, static_cast<size_t>(sqlite3_column_bytes(row.get(), column))}, object);
}

std::shared_ptr<BucketFile> ChunkStore::add_ref(const Sha256& sha256, const uint8_t* data, int64_t size, int64_t now) {
    std::shared_ptr<BucketFile> file = store_.writable(hash_of_blob(sha256.data(), sha256.size()));
    StatementLease touch(file, std::string("UPDATE ") + kChunksTable + " SET refs = refs + 1, touched = ?2 WHERE sha256 = ?1");
    touch->bind_blob(1, sha256.data(), static_cast<int>(sha256.size()));
    touch->bind(2, now);
    touch.step("adding a reference to a chunk");
    touch->reset();
    if (sqlite3_changes(file->db().get()) > 0) return file;
    // The bytes are bound without a copy (the row is written from our buffer
    // straight into pages); a zeroblob followed by sqlite3_blob_write would
    // write every page twice once the chunk outgrows the page cache.
    StatementLease insert(file, std::string("INSERT INTO ") + kChunksTable +
                                    "(sha256, size, refs, touched, data) VALUES (?1, ?2, 1, ?3, ?4)");
    insert->bind_blob(1, sha256.data(), static_cast<int>(sha256.size()));
    insert->bind(2, size);
    insert->bind(3, now);
    if (sqlite3_bind_blob64(insert->get(), 4, data ? static_cast<const void*>(data) : "", static_cast<sqlite3_uint64>(size),
                            SQLITE_STATIC) != SQLITE_OK) {
        throw sqlite::Error(SQLITE_TOOBIG, "chunk of " + std::to_string(size) + " bytes is too large for SQLite");
    }
    insert.step("storing a chunk");
    file->add_records(1);
    return file;
}

std::string ChunkStore::read_raw(const ChunkRef& chunk, std::vector<uint8_t>& out, const std::string& context) {
    return store_.with_bucket(hash_of_blob(chunk.sha256.data(), chunk.sha256.size()),
                              [&](std::shared_ptr<BucketFile>& file) {
        StatementLease find(file, std::string("SELECT rowid, size FROM ") + kChunksTable + " WHERE sha256 = ?1");
        find->bind_blob(1, chunk.sha256.data(), static_cast<int>(chunk.sha256.size()));
        if (!find.step("looking up a chunk")) {
            throw ChunkDamaged(context + " (sha256 " + short_hex(chunk.sha256) + ") is missing from bucket file '" +
                               file->path() + "'");
        }
        int64_t rowid = find->column_int(0);
        int64_t size = find->column_int(1);
        find->reset();
        if (size != chunk.size) {
            throw ChunkDamaged(context + " (sha256 " + short_hex(chunk.sha256) + ") in bucket file '" + file->path() +
                               "' is damaged: it records " + std::to_string(size) + " bytes, the manifest " +
                               std::to_string(chunk.size));
        }
        BlobHandle blob;
        sqlite3* db = file->db().get();
        if (sqlite3_blob_open(db, "main", kChunksTable, "data", rowid, 0, blob.out()) != SQLITE_OK) {
            file->rethrow(sqlite::Error(sqlite3_extended_errcode(db), sqlite3_errmsg(db)), "opening a chunk");
        }
        int bytes = sqlite3_blob_bytes(blob.get());
        if (bytes != size) {
            throw ChunkDamaged(context + " (sha256 " + short_hex(chunk.sha256) + ") in bucket file '" + file->path() +
                               "' is damaged: it holds " + std::to_string(bytes) + " bytes, the manifest says " +
                               std::to_string(size));
        }
        out.resize(static_cast<size_t>(size));
        if (size > 0) {
            int rc = sqlite3_blob_read(blob.get(), out.data(), bytes, 0);
            if (rc != SQLITE_OK) {
                throw ChunkDamaged(context + " (sha256 " + short_hex(chunk.sha256) + ") in bucket file '" +
                                   file->path() + "' cannot be read: " + sqlite3_errstr(rc));
            }
        }
        // A chunk is read once per get: its pages need not stay cached.
        file->release_cache();
        return file->path();
    });
}

void ChunkStore::verify(const ChunkRef& chunk, const std::vector<uint8_t>& data, const std::string& context,
                        const std::string& bucket_path) {
    Sha256 actual = sha256_of(data.data(), data.size());
    if (actual != chunk.sha256) {
        throw ChunkDamaged(context + " (sha256 " + short_hex(chunk.sha256) + ") in bucket file '" + bucket_path +
                           "' is damaged: its bytes hash to " + short_hex(actual));
    }
}

void ChunkStore::release(const std::vector<ChunkRef>& chunks) {
    if (chunks.empty()) return;
    try {
        for (const ChunkRef& chunk : chunks) {
            std::shared_ptr<BucketFile> file = store_.writable(hash_of_blob(chunk.sha256.data(), chunk.sha256.size()));
            StatementLease drop(file, std::string("UPDATE ") + kChunksTable + " SET refs = refs - 1 WHERE sha256 = ?1");
            drop->bind_blob(1, chunk.sha256.data(), 32);
            drop.step("dropping a chunk reference");
            drop->reset();
            StatementLease remove(file, std::string("DELETE FROM ") + kChunksTable + " WHERE sha256 = ?1 AND refs <= 0");
            remove->bind_blob(1, chunk.sha256.data(), 32);
            remove.step("removing an unreferenced chunk");
            remove->reset();
            file->add_records(-sqlite3_changes(file->db().get()));
        }
        store_.commit_all();
    } catch (...) {
        store_.rollback_all();
        throw;
    }
}

}  // namespace aerials::files
