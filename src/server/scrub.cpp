#include "server/scrub.h"

#include "server/catch_up.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <filesystem>
#include <shared_mutex>

#include "cluster/cluster_map.h"
#include "cluster/slots.h"
#include "cluster/wire_values.h"
#include "server/http_api.h"
#include "sqlite/database.h"
#include "store/bucket_repair.h"
#include "store/catalog.h"

namespace aerials::server {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A log line with its time (Unix ms), so that tests can time detection.
void event(json line) {
    line["ts"] = now_ms();
    log_line(line);
}

int64_t ms_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
}

store::StoreOptions catalog_options(const std::string& root) {
    store::StoreOptions options;
    options.root = root;
    options.create_if_missing = false;
    return options;
}

// A replica of `slot` other than `me` to copy it from: its primary, or else
// any other replica in state write. Null when there is none.
const cluster::NodeEntry* restore_source(const cluster::ClusterMap& map, uint32_t slot, const std::string& me) {
    const cluster::NodeEntry* primary = map.primary_of(slot);
    if (primary && primary->id != me) return primary;
    for (const cluster::NodeEntry* replica : map.replicas_of(slot)) {
        if (replica->id != me && replica->state == cluster::NodeState::kWrite) return replica;
    }
    return nullptr;
}

// A WAL with frames, last written over a second ago (a stat: no descriptor).
bool wal_is_quiet(const std::string& wal) {
    std::error_code ec;
    if (fs::file_size(wal, ec) == 0 || ec) return false;
    auto written = fs::last_write_time(wal, ec);
    if (ec) return false;
    return fs::file_time_type::clock::now() - written > std::chrono::seconds(1);
}

bool listed(const std::string& root, const store::BucketId& id) {
    store::Catalog catalog(catalog_options(root));
    return catalog.lists(id);
}

}  // namespace

Scrubber::Scrubber(NodeContext& node) : node_(node) {}

Scrubber::~Scrubber() { stop(); }

void Scrubber::start() {
    if (node_.config.scrub_interval_ms <= 0 || thread_.joinable()) return;
    thread_ = std::thread([this] { run(); });
}

void Scrubber::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

bool Scrubber::pause(int64_t ms) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (ms > 0) wake_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return stopping_; });
    return !stopping_;
}

void Scrubber::run() {
    while (pause(node_.config.scrub_interval_ms)) {
        try {
            round();
        } catch (const std::exception& e) {
            event({{"event", "scrub_failed"}, {"node", node_.cluster.node_id()}, {"error", e.what()}});
        }
    }
}

void Scrubber::round() {
    if (!node_.cluster.ready()) return;
    auto start = std::chrono::steady_clock::now();
    std::vector<store::BucketId> buckets;
    {
        store::Catalog catalog(catalog_options(node_.store.root()));
        buckets = catalog.load_buckets();
    }
    int64_t pages = 0, damaged = 0;
    for (const store::BucketId& id : buckets) {
        if (!pause(0)) return;
        Check check = check_bucket(id);
        node_.metrics.count_scrub("checked");
        pages += check.pages;
        json last{{"at", now_ms()}, {"result", check.ok ? "ok" : check.problem}, {"pages", check.pages}};
        if (check.ok) {
            if (check.page_size > 0) page_size_ = check.page_size;
            // A restored bucket keeps saying so (and when) until it is damaged again.
            std::string state = states_[id.name()];
            if (state.rfind("restored at ", 0) != 0) state = "ok";
            states_[id.name()] = state;
            node_.store.note_scrub(id.name(), state, last);
        } else if (listed(node_.store.root(), id)) {  // else split away during the round: its file went with it
            ++damaged;
            last_check_ = last;
            try {
                repair(id, check);
            } catch (const std::exception& e) {
                event({{"event", "bucket_restore_failed"}, {"node", node_.cluster.node_id()}, {"bucket", id.name()},
                       {"error", e.what()}});
            }
        }
        // The rate limit: the pages read so far, at --scrub-pages-per-s.
        unpaid_pages_ += check.pages;
        int64_t owed_ms = unpaid_pages_ * 1000 / std::max(1, node_.config.scrub_pages_per_s);
        if (owed_ms > 0) {
            unpaid_pages_ -= owed_ms * std::max(1, node_.config.scrub_pages_per_s) / 1000;
            if (!pause(owed_ms)) return;
        }
    }
    std::optional<cluster::ClusterMap> map = node_.cluster.map();
    // Rows of a damaged file may read wrong without an error: no comparison
    // (nor a copy into it) until every bucket is whole again.
    if (map && map->replication > 1 && !node_.store.has_damaged_buckets()) {
        try {
            compare_replicas(*map);
        } catch (const std::exception& e) {
            event({{"event", "replica_compare_failed"}, {"node", node_.cluster.node_id()}, {"error", e.what()}});
        }
    }
    ++rounds_;
    event({{"event", "scrub_round"}, {"node", node_.cluster.node_id()}, {"round", rounds_},
              {"buckets", buckets.size()}, {"pages", pages}, {"damaged", damaged}, {"ms", ms_since(start)}});
}

