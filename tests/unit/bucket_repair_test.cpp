// store/bucket_repair: a damaged bucket file is moved aside with its WAL and
// a new file for the same bucket is built from given rows; the store then
// serves the new file, and the other buckets are untouched.
#include <boost/test/unit_test.hpp>

#include <fstream>

#include "store/bucket_repair.h"
#include "store/store.h"
#include "test_support.h"

using namespace aerials;
using namespace aerials::store;

namespace {

StoreOptions repair_options(const test::TempDir& dir) {
    StoreOptions options;
    options.root = dir.str("store");
    options.initial_depth = 2;
    options.synchronous = "OFF";
    return options;
}

std::string value_of(Store& store, test::Values& v, const std::string& key_literal) {
    sqlite3_value* key = v(key_literal);
    return store.with_bucket(hash_key(key), [&](std::shared_ptr<BucketFile>& file) {
        sqlite::Statement stmt = file->db().prepare("SELECT quote(value) FROM bucket WHERE key=?1 AND subkey=''");
        stmt.bind(1, key);
        std::string result = stmt.step() ? stmt.column_text(0) : "absent";
        stmt.reset();
        return result;
    });
}

}  // namespace

BOOST_AUTO_TEST_SUITE(bucket_repair)

BOOST_AUTO_TEST_CASE(quarantine_then_rebuild_serves_the_given_rows) {
    test::TempDir dir;
    test::Values v;
    StoreOptions options = repair_options(dir);
    BucketId victim;
    {
        Store store(options);
        for (int i = 0; i < 200; ++i) {
            sqlite3_value* key = v(std::to_string(i));
            auto file = store.writable(hash_key(key));
            StatementLease insert(file, BucketQuery::kInsert);
            insert->bind(1, key);
            insert->bind(2, v("''"));
            insert->bind(3, v("'old'"));
            insert->step();
            file->add_records(1);
        }
        store.commit_all();
        victim = store.route(hash_key(v("7")));
    }
    std::filesystem::path root = options.root;
    std::filesystem::path file = root / victim.relative_path();
    { std::ofstream(file.string() + "-wal") << "stale"; }  // moved along with the file

    std::filesystem::path moved = quarantine_bucket_files(root, victim);
    BOOST_TEST(!std::filesystem::exists(file));
    BOOST_TEST(!std::filesystem::exists(file.string() + "-wal"));
    BOOST_TEST(std::filesystem::exists(moved / file.filename()));
    BOOST_TEST(std::filesystem::exists(moved / (file.filename().string() + "-wal")));
    BOOST_TEST(moved.parent_path() == root / "quarantine");

    // The new file holds what the caller adds: key 7 with a new value.
    int64_t records = rebuild_bucket_file(root, victim, {}, options.page_size, [&](BucketBuilder& b) {
        b.insert(v("7"), v("''"), v("'restored'"));
    });
    BOOST_TEST(records == 1);
    BOOST_CHECK_THROW(rebuild_bucket_file(root, victim, {}, options.page_size, [](BucketBuilder&) {}), std::runtime_error);

    Store store(options);
    BOOST_TEST(value_of(store, v, "7") == "'restored'");
    BOOST_TEST(store.open(victim)->records() == 1);
    // Keys of other buckets kept their rows.
    for (int i = 0; i < 200; ++i) {
        if (store.route(hash_key(v(std::to_string(i)))) == victim) continue;
        BOOST_TEST(value_of(store, v, std::to_string(i)) == "'old'");
    }
}

BOOST_AUTO_TEST_SUITE_END()
