#include <boost/test/unit_test.hpp>

#include <fstream>
#include <set>

#include "store/store.h"
#include "test_support.h"

using namespace aerials;
using namespace aerials::store;

namespace {

StoreOptions options_for(const test::TempDir& dir, int64_t max_records = 5000, int initial_depth = 0) {
    StoreOptions options;
    options.root = dir.str("store");
    options.limits.max_records = max_records;
    options.initial_depth = initial_depth;
    options.synchronous = "OFF";  // unit tests check logic, not durability
    return options;
}

void put(Store& store, test::Values& v, const std::string& key_literal, const std::string& value_literal) {
    sqlite3_value* key = v(key_literal);
    auto file = store.writable(hash_key(key));
    StatementLease insert(file, BucketQuery::kInsert);
    insert->bind(1, key);
    insert->bind(2, v("''"));
    insert->bind(3, v(value_literal));
    insert->step();
    file->add_records(1);
}

// The value stored under `key_literal`, as SQL text via quote(), or "absent".
std::string get(Store& store, test::Values& v, const std::string& key_literal) {
    sqlite3_value* key = v(key_literal);
    return store.with_bucket(hash_key(key), [&](std::shared_ptr<BucketFile>& file) {
        try {
            sqlite::Statement stmt = file->db().prepare("SELECT quote(value) FROM bucket WHERE key=?1 AND subkey=''");
            stmt.bind(1, key);
            std::string result = stmt.step() ? stmt.column_text(0) : "absent";
            stmt.reset();
            return result;
        } catch (const std::exception& e) {
            file->rethrow(e, "read");  // turns "no such table" after a split into BucketRetired
        }
    });
}

// Checks that the buckets tile the hash space and returns the sum of records.
int64_t check_tiling(Store& store) {
    uint64_t next = 0;
    bool wrapped = false;
    int64_t records = 0;
    for (const BucketId& id : store.buckets()) {
        BOOST_TEST(!wrapped);
        BOOST_TEST(id.lo() == next);
        next = id.hi() + 1;
        wrapped = next == 0;
        records += store.open(id)->records();
    }
    BOOST_TEST(wrapped);
    return records;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(store)

BOOST_AUTO_TEST_CASE(creates_catalog_and_hashed_bucket_tree) {
    test::TempDir dir;
    Store store(options_for(dir, 5000, 2));
    BOOST_TEST(std::filesystem::exists(dir.path() / "store" / "aerial.sq3"));
    BOOST_TEST(store.buckets().size() == 4u);
    for (const BucketId& id : store.buckets()) {
        BOOST_TEST(std::filesystem::exists(dir.path() / "store" / id.relative_path()));
    }
    BOOST_TEST(check_tiling(store) == 0);
}

BOOST_AUTO_TEST_CASE(values_keep_their_types_across_reopen) {
    test::TempDir dir;
    test::Values v;
    {
        Store store(options_for(dir, 5000, 3));
        put(store, v, "'max'", "9223372036854775807");
        put(store, v, "'min'", "-9223372036854775808");
        put(store, v, "'real'", "1.5");
        put(store, v, "'text'", "'héllo'");
        put(store, v, "'blob'", "x'00ff00'");
        put(store, v, "'null'", "NULL");
        put(store, v, "42", "'int key'");
        store.commit_all();
    }
    Store store(options_for(dir));
    BOOST_TEST(get(store, v, "'max'") == "9223372036854775807");
    BOOST_TEST(get(store, v, "'min'") == "-9223372036854775808");
    BOOST_TEST(get(store, v, "'real'") == "1.5");
    BOOST_TEST(get(store, v, "'text'") == "'héllo'");
    BOOST_TEST(get(store, v, "'blob'") == "X'00FF00'");
    BOOST_TEST(get(store, v, "'null'") == "NULL");
    BOOST_TEST(get(store, v, "42") == "'int key'");
    BOOST_TEST(get(store, v, "'42'") == "absent");
}

BOOST_AUTO_TEST_CASE(rollback_undoes_every_bucket) {
    test::TempDir dir;
    test::Values v;
    Store store(options_for(dir, 5000, 3));
    for (int i = 0; i < 50; ++i) put(store, v, std::to_string(i), "1");
    BOOST_TEST(store.in_transaction());
    store.rollback_all();
    for (int i = 0; i < 50; ++i) BOOST_TEST(get(store, v, std::to_string(i)) == "absent");
    BOOST_TEST(check_tiling(store) == 0);
}

BOOST_AUTO_TEST_CASE(savepoints_roll_back_only_later_changes) {
    test::TempDir dir;
    test::Values v;
    Store store(options_for(dir, 5000, 3));
    put(store, v, "'a'", "1");
    store.savepoint(0);
    put(store, v, "'b'", "2");  // maybe another bucket, begun after savepoint 0
    put(store, v, "'c'", "3");
    store.rollback_to(0);
    put(store, v, "'d'", "4");
    store.release(0);
    store.commit_all();
    BOOST_TEST(get(store, v, "'a'") == "1");
    BOOST_TEST(get(store, v, "'b'") == "absent");
    BOOST_TEST(get(store, v, "'c'") == "absent");
    BOOST_TEST(get(store, v, "'d'") == "4");
    BOOST_TEST(check_tiling(store) == 2);
}

BOOST_AUTO_TEST_CASE(split_keeps_every_record_once) {
    test::TempDir dir;
    test::Values v;
    Store store(options_for(dir, 40));
    for (int i = 0; i < 1000; ++i) put(store, v, "'k" + std::to_string(i) + "'", std::to_string(i));
    store.commit_all();
    store.split_pending();
    BOOST_TEST(store.buckets().size() > 25u);
    BOOST_TEST(store.stats().splits >= 1);
    BOOST_TEST(check_tiling(store) == 1000);
    for (const BucketId& id : store.buckets()) BOOST_TEST(store.open(id)->records() <= 40);
    for (int i = 0; i < 1000; ++i) BOOST_TEST(get(store, v, "'k" + std::to_string(i) + "'") == std::to_string(i));
    // Retired parents leave no files behind.
    size_t files = 0;
    for (auto& entry : std::filesystem::recursive_directory_iterator(dir.path() / "store")) {
        if (entry.path().extension() == ".sq3") ++files;
    }
    BOOST_TEST(files == store.buckets().size() + 1);  // + the catalog
}

BOOST_AUTO_TEST_CASE(a_stale_store_follows_a_split_made_elsewhere) {
    test::TempDir dir;
    test::Values v;
    Store stale(options_for(dir, 40));
    BOOST_TEST(get(stale, v, "'k1'") == "absent");  // opens the root bucket
    {
        Store writer(options_for(dir, 40));
        for (int i = 0; i < 500; ++i) put(writer, v, "'k" + std::to_string(i) + "'", std::to_string(i));
        writer.commit_all();
        writer.split_pending();
    }
    BOOST_TEST(stale.buckets().size() == 1u);
    BOOST_TEST(get(stale, v, "'k1'") == "1");
    BOOST_TEST(stale.buckets().size() > 1u);
    BOOST_TEST(stale.stats().map_reloads >= 1);
    put(stale, v, "'new'", "7");
    stale.commit_all();
    BOOST_TEST(check_tiling(stale) == 501);
}

BOOST_AUTO_TEST_CASE(open_files_stay_within_max_open) {
    test::TempDir dir;
    StoreOptions options = options_for(dir, 5000, 6);
    options.max_open = 4;
    Store store(options);
    for (int round = 0; round < 2; ++round) {
        for (const BucketId& id : store.buckets()) {
            store.open(id);
            BOOST_TEST(store.stats().open_now <= 4);
        }
    }
    BOOST_TEST(store.stats().bucket_opens == 128);
}

BOOST_AUTO_TEST_CASE(bad_roots_are_named) {
    test::TempDir dir;
    std::ofstream(dir.str("plain-file")) << "x";
    StoreOptions options;
    options.root = dir.str("plain-file");
    try {
        Store store(options);
        BOOST_FAIL("a file as root must fail");
    } catch (const std::invalid_argument& e) {
        BOOST_TEST(std::string(e.what()).find("is not a directory") != std::string::npos);
    }
    options.root = dir.str("missing");
    options.create_if_missing = false;
    BOOST_CHECK_THROW(Store{options}, std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(newer_catalog_is_refused) {
    test::TempDir dir;
    { Store store(options_for(dir)); }
    {
        sqlite::Database catalog(dir.str("store/aerial.sq3"), SQLITE_OPEN_READWRITE);
        catalog.exec("PRAGMA user_version = 99");
    }
    try {
        Store store(options_for(dir));
        BOOST_FAIL("a newer catalog must be refused");
    } catch (const sqlite::Error& e) {
        BOOST_TEST(std::string(e.what()).find("schema version 99") != std::string::npos);
    }
}

BOOST_AUTO_TEST_SUITE_END()
