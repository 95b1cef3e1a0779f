#include <boost/test/unit_test.hpp>

#include "store/bucket_id.h"
#include "store/key_hash.h"
#include "test_support.h"

using namespace aerials;
using namespace aerials::store;

BOOST_AUTO_TEST_SUITE(key_hash)

BOOST_AUTO_TEST_CASE(integer_and_whole_real_place_alike) {
    test::Values v;
    BOOST_TEST(hash_key(v("5")) == hash_key(v("5.0")));
    BOOST_TEST(hash_key(v("-0.0")) == hash_key(v("0")));
    BOOST_TEST(hash_key(v("5")) != hash_key(v("'5'")));
    BOOST_TEST(hash_key(v("'ab'")) != hash_key(v("x'6162'")));
    BOOST_TEST(hash_key(v("5.5")) != hash_key(v("5")));
}

BOOST_AUTO_TEST_CASE(null_is_not_a_key) {
    test::Values v;
    BOOST_CHECK_THROW(hash_key(v("NULL")), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(encoding_is_the_documented_one) {
    test::Values v;
    std::string out;
    encode_key(v("258"), out);
    BOOST_TEST(out == std::string("i\0\0\0\0\0\0\x01\x02", 9));
    out.clear();
    encode_key(v("'hi'"), out);
    BOOST_TEST(out == "thi");
    out.clear();
    encode_key(v("x'00ff'"), out);
    BOOST_TEST(out == std::string("b\0\xff", 3));
}

// The placement hash is part of the on-disk format: if this test fails, every
// existing store would route keys to the wrong buckets.
BOOST_AUTO_TEST_CASE(hash_values_are_stable) {
    test::Values v;
    BOOST_TEST(hex64(hash_key(v("'user:1'"))) == hex64(hash_encoded_key("tuser:1")));
    BOOST_TEST(hex64(hash_encoded_key("")) == "2d06800538d394c2");  // XXH3-64 of no bytes, seed 0
}

BOOST_AUTO_TEST_CASE(int64_extremes_round_trip_through_record_ids) {
    test::Values v;
    for (const char* literal : {"9223372036854775807", "-9223372036854775808", "'k'", "x'0001'", "1.5"}) {
        std::string id = encode_record_id(v(literal), v("'sub'"));
        RecordId decoded = decode_record_id(id);
        std::string key;
        encode_key(v(literal), key);
        BOOST_TEST(decoded.key == key);
        BOOST_TEST(decoded.subkey == "tsub");
    }
    BOOST_CHECK_THROW(decode_record_id("ab"), std::invalid_argument);
    BOOST_CHECK_THROW(decode_record_id(std::string("\0\0\0\x09i", 5)), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(bucket_id)

BOOST_AUTO_TEST_CASE(root_owns_everything) {
    BucketId root;
    BOOST_TEST(root.lo() == 0u);
    BOOST_TEST(root.hi() == ~uint64_t{0});
    BOOST_TEST(root.owns(0));
    BOOST_TEST(root.owns(~uint64_t{0}));
}

BOOST_AUTO_TEST_CASE(children_tile_the_parent) {
    BucketId parent{3, 5};  // hashes 101xxxx...
    for (int k = 1; k <= 4; ++k) {
        uint64_t expected_lo = parent.lo();
        for (uint64_t i = 0; i < (uint64_t{1} << k); ++i) {
            BucketId child = parent.child(k, i);
            BOOST_TEST(child.lo() == expected_lo);
            BOOST_TEST(parent.owns(child.lo()));
            BOOST_TEST(parent.owns(child.hi()));
            BOOST_TEST(parent.child_index(child.lo(), k) == i);
            BOOST_TEST(parent.child_index(child.hi(), k) == i);
            expected_lo = child.hi() + 1;
        }
        BOOST_TEST(expected_lo == parent.hi() + 1);
    }
}

BOOST_AUTO_TEST_CASE(file_names_are_hashed_tree_paths) {
    BucketId id{4, 9};
    std::string path = id.relative_path();
    BOOST_TEST(path.size() == std::string("28/dd/1a21d3fdabf7.sq3").size());
    std::string joined = path.substr(0, 2) + path.substr(3, 2) + path.substr(6, 12);
    BOOST_TEST(joined == id.name());
    BOOST_TEST((BucketId{4, 9}.name() != BucketId{4, 8}.name()));
    BOOST_TEST((BucketId{4, 9}.name() != BucketId{5, 9}.name()));
}

BOOST_AUTO_TEST_SUITE_END()
