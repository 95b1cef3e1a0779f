// The `aerials` module, reading side: connecting, planning, cursors.
//
//   CREATE VIRTUAL TABLE kv USING aerials(root='data');
//       the key-value table: key, subkey (default ''), value
//   CREATE VIRTUAL TABLE orders USING aerials(root='data', shard_key=customer_id,
//       order_id INTEGER, customer_id INTEGER NOT NULL, total REAL,
//       PRIMARY KEY(customer_id, order_id), INDEX(total));
//       a user table: a real table with these definitions in every bucket
//
// Both are declared WITHOUT ROWID with a hidden single-column primary key
// `_pk`, a blob naming the row's bucket and the row in it (SQLite requires a
// single-column key for writable WITHOUT ROWID virtual tables). Writes are in
// table_writes.cpp; plans in query_plan.cpp.
#include "vtab/table_module.h"

#include "vtab/log_view.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "store/key_hash.h"
#include "vtab/cluster_collections.h"
#include "vtab/cluster_scan.h"
#include "vtab/module_args.h"
#include "vtab/table.h"
#include "vtab/value_order.h"

namespace aerials::vtab {

void set_error(sqlite3_vtab* vtab, const std::string& message) {
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = sqlite3_mprintf("%s", message.c_str());
}

namespace {

using store::BucketFile;
using store::BucketId;
using store::StatementLease;

sqlite3_value* make_empty_text(sqlite3* db) {
    sqlite3_stmt* stmt = nullptr;
    sqlite3_prepare_v2(db, "SELECT ''", -1, &stmt, nullptr);
    sqlite3_value* value = nullptr;
    if (stmt && sqlite3_step(stmt) == SQLITE_ROW) value = sqlite3_value_dup(sqlite3_column_value(stmt, 0));
    sqlite3_finalize(stmt);
    if (!value) throw std::bad_alloc();
    return value;
}

// ---------------------------------------------------------------------------
// Connecting

std::string declared_schema(const store::Collection& c) {
    std::string sql = "CREATE TABLE x(";
    if (c.key_value) {
        sql += "key NOT NULL, subkey NOT NULL DEFAULT '', value";
    } else {
        // Type and collation matter to SQLite above the table (comparisons,
        // sorting); constraints and defaults are the buckets' (SQLite drops
        // DEFAULT from virtual table declarations).
        for (const auto& column : c.columns) {
            sql += store::quote_identifier(column.name) + " " + column.type;
            if (column.collation != "BINARY") sql += " COLLATE " + column.collation;
            sql += ", ";
        }
        sql.resize(sql.size() - 2);
    }
    return sql + ", _pk HIDDEN PRIMARY KEY) WITHOUT ROWID";
}

// xCreate and xConnect: parse the arguments, open (or create) the store,
// record or check the collection, declare the schema. The store is created
// only by CREATE VIRTUAL TABLE; reconnecting to a table whose store has gone
// is an error rather than a new empty store.
int connect_common(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out, char** err,
                   bool create) {
    auto context = *static_cast<std::shared_ptr<ConnectionContext>*>(aux);
    try {
        std::vector<std::string> args(argv + 3, argv + argc);
        ModuleArgs parsed = parse_module_args(args);
        parsed.store.create_if_missing = create;
        auto table = std::make_unique<Table>();
        std::memset(static_cast<sqlite3_vtab*>(table.get()), 0, sizeof(sqlite3_vtab));
        table->db = db;
        table->context = context;
        table->name = argv[2];
        if (!parsed.definitions.empty() && parsed.shard_key.empty()) {
            throw std::invalid_argument("argument '" + parsed.definitions.front() +
                                        "' is neither an option (name=value) nor, without shard_key=<column>, "
                                        "part of a table definition");
        }
        if (parsed.definitions.empty()) {
            if (!parsed.shard_key.empty() && parsed.shard_key != "key") {
                throw std::invalid_argument("the key-value table is sharded by key; declare columns to choose "
                                            "another shard_key");
            }
            table->collection = store::key_value_collection();
        } else {
            std::string lower_name = argv[2];
            for (char& c : lower_name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (lower_name.rfind(store::Collection::kFilesPrefix, 0) == 0) {
                throw std::invalid_argument(std::string("table name ") + argv[2] + " is reserved: names starting with " +
                                            store::Collection::kFilesPrefix + " belong to the files layer");
            }
            table->collection = store::define_collection(argv[2], parsed.definitions, parsed.shard_key);
        }
        int rc = sqlite3_declare_vtab(db, declared_schema(table->collection).c_str());
        if (rc != SQLITE_OK) {
            *err = sqlite3_mprintf("aerials: cannot declare table %s: %s", argv[2], sqlite3_errmsg(db));
            return rc;
        }
        // The module opens files named by its arguments: only SQL written by
        // the application itself may use it (not triggers or views from a
        // database file of unknown origin).
        sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
        sqlite3_vtab_config(db, SQLITE_VTAB_CONSTRAINT_SUPPORT, 1);
        if (!parsed.cluster.url.empty()) {
            // The nodes record (or check) the definition, as a local store's
            // catalog does.
            table->cluster = context->cluster_for(parsed.cluster);
            define_on_all_nodes(*table->cluster, table->collection);
        } else {
            table->store = context->store_for(parsed.store);
            if (!table->collection.key_value) table->store->register_collection(table->collection);
        }
        table->empty_text = make_empty_text(db);
        *out = table.release();
        return SQLITE_OK;
    } catch (const std::exception& e) {
        *err = sqlite3_mprintf("aerials: %s", e.what());
        return result_code_of(e);
    }
}

int table_create(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out, char** err) {
    return connect_common(db, aux, argc, argv, out, err, true);
}

int table_connect(sqlite3* db, void* aux, int argc, const char* const* argv, sqlite3_vtab** out, char** err) {
    return connect_common(db, aux, argc, argv, out, err, false);
}

// xDisconnect and xDestroy. DROP TABLE removes the SQL definition only; the
// store's files (and the collection's rows) stay, as dropping a view of data
// should not destroy the data.
int table_disconnect(sqlite3_vtab* vtab) {
    delete static_cast<Table*>(vtab);
    return SQLITE_OK;
}

// ---------------------------------------------------------------------------
// Planning

// xBestIndex: see query_plan.h. The plan is kept by the table; idxNum is its
// index and idxStr its description (what EXPLAIN QUERY PLAN shows).
int table_best_index(sqlite3_vtab* vtab, sqlite3_index_info* info) {
    auto* table = static_cast<Table*>(vtab);
    return guarded(vtab, [&] {
        // A cluster's bucket count is not known here; a full scan costs about
        // as much as one over a large local store.
        size_t buckets = table->store ? table->store->buckets().size() : 1024;
        QueryPlan plan = make_plan(info, table->collection, table->pk_column(), buckets);
        if (table->collection.key_value && plan.route == QueryPlan::Route::kShardEq) {
            for (const PushedTerm& t : plan.terms) {
                if (t.column == 1 && t.op == SQLITE_INDEX_CONSTRAINT_EQ) info->idxFlags |= SQLITE_INDEX_SCAN_UNIQUE;
            }
        }
        std::string key = plan.sql + "\x1f" + plan.description + "\x1f" + std::to_string(plan.columns_used);
        auto found = table->plan_ids.find(key);
        int id;
        if (found != table->plan_ids.end()) {
            id = found->second;
        } else {
            id = static_cast<int>(table->plans.size());
            table->plans.push_back(std::move(plan));
            table->plan_ids[key] = id;
        }
        info->idxNum = id;
        info->idxStr = sqlite3_mprintf("%s", table->plans[static_cast<size_t>(id)].description.c_str());
        info->needToFreeIdxStr = 1;
        return SQLITE_OK;
    });
}

// ---------------------------------------------------------------------------
// Reading

// One bucket's part of a query: the bucket, and the shard value to bind in
// place of the IN list when routing by IN.
struct Target {
    BucketId bucket;
    sqlite3_value* shard = nullptr;  // not owned (points into Cursor::args or the IN list copies)
};

// A running bucket statement.
struct Stream {
    store::ReadSnapshot snapshot;  // declared first: outlives the statement
    StatementLease rows;
    bool has_row = false;
    void close() {
        rows.reset();
        snapshot.reset();
    }
};

// How a cursor reads its buckets. One bucket: on the calling thread, straight
// from the bucket's statement. Several: the statements are prepared and
// started (settled snapshot, bindings) on the calling thread, on the store's
// own bucket connections, and stepped by the store's worker threads, which
// hand rows back in bounded batches. The connections being the store's, a
// write transaction's own changes are read (there is no second connection
// that could miss them), and no bucket costs a second open file.
enum class Mode {
    kSequential,  // targets one after another on the calling thread
    kParallel,    // up to `window` targets at once on the workers, rows as they come
    kMerged,      // every target at once on the workers, merged by the plan's ORDER BY
};

struct Cursor : sqlite3_vtab_cursor {
    Table* table() const { return static_cast<Table*>(pVtab); }

    const QueryPlan* plan = nullptr;
    Mode mode = Mode::kSequential;
    std::vector<sqlite3_value*> args;       // owned copies of xFilter's argv
    std::vector<sqlite3_value*> in_values;  // owned copies of the IN list
    std::vector<Target> targets;
    size_t next_target = 0;                 // next target to start
    std::vector<Stream> streams;            // sequential: one; parallel: one per task (its borrowed statement)
    int64_t remaining = -1;                 // rows still wanted when LIMIT was pushed
    int64_t bucket_limit = -1;              // LIMIT + OFFSET, or -1: what each bucket returns at most
    bool eof = true;
    bool registered_scan = false;           // counted in Store::scan_started()

    // A cluster table's query (all other members are for local stores).
    std::unique_ptr<ClusterScan> remote;

    // Parallel and merged reads.
    std::shared_ptr<store::ParallelQuery> query;
    size_t window = 1;                      // parallel: targets read at once
    size_t running = 0;                     // parallel: tasks started and not yet finished
    store::RowBatch batch;                  // parallel: the batch holding the current row
    size_t batch_row = 0;
    std::vector<store::RowBatch> batches;   // merged: each task's batch holding its current row
    std::vector<size_t> batch_rows;
    std::vector<size_t> task_targets;       // parallel and merged: each task's target
    std::vector<size_t> heap;               // merged: task indexes, best on top
    size_t current = 0;                     // merged: the task whose row is current

    // Marks the cursor finished: the workers stop, its files go back to the LRU.
    void finish() {
        remote.reset();
        if (!table()->store) {
            eof = true;
            return;
        }
        stop_workers();
        streams.clear();
        heap.clear();
        batch = store::RowBatch{};
        batches.clear();
        batch_rows.clear();
        task_targets.clear();
        if (registered_scan) {
            table()->store->scan_finished();
            registered_scan = false;
        }
        table()->store->trim_lru();
        eof = true;
    }

    // Before any stream closes: no worker may step its statement any more.
    void stop_workers() {
        if (query) query->cancel();
        query.reset();
        running = 0;
    }

    void clear() {
        finish();
        for (auto* v : args) sqlite3_value_free(v);
        for (auto* v : in_values) sqlite3_value_free(v);
        args.clear();
        in_values.clear();
        targets.clear();
        next_target = 0;
        remaining = -1;
        bucket_limit = -1;
    }

    // Column `column` of the current row.
    sqlite3_value* value(int column) const {
        switch (mode) {
            case Mode::kSequential: return streams[0].rows->column_value(column);
            case Mode::kParallel: return batch.at(batch_row, column).get();
            case Mode::kMerged: return batches[current].at(batch_rows[current], column).get();
        }
        return nullptr;
    }
    // Column `column` of task `task`'s current row (merged).
    sqlite3_value* value_of(size_t task, int column) const { return batches[task].at(batch_rows[task], column).get(); }
};

int table_open(sqlite3_vtab*, sqlite3_vtab_cursor** out) {
    *out = new Cursor();
    return SQLITE_OK;
}

int table_close(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<Cursor*>(base);
    cursor->clear();
    delete cursor;
    return SQLITE_OK;
}

// Whether sqlite3_interrupt() was called on the connection running the
// query. SQLite 3.40 has no sqlite3_is_interrupted(); a statement stepped on
// that connection fails with SQLITE_INTERRUPT when it was (the flag stays set
// while the interrupted statement is active).
bool user_interrupted(Table* table) {
    if (!table->interrupt_probe) {
        // Prepared by prepare_interrupt_probe() before the workers start; a
        // prepare that fails (SQLite's parser also looks at the flag) says so.
        return false;
    }
    int rc = sqlite3_step(table->interrupt_probe);
    sqlite3_reset(table->interrupt_probe);
    return rc == SQLITE_INTERRUPT;
}

void prepare_interrupt_probe(Table* table) {
    if (table->interrupt_probe) return;
    int rc = sqlite3_prepare_v2(table->db, "SELECT 1", -1, &table->interrupt_probe, nullptr);
    if (rc == SQLITE_INTERRUPT) throw sqlite::Error(SQLITE_INTERRUPT, "interrupted");
    if (rc != SQLITE_OK) throw sqlite::Error(rc, std::string("cannot prepare the interrupt probe: ") + sqlite3_errmsg(table->db));
}

// How long the calling thread waits for a batch before it looks for an interrupt.
constexpr std::chrono::milliseconds kInterruptPoll{20};

// Opens target `i`'s statement: the bucket's settled read snapshot and the
// plan's statement, bound. Throws BucketRetired when the bucket was split.
Stream open_stream(Cursor* cursor, size_t i) {
    store::Store& store = *cursor->table()->store;
    const QueryPlan& plan = *cursor->plan;
    const Target& target = cursor->targets[i];
    std::shared_ptr<store::BucketFile> file = store.open(target.bucket);
    store.enter_read(file);
    Stream stream;
    stream.snapshot = store::ReadSnapshot(file);
    stream.rows = StatementLease(file, plan.sql);
    for (size_t a = 0; a < cursor->args.size(); ++a) {
        int arg = static_cast<int>(a);
        if (arg == plan.route_arg) {
            stream.rows->bind(arg + 1, target.shard);
        } else if (arg == plan.limit_arg) {
            stream.rows->bind(arg + 1, cursor->bucket_limit);
        } else if (arg != plan.offset_arg) {
            stream.rows->bind(arg + 1, cursor->args[a]);
        }
    }
    return stream;
}

// After target `i`'s bucket turned out split: the targets that now cover it
// (a routed target goes to its value's new owner; a scan visits the children
// in the parent's place).
std::vector<Target> replacements(Cursor* cursor, size_t i) {
    store::Store& store = *cursor->table()->store;
    Target target = cursor->targets[i];
    std::vector<BucketId> covering = store.reload_after(target.bucket);
    if (target.shard) {
        target.bucket = store.route(store::hash_key_as(target.shard, cursor->table()->collection.shard_affinity()));
        return {target};
    }
    std::vector<Target> out;
    for (const BucketId& b : covering) out.push_back({b, nullptr});
    return out;
}

// Sequential plans: starts the statement on target `i`, following splits.
// Returns false when the statement has no row.
bool start_stream(Cursor* cursor, size_t i, Stream& stream) {
    for (;;) {
        try {
            Stream started = open_stream(cursor, i);
            started.has_row = started.rows.step("read");
            stream.close();
            stream = std::move(started);
            return stream.has_row;
        } catch (const store::BucketRetired&) {
            std::vector<Target> replacement = replacements(cursor, i);
            cursor->targets.erase(cursor->targets.begin() + static_cast<long>(i));
            cursor->targets.insert(cursor->targets.begin() + static_cast<long>(i), replacement.begin(),
                                   replacement.end());
        }
    }
}

// Sequential plans: moves to the next target that has a row.
bool next_sequential_target(Cursor* cursor) {
    cursor->streams.resize(1);
    while (cursor->next_target < cursor->targets.size()) {
        size_t i = cursor->next_target;
        bool has_row = start_stream(cursor, i, cursor->streams[0]);
        cursor->next_target = i + 1;
        if (has_row) return true;
        cursor->streams[0].close();
    }
    return false;
}

// Parallel and merged plans: opens target `i`'s statement and hands it to
// the workers as a new task (streams[task] keeps it open). A split bucket's
// replacements are appended to the targets, to be started in turn.
void start_task(Cursor* cursor, size_t i) {
    Stream stream;
    try {
        stream = open_stream(cursor, i);
    } catch (const store::BucketRetired&) {
        std::vector<Target> replacement = replacements(cursor, i);
        cursor->targets.insert(cursor->targets.end(), replacement.begin(), replacement.end());
        return;
    }
    store::ReadTask task;
    task.bucket = cursor->targets[i].bucket;
    task.borrowed = stream.rows->get();
    cursor->streams.push_back(std::move(stream));
    cursor->task_targets.push_back(i);
    cursor->batches.emplace_back();
    cursor->batch_rows.push_back(0);
    size_t index = cursor->query->add(std::move(task));
    if (index != cursor->streams.size() - 1) throw std::logic_error("parallel read: task and stream out of step");
    ++cursor->running;
}

// Waits for a batch (of `task`, or of any task when `task` is npos), looking
// for an interrupt of the caller's connection meanwhile.
bool wait_batch(Cursor* cursor, size_t task, store::RowBatch& out) {
    for (;;) {
        store::ParallelQuery::Wait w = task == SIZE_MAX ? cursor->query->next_within(out, kInterruptPoll)
                                                        : cursor->query->next_within(task, out, kInterruptPoll);
        if (w == store::ParallelQuery::Wait::kBatch) return true;
        if (w == store::ParallelQuery::Wait::kDone) return false;
        if (user_interrupted(cursor->table())) {
            cursor->stop_workers();
            throw sqlite::Error(SQLITE_INTERRUPT, "interrupted");
        }
    }
}

// A task's last batch came (or it was split away): its worker is done with
// the statement, which goes back to its bucket. A bucket split before the
// task read a row is read again as the targets that now cover it, appended
// to be started in turn.
void task_done(Cursor* cursor, const store::RowBatch& b) {
    cursor->streams[b.task].close();
    --cursor->running;
    if (b.retired) {
        std::vector<Target> replacement = replacements(cursor, cursor->task_targets[b.task]);
        cursor->targets.insert(cursor->targets.end(), replacement.begin(), replacement.end());
    }
}

// Parallel plans: moves to the next row of any bucket. Returns false at the end.
bool next_parallel_row(Cursor* cursor) {
    if (cursor->batch.columns && ++cursor->batch_row < cursor->batch.rows()) return true;
    for (;;) {
        while (cursor->running < cursor->window && cursor->next_target < cursor->targets.size()) {
            start_task(cursor, cursor->next_target++);
        }
        cursor->batch_row = 0;
        if (!wait_batch(cursor, SIZE_MAX, cursor->batch)) {
            if (cursor->next_target < cursor->targets.size()) continue;
            cursor->batch = store::RowBatch{};
            return false;
        }
        if (cursor->batch.last || cursor->batch.retired) task_done(cursor, cursor->batch);
        if (cursor->batch.rows() > 0) return true;
    }
}

// Merged plans: moves task `task` to its next row, fetching its next batch
// when the current one is used up. Returns false when the task has no more.
bool next_task_row(Cursor* cursor, size_t task) {
    store::RowBatch& b = cursor->batches[task];
    if (b.columns && ++cursor->batch_rows[task] < b.rows()) return true;
    for (;;) {
        cursor->batch_rows[task] = 0;
        if (b.last || b.retired || !wait_batch(cursor, task, b)) {
            b = store::RowBatch{};
            return false;
        }
        if (b.last || b.retired) task_done(cursor, b);
        if (b.rows() > 0) return true;
    }
}

// Orders the heap by the plan's ORDER BY over each task's current row.
bool task_after(Cursor* cursor, size_t a, size_t b) {
    for (const OrderTerm& o : cursor->plan->order) {
        int c = compare_values(cursor->value_of(a, o.column), cursor->value_of(b, o.column));
        if (c != 0) return o.desc ? c < 0 : c > 0;
    }
    return a > b;  // ties: task order, so results are deterministic
}

void push_heap(Cursor* cursor, size_t task) {
    cursor->heap.push_back(task);
    std::push_heap(cursor->heap.begin(), cursor->heap.end(),
                   [cursor](size_t a, size_t b) { return task_after(cursor, a, b); });
}

size_t pop_heap(Cursor* cursor) {
    std::pop_heap(cursor->heap.begin(), cursor->heap.end(),
                  [cursor](size_t a, size_t b) { return task_after(cursor, a, b); });
    size_t top = cursor->heap.back();
    cursor->heap.pop_back();
    return top;
}

// Merged plans: every target's sorted stream starts at once (each must show
// its first row before the first row of the merge is known). Targets added
// for split buckets start too, as they appear.
bool start_merge(Cursor* cursor) {
    for (size_t t = 0;; ++t) {
        while (cursor->next_target < cursor->targets.size()) start_task(cursor, cursor->next_target++);
        if (t >= cursor->streams.size()) break;
        if (next_task_row(cursor, t)) push_heap(cursor, t);
    }
    if (cursor->heap.empty()) return false;
    cursor->current = pop_heap(cursor);
    return true;
}

bool next_merged_row(Cursor* cursor) {
    size_t task = cursor->current;
    if (next_task_row(cursor, task)) push_heap(cursor, task);
    // A bucket found split only now (a task's later batch cannot say so: a
    // split is seen before the first row) would have added targets here.
    if (cursor->heap.empty()) return false;
    cursor->current = pop_heap(cursor);
    return true;
}

void count_row(Cursor* cursor) {
    if (cursor->remaining > 0) --cursor->remaining;
}

// Moves to the next row of the whole query.
void advance(Cursor* cursor) {
    if (cursor->remaining == 0) {
        cursor->finish();
        return;
    }
    bool has_row = false;
    switch (cursor->mode) {
        case Mode::kSequential: {
            Stream& stream = cursor->streams[0];
            has_row = stream.rows.step("read");
            if (!has_row) {
                stream.close();
                has_row = next_sequential_target(cursor);
            }
            break;
        }
        case Mode::kParallel: has_row = next_parallel_row(cursor); break;
        case Mode::kMerged: has_row = next_merged_row(cursor); break;
    }
    if (!has_row) {
        cursor->finish();
        return;
    }
    count_row(cursor);
}

// Starts reading: the first row, or the end.
void start(Cursor* cursor) {
    store::Store& store = *cursor->table()->store;
    bool has_row = false;
    if (cursor->targets.size() <= 1) {
        cursor->mode = Mode::kSequential;
        has_row = next_sequential_target(cursor);
    } else {
        store::ReadPool& pool = store.read_pool();
        prepare_interrupt_probe(cursor->table());
        cursor->mode = cursor->plan->ordered() ? Mode::kMerged : Mode::kParallel;
        cursor->query = pool.start({}, cursor->mode == Mode::kMerged);
        cursor->query->set_interrupt_poll(
            {[](void* table) { return user_interrupted(static_cast<Table*>(table)); }, cursor->table()});
        // Enough buckets at once to keep every worker busy while the caller
        // takes rows; never more than the store keeps open (the files being
        // read stay open while their statements run).
        cursor->window = std::max<size_t>(
            1, std::min<size_t>(2 * static_cast<size_t>(pool.threads()), static_cast<size_t>(store.options().max_open)));
        has_row = cursor->mode == Mode::kMerged ? start_merge(cursor) : next_parallel_row(cursor);
    }
    if (!has_row) {
        cursor->finish();
        return;
    }
    count_row(cursor);
}

// Whether a cluster scan reads one key of the key-value table that no
// buffered write touches: then it cannot miss the transaction's own writes.
bool reads_unwritten_key(Table& table, const QueryPlan& plan, sqlite3_value** argv) {
    if (!table.collection.key_value || plan.route != QueryPlan::Route::kShardEq || plan.route_arg < 0) return false;
    sqlite3_value* key = argv[plan.route_arg];
    if (sqlite3_value_type(key) == SQLITE_NULL) return true;
    return !table.cluster_writes.touches(store::hash_key_as(key, table.collection.shard_affinity()));
}

// xFilter: argv as the plan's argvIndex assignments made them.
int table_filter(sqlite3_vtab_cursor* base, int plan_id, const char*, int argc, sqlite3_value** argv) {
    auto* cursor = static_cast<Cursor*>(base);
    return guarded(base->pVtab, [&] {
        cursor->clear();
        Table* table = cursor->table();
        if (plan_id < 0 || static_cast<size_t>(plan_id) >= table->plans.size()) {
            throw std::logic_error("unknown query plan " + std::to_string(plan_id));
        }
        cursor->plan = &table->plans[static_cast<size_t>(plan_id)];
        const QueryPlan& plan = *cursor->plan;
        if (table->cluster) {
            if (!table->cluster_writes.empty() && !reads_unwritten_key(*table, plan, argv)) {
                throw std::invalid_argument("table " + table->name +
                                            " is read after being written in the same transaction (or statement): a "
                                            "cluster table sends its writes at COMMIT, so it cannot read them before "
                                            "(reading one key of the key-value table that the transaction did not "
                                            "write is allowed)");
            }
            prepare_interrupt_probe(table);
            ClusterScan::ReadObserver observe;
            if (table->cluster_writes.recording()) {
                observe = [table](const store::OwnedValue& pk, const store::OwnedValue& value) {
                    table->cluster_writes.record_read(pk, value);
                };
            }
            cursor->remote = std::make_unique<ClusterScan>(*table->cluster, table->collection, plan, argv,
                                                           [table] { return user_interrupted(table); }, std::move(observe));
            cursor->eof = cursor->remote->eof();
            return SQLITE_OK;
        }
        store::Store& store = *table->store;
        for (int i = 0; i < argc; ++i) {
            cursor->args.push_back(i == plan.route_arg && plan.route == QueryPlan::Route::kShardIn
                                       ? nullptr
                                       : sqlite3_value_dup(argv[i]));
        }
        if (plan.route == QueryPlan::Route::kShardEq) {
            sqlite3_value* shard = cursor->args[static_cast<size_t>(plan.route_arg)];
            if (sqlite3_value_type(shard) != SQLITE_NULL) {
                cursor->targets.push_back({store.route(store::hash_key_as(shard, table->collection.shard_affinity())), shard});
            }
        } else if (plan.route == QueryPlan::Route::kShardIn) {
            sqlite3_value* value = nullptr;
            for (int rc = sqlite3_vtab_in_first(argv[plan.route_arg], &value); rc == SQLITE_OK && value;
                 rc = sqlite3_vtab_in_next(argv[plan.route_arg], &value)) {
                if (sqlite3_value_type(value) == SQLITE_NULL) continue;
                cursor->in_values.push_back(sqlite3_value_dup(value));
                cursor->targets.push_back(
                    {store.route(store::hash_key_as(value, table->collection.shard_affinity())), cursor->in_values.back()});
            }
            // Visit each owning bucket once, its keys one after another.
            std::stable_sort(cursor->targets.begin(), cursor->targets.end(),
                             [](const Target& a, const Target& b) { return a.bucket.lo() < b.bucket.lo(); });
        } else {
            for (const BucketId& b : store.buckets()) cursor->targets.push_back({b, nullptr});
        }
        if (plan.route != QueryPlan::Route::kShardEq) {
            store.scan_started();
            cursor->registered_scan = true;
        }
        // A consumed OFFSET is not applied again by SQLite: the cursor skips
        // those rows itself. Each bucket returned at most LIMIT + OFFSET.
        int64_t offset = 0;
        if (plan.limit_arg >= 0) {
            int64_t limit = sqlite3_value_int64(cursor->args[static_cast<size_t>(plan.limit_arg)]);
            if (plan.offset_arg >= 0) {
                offset = std::max<int64_t>(sqlite3_value_int64(cursor->args[static_cast<size_t>(plan.offset_arg)]), 0);
            }
            cursor->remaining = limit < 0 ? -1 : limit + offset;
            cursor->bucket_limit = cursor->remaining;
        }
        cursor->eof = false;
        if (cursor->remaining == 0) {
            cursor->finish();
        } else {
            start(cursor);
        }
        for (; offset > 0 && !cursor->eof; --offset) advance(cursor);
        return SQLITE_OK;
    });
}

int table_next(sqlite3_vtab_cursor* base) {
    auto* cursor = static_cast<Cursor*>(base);
    return guarded(base->pVtab, [&] {
        if (cursor->remote) {
            cursor->remote->next();
            cursor->eof = cursor->remote->eof();
            return SQLITE_OK;
        }
        advance(cursor);
        return SQLITE_OK;
    });
}

int table_eof(sqlite3_vtab_cursor* base) { return static_cast<Cursor*>(base)->eof ? 1 : 0; }

// xColumn: declared columns come straight from the bucket row, so their types
// are exactly as stored; _pk is built from the row's identity.
int table_column(sqlite3_vtab_cursor* base, sqlite3_context* ctx, int column) {
    auto* cursor = static_cast<Cursor*>(base);
    const Table* table = cursor->table();
    if (cursor->remote) {
        cursor->remote->column(column).result(ctx);
        return SQLITE_OK;
    }
    if (column == table->pk_column()) {
        try {
            const store::Collection& c = table->collection;
            std::string id =
                c.key_value ? store::encode_record_id(cursor->value(0), cursor->value(1))
                            : store::encode_row_id(cursor->value(c.shard_column),
                                                   sqlite3_value_int64(cursor->value(static_cast<int>(c.columns.size()))));
            sqlite3_result_blob(ctx, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
        } catch (const std::exception& e) {
            sqlite3_result_error(ctx, e.what(), -1);
        }
        return SQLITE_OK;
    }
    sqlite3_result_value(ctx, cursor->value(column));
    return SQLITE_OK;
}

int table_rowid(sqlite3_vtab_cursor*, sqlite3_int64*) { return SQLITE_ERROR; }

// ---------------------------------------------------------------------------
// Transactions: SQLite's calls are forwarded to the store, which holds one
// write transaction per touched bucket. xSync commits the buckets (so that a
// failure can still fail the COMMIT); xCommit then runs the splits.

store::Store& store_of(sqlite3_vtab* vtab) { return *static_cast<Table*>(vtab)->store; }

// xBegin: from here to xCommit/xRollback, buckets read by this connection
// keep their read snapshot, so that a write to a bucket read in the same
// transaction (an UPDATE's own scan, above all) fails with SQLITE_BUSY when
// another process committed there in between, instead of overwriting that
// commit with values computed from the older state.
Table* cluster_table(sqlite3_vtab* vtab) {
    auto* table = static_cast<Table*>(vtab);
    return table->cluster ? table : nullptr;
}

int table_begin(sqlite3_vtab* vtab) {
    return guarded(vtab, [&] {
        if (Table* t = cluster_table(vtab)) {
            t->cluster_writes.begin();
            return SQLITE_OK;
        }
        store_of(vtab).begin_transaction();
        return SQLITE_OK;
    });
}

int table_sync(sqlite3_vtab* vtab) {
    return guarded(vtab, [&] {
        if (Table* t = cluster_table(vtab)) {
            t->cluster_writes.flush(*t->cluster, t->collection, t->name);
            return SQLITE_OK;
        }
        store_of(vtab).commit_point();
        return SQLITE_OK;
    });
}

int table_commit(sqlite3_vtab* vtab) {
    return guarded(vtab, [&] {
        if (Table* t = cluster_table(vtab)) {
            t->cluster_writes.flush(*t->cluster, t->collection, t->name);  // no-op unless xSync was skipped
            t->cluster_writes.end();
            return SQLITE_OK;
        }
        store_of(vtab).commit_all();  // no-op unless xSync was skipped
        store_of(vtab).split_pending();
        return SQLITE_OK;
    });
}

int table_rollback(sqlite3_vtab* vtab) {
    return guarded(vtab, [&] {
        if (Table* t = cluster_table(vtab)) {
            t->cluster_writes.end();
            return SQLITE_OK;
        }
        store_of(vtab).rollback_all();
        return SQLITE_OK;
    });
}

int table_savepoint(sqlite3_vtab* vtab, int index) {
    return guarded(vtab, [&] {
        if (Table* t = cluster_table(vtab)) {
            t->cluster_writes.savepoint(index);
            return SQLITE_OK;
        }
        store_of(vtab).savepoint(index);
        return SQLITE_OK;
    });
}

int table_release(sqlite3_vtab* vtab, int index) {
    return guarded(vtab, [&] {
        if (cluster_table(vtab)) return SQLITE_OK;
        store_of(vtab).release(index);
        return SQLITE_OK;
    });
}

int table_rollback_to(sqlite3_vtab* vtab, int index) {
    return guarded(vtab, [&] {
        if (Table* t = cluster_table(vtab)) {
            t->cluster_writes.rollback_to(index);
            return SQLITE_OK;
        }
        store_of(vtab).rollback_to(index);
        return SQLITE_OK;
    });
}

int table_rename(sqlite3_vtab* vtab, const char* new_name) {
    static_cast<Table*>(vtab)->name = new_name;
    return SQLITE_OK;
}

sqlite3_module make_module() {
    sqlite3_module m{};
    m.iVersion = 2;
    m.xCreate = table_create;
    m.xConnect = table_connect;
    m.xBestIndex = table_best_index;
    m.xDisconnect = table_disconnect;
    m.xDestroy = table_disconnect;
    m.xOpen = table_open;
    m.xClose = table_close;
    m.xFilter = table_filter;
    m.xNext = table_next;
    m.xEof = table_eof;
    m.xColumn = table_column;
    m.xRowid = table_rowid;
    m.xUpdate = table_update;
    m.xBegin = table_begin;
    m.xSync = table_sync;
    m.xCommit = table_commit;
    m.xRollback = table_rollback;
    m.xRename = table_rename;
    m.xSavepoint = table_savepoint;
    m.xRelease = table_release;
    m.xRollbackTo = table_rollback_to;
    return m;
}

const sqlite3_module kTableModule = make_module();

}  // namespace

int register_table_module(sqlite3* db, std::shared_ptr<ConnectionContext> context) {
    // The commit log and id sequences belong to the tables' transactions.
    int rc = register_log_view(db, context);
    if (rc != SQLITE_OK) return rc;
    auto* aux = new std::shared_ptr<ConnectionContext>(std::move(context));
    return sqlite3_create_module_v2(db, "aerials", &kTableModule, aux,
                                    [](void* p) { delete static_cast<std::shared_ptr<ConnectionContext>*>(p); });
}

}  // namespace aerials::vtab
