// The collector: lifecycle rules, dead uploads, and unreferenced chunks.
//
// Reference counts can only be too high after a crash (chunks.h), so the
// collector recounts from the manifests and parts: mark (count every
// reference), then sweep each bucket file's chunks in one write transaction.
// Chunks touched after the cutoff are left alone: a writer still running may
// hold references that no manifest shows yet. The cutoff is taken before the
// mark, and no later than the start of the oldest upload still in progress,
// so a completion or a put that commits during the mark cannot lose a chunk.
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "files/clock.h"
#include "files/object_store.h"
#include "files/schema.h"

namespace aerials::files {

using store::BucketFile;
using store::StatementLease;

namespace {

struct Rule {
    std::string prefix;
    int64_t expiration_days = -1;
    int64_t noncurrent_days = -1;
    int64_t abort_incomplete_days = -1;
};

std::vector<Rule> parse_rules(const std::string& json_text) {
    std::vector<Rule> rules;
    for (const auto& r : nlohmann::json::parse(json_text)) {
        Rule rule;
        rule.prefix = r.value("prefix", "");
        rule.expiration_days = r.value("expiration_days", int64_t{-1});
        rule.noncurrent_days = r.value("noncurrent_days", int64_t{-1});
        rule.abort_incomplete_days = r.value("abort_incomplete_days", int64_t{-1});
        rules.push_back(rule);
    }
    return rules;
}

struct ShaHash {
    size_t operator()(const std::string& s) const {
        size_t h;
        std::memcpy(&h, s.data(), sizeof h);  // already uniformly distributed
        return h;
    }
};

}  // namespace

CollectReport ObjectStore::collect(int64_t now, int64_t grace_ms) {
    CollectReport report;

    // 1. Lifecycle rules of every object bucket.
    std::vector<std::pair<std::string, std::string>> buckets_with_rules;
    for_each_bucket_file([&](std::shared_ptr<BucketFile>& file) {
        StatementLease rows(file, std::string("SELECT name, lifecycle FROM ") + kBucketsTable +
                                      " WHERE lifecycle IS NOT NULL");
        while (rows.step("reading lifecycle rules")) buckets_with_rules.emplace_back(rows->column_text(0), rows->column_text(1));
    });
    const std::string prefix_match = "substr(key, 1, length(?2)) = ?2";
    for (const auto& [bucket, rules_json] : buckets_with_rules) {
        for (const Rule& rule : parse_rules(rules_json)) {
            if (rule.expiration_days >= 0) {
                ListFilter filter{"bucket = ?1 AND " + prefix_match + " AND created <= CAST(?3 AS INTEGER)",
                                  {bucket, rule.prefix, std::to_string(now - rule.expiration_days * kDayMs)}, false};
                for (const ObjectVersion& v : list(filter)) {
                    remove(v.bucket, v.key);
                    ++report.expired_current;
                }
            }
            if (rule.noncurrent_days >= 0) {
                ListFilter filter{"bucket = ?1 AND " + prefix_match +
                                      " AND is_latest = 0 AND noncurrent_since <= CAST(?3 AS INTEGER)",
                                  {bucket, rule.prefix, std::to_string(now - rule.noncurrent_days * kDayMs)}, true};
                for (const ObjectVersion& v : list(filter)) {
                    remove(v.bucket, v.key, v.version_id);
                    ++report.expired_noncurrent;
                }
            }
            if (rule.abort_incomplete_days >= 0) {
                std::vector<std::pair<std::string, std::string>> stale;  // key, upload id
                int64_t before = now - rule.abort_incomplete_days * kDayMs;
                for_each_bucket_file([&](std::shared_ptr<BucketFile>& file) {
                    StatementLease rows(file, std::string("SELECT key, upload_id FROM ") + kUploadsTable +
                                                  " WHERE kind = 'multipart' AND bucket = ?1 AND " + prefix_match +
                                                  " AND created <= ?3");
                    rows->bind(1, bucket);
                    rows->bind(2, rule.prefix);
                    rows->bind(3, before);
                    while (rows.step("reading uploads")) stale.emplace_back(rows->column_text(0), rows->column_text(1));
                });
                for (const auto& [key, upload_id] : stale) {
                    try {
                        abort_upload(bucket, key, upload_id);
                        ++report.aborted_uploads;
                    } catch (const NotFound&) {
                    }
                }
            }
        }
    }

    // 2. Single puts whose writer stopped heartbeating: it crashed.
    int64_t cutoff = now - grace_ms;
    for_each_bucket_file([&](std::shared_ptr<BucketFile>& file) {
        store::BucketId id = file->id();
        in_transaction([&] {
            auto writable = store_->writable(id.lo());
            if (writable->id().depth != id.depth || writable->id().prefix != id.prefix) return;
            StatementLease drop(writable, std::string("DELETE FROM ") + kUploadsTable +
                                              " WHERE kind = 'put' AND touched < ?1");
            drop->bind(1, cutoff);
            drop.step("removing dead uploads");
            drop.reset();
            int n = sqlite3_changes(writable->db().get());
            writable->add_records(-n);
            report.dead_uploads += n;
        });
    });

    // 3. Mark: the cutoff first, then every reference.
    for_each_bucket_file([&](std::shared_ptr<BucketFile>& file) {
        StatementLease oldest(file, std::string("SELECT min(created) FROM ") + kUploadsTable);
        if (oldest.step("reading uploads") && oldest->column_type(0) != SQLITE_NULL) {
            cutoff = std::min(cutoff, oldest->column_int(0) - 1);
        }
    });
    std::unordered_map<std::string, int64_t, ShaHash> refs;
    auto count_list = [&](sqlite::Statement& rows, const std::string& what) {
        for (const ChunkRef& c : chunk_list_column(rows, 0, what)) {
            ++refs[std::string(reinterpret_cast<const char*>(c.sha256.data()), c.sha256.size())];
        }
    };
    for_each_bucket_file([&](std::shared_ptr<BucketFile>& file) {
        std::unordered_map<std::string, int64_t, ShaHash> local;
        std::swap(local, refs);
        try {
            for (const char* table : {kObjectsTable, kPartsTable}) {
                StatementLease rows(file, std::string("SELECT chunks, object FROM ") + table + " WHERE chunks IS NOT NULL");
                while (rows.step("reading manifests")) count_list(*rows, rows->column_text(1));
            }
        } catch (...) {
            std::swap(local, refs);  // a retried bucket file must not count twice
            throw;
        }
        for (auto& [sha, n] : refs) local[sha] += n;
        std::swap(local, refs);
    });

    // 4. Sweep.
    for_each_bucket_file([&](std::shared_ptr<BucketFile>& file) {
        store::BucketId id = file->id();
        in_transaction([&] {
            auto writable = store_->writable(id.lo());
            if (writable->id().depth != id.depth || writable->id().prefix != id.prefix) return;
            std::vector<std::pair<int64_t, int64_t>> fix;  // rowid, refs (0: remove)
            StatementLease rows(writable, std::string("SELECT rowid, sha256, refs, size FROM ") + kChunksTable +
                                              " WHERE touched < ?1");
            rows->bind(1, cutoff);
            int64_t bytes = 0;
            while (rows.step("reading chunks")) {
                std::string sha(static_cast<const char*>(sqlite3_column_blob(rows->get(), 1)),
                                static_cast<size_t>(sqlite3_column_bytes(rows->get(), 1)));
                auto found = refs.find(sha);
                int64_t counted = found == refs.end() ? 0 : found->second;
                if (counted != rows->column_int(2)) {
                    fix.emplace_back(rows->column_int(0), counted);
                    if (counted == 0) bytes += rows->column_int(3);
                }
            }
            rows.reset();
            for (const auto& [rowid, counted] : fix) {
                StatementLease change(writable, counted == 0
                                                    ? std::string("DELETE FROM ") + kChunksTable + " WHERE rowid = ?1"
                                                    : std::string("UPDATE ") + kChunksTable +
                                                          " SET refs = ?2 WHERE rowid = ?1");
                change->bind(1, rowid);
                if (counted != 0) change->bind(2, counted);
                change.step("recounting a chunk");
                change.reset();
                if (counted == 0) {
                    writable->add_records(-1);
                    ++report.chunks_removed;
                } else {
                    ++report.refs_fixed;
                }
            }
            report.bytes_removed += bytes;
        });
    });
    return report;
}

}  // namespace aerials::files