Scrubber::Check Scrubber::check_bucket(const store::BucketId& id) {
    Check check;
    fs::path path = fs::path(node_.store.root()) / id.relative_path();
    std::error_code ec;
    if (!fs::exists(path, ec)) {
        check.ok = false;
        check.problem = "bucket file '" + path.string() + "' is listed in the catalog but missing";
        return check;
    }
    try {
        // A connection of the scrub's own, through SQLite: never a descriptor
        // of ours on the file (closing it would drop the workers' locks).
        sqlite::Database db(path.string(), SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
        sqlite3_busy_timeout(db.get(), 50);
        // Pages newer in the WAL would be read from there: move them into the
        // file and empty the WAL first, so that the check reads the file
        // itself. Only in a bucket no one wrote for a while (the checkpoint
        // holds its write lock), and waiting briefly: a reader in the way only
        // makes this round's check less thorough.
        if (wal_is_quiet(path.string() + "-wal")) {
            // A connection knows the file is in WAL mode once it read it: until
            // then a checkpoint is a no-op.
            db.query_int("PRAGMA schema_version");
            sqlite3_wal_checkpoint_v2(db.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
        }
        check.page_size = static_cast<int>(db.query_int("PRAGMA page_size"));
        check.pages = db.query_int("PRAGMA page_count");
        sqlite::Statement quick = db.prepare("PRAGMA quick_check(10)");
        std::string problems;
        while (quick.step()) {
            std::string line = quick.column_text(0);
            if (line == "ok") continue;
            problems += (problems.empty() ? "" : "; ") + line;
        }
        if (!problems.empty()) {
            check.ok = false;
            check.problem = "quick_check of '" + path.string() + "': " + problems;
        }
    } catch (const std::exception& e) {
        check.ok = false;
        std::string what = e.what();
        check.problem = what.find(path.string()) == std::string::npos ? "'" + path.string() + "': " + what : what;
    }
    return check;
}

void Scrubber::repair(const store::BucketId& id, const Check& check) {
    auto start = std::chrono::steady_clock::now();
    const std::string me = node_.cluster.node_id();
    const std::string name = id.name();
    const std::string path = (fs::path(node_.store.root()) / id.relative_path()).string();
    // A bucket that stays damaged (no replica to restore from) is tried
    // again every round, but logged once per new finding.
    const std::string before = states_[name];
    auto set_state = [&](const std::string& state) {
        states_[name] = state;
        node_.store.note_scrub(name, state, last_check_);
    };
    auto failed = [&](const std::string& why) {
        std::string state = "damaged: " + why;
        if (state != before) {
            event({{"event", "bucket_restore_failed"}, {"node", me}, {"bucket", name}, {"path", path}, {"error", why}});
        }
        set_state(state);
    };
    if (before.rfind("damaged", 0) != 0 && before.rfind("quarantined", 0) != 0) {
        node_.metrics.count_scrub("damaged");
        event({{"event", "bucket_damaged"}, {"node", me}, {"bucket", name}, {"path", path}, {"error", check.problem},
               {"pages", check.pages}});
        set_state("damaged: " + check.problem);
    }

    std::optional<cluster::ClusterMap> map = node_.cluster.map();
    if (!map) return;
    if (map->replication < 2) return failed("no replica to restore from (the cluster has replication 1)");
    // Where each slot of the bucket this node holds comes back from.
    std::map<std::string, SlotRanges> plan;  // by address
    uint32_t first = cluster::slot_of(id.lo(), map->slots), last = cluster::slot_of(id.hi(), map->slots);
    for (uint32_t slot = first; slot <= last; ++slot) {
        if (!map->is_replica(slot, me)) continue;
        const cluster::NodeEntry* source = restore_source(*map, slot, me);
        if (!source) return failed("no other replica of slot " + std::to_string(slot) + " is in state write");
        add_slot(plan[source->peer_address()], slot);
    }

    std::vector<store::Collection> collections;
    {
        store::Catalog catalog(catalog_options(node_.store.root()));
        if (!catalog.lists(id)) return;  // split away meanwhile: no longer this node's to repair
        collections = catalog.load_collections();
    }
    // No write reaches this node until the bucket is back: none may land in
    // the damaged file, and none may fall between the image and the new file.
    // Every local write needs a session, so holding the store exclusively
    // (every session dropped, new ones waiting) is that gate. The write gate
    // itself is not taken: the key-value writes take it after their session
    // (replicated_write) and the replica endpoints before theirs, so closing
    // it while sessions are held back would deadlock with one of the two.
    std::optional<LocalStore::Exclusive> exclusive = node_.store.exclusive(std::chrono::seconds(10));
    if (!exclusive) return failed("restore postponed: requests kept sessions busy for 10 s");
    std::vector<KvRow> rows;
    json sources = json::array();
    try {
        std::string trace = "scrub-" + random_hex(8);
        for (const auto& [address, ranges] : plan) {
            std::vector<KvRow> image = fetch_image(node_.peers, address, ranges, map->epoch, trace);
            sources.push_back({{"node", address}, {"ranges", slot_ranges_to_json(ranges)}, {"rows", image.size()}});
            for (KvRow& row : image) rows.push_back(std::move(row));
        }
    } catch (const std::exception& e) {
        return failed(std::string("restore postponed: ") + e.what());
    }
    fs::path quarantine;
    try {
        quarantine = store::quarantine_bucket_files(node_.store.root(), id);
    } catch (const std::exception& e) {
        return failed(e.what());
    }
    node_.metrics.count_scrub("quarantined");
    event({{"event", "bucket_quarantined"}, {"node", me}, {"bucket", name}, {"path", path},
              {"quarantine", quarantine.string()}});
    set_state("quarantined");
    int64_t records = 0;
    try {
        sqlite::Database scratch(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX);
        sqlite::Statement values = scratch.prepare("SELECT ?1, ?2, ?3");
        records = store::rebuild_bucket_file(node_.store.root(), id, collections, page_size_, [&](store::BucketBuilder& b) {
            for (const KvRow& row : rows) {
                for (int i = 0; i < 3; ++i) cluster::bind_value(values.get(), i + 1, row[static_cast<size_t>(i)]);
                values.step();
                // The image holds whole slots; the bucket may cover less.
                if (id.owns(store::hash_key_as(values.column_value(0), 'b'))) {
                    b.insert(values.column_value(0), values.column_value(1), values.column_value(2));
                }
                values.reset();
            }
        });
    } catch (const std::exception& e) {
        set_state("quarantined: restore failed: " + std::string(e.what()));
        event({{"event", "bucket_restore_failed"}, {"node", me}, {"bucket", name}, {"path", path}, {"error", e.what()}});
        return;
    }
    int64_t at = now_ms();
    set_state("restored at " + std::to_string(at));
    node_.metrics.count_scrub("restored");
    event({{"event", "bucket_restored"}, {"node", me}, {"bucket", name}, {"path", path}, {"records", records},
              {"sources", sources}, {"quarantine", quarantine.string()}, {"ms", ms_since(start)}});
}

void Scrubber::compare_replicas(const cluster::ClusterMap& map) {
    const std::string me = node_.cluster.node_id();
    // A node catching up (state read) or failed over is behind by design:
    // its catch-up, not the scrub, brings it level.
    const cluster::NodeEntry* self = map.node(me);
    if (!self || self->state != cluster::NodeState::kWrite) return;
    std::string trace = "scrub-" + random_hex(8);
    // The slots this node is a secondary of, by primary.
    for (const auto& [primary_id, ranges] : ranges_by_primary(map, me)) {
        const cluster::NodeEntry* primary = map.node(primary_id);
        std::string body = cluster::encode_msgpack({{"ranges", slot_ranges_to_json(ranges)}});
        PeerReply reply = node_.peers.post(primary->peer_address(), "/v1/replica/digest", body, "application/msgpack", trace,
                                           std::to_string(map.epoch));
        if (reply.status != 200) {
            event({{"event", "replica_compare_failed"}, {"node", me}, {"primary", primary->address},
                      {"status", reply.status}, {"error", reply.status ? reply.body.substr(0, 300) : reply.error}});
            continue;
        }
        json remote = cluster::decode_msgpack_body(reply.body);
        std::string remote_hex = remote.value("digest", std::string());
        int64_t remote_rows = remote.value("rows", int64_t{-1});
        KvDigest local = kv_digest(*node_.store.session(), ranges, map.slots);
        if (local.hex == remote_hex) {
            last_difference_.erase(primary_id);
            continue;
        }
        // A write between the two digests differs once; a divergence stays.
        std::pair<std::string, std::string> difference{local.hex, remote_hex};
        auto seen = last_difference_.find(primary_id);
        if (seen == last_difference_.end() || seen->second != difference) {
            last_difference_[primary_id] = difference;
            continue;
        }
        last_difference_.erase(primary_id);
        auto start = std::chrono::steady_clock::now();
        // The catch-up's copy: records that replicated writes change while it
        // runs keep the newer value.
        CatchUp::CopyCounts counts = node_.catch_up->copy_slots(primary->peer_address(), ranges, map, trace);
        node_.metrics.count_scrub("diverged");
        event({{"event", "replica_diverged"}, {"node", me}, {"primary", primary->address},
                  {"ranges", slot_ranges_to_json(ranges)}, {"local_rows", local.rows}, {"primary_rows", remote_rows},
                  {"local_digest", local.hex}, {"primary_digest", remote_hex}, {"deleted", counts.deleted},
                  {"upserted", counts.written}, {"ms", ms_since(start)}});
    }
}

}  // namespace aerials::server
