// Names and manifest encoding of the files layer.
#include <boost/test/unit_test.hpp>

#include "files/digest.h"
#include "files/manifest.h"
#include "files/names.h"

using namespace aerials::files;

BOOST_AUTO_TEST_SUITE(files_names)

BOOST_AUTO_TEST_CASE(bucket_names_follow_s3_rules) {
    for (const char* ok : {"abc", "my-bucket", "my.bucket.1", "a1b", "123"}) BOOST_CHECK_NO_THROW(check_bucket_name(ok));
    for (const char* bad : {"ab", "ABC", "a_b", "-ab", "ab-", "a..b", "10.0.0.1", "xn--ab", "sthree-x", "ab-s3alias",
                            "ab--ol-s3", "a b"}) {
        BOOST_CHECK_THROW(check_bucket_name(bad), InvalidName);
    }
    BOOST_CHECK_THROW(check_bucket_name(std::string(64, 'a')), InvalidName);
    BOOST_CHECK_NO_THROW(check_bucket_name(std::string(63, 'a')));
}

BOOST_AUTO_TEST_CASE(keys_are_utf8_up_to_1024_bytes) {
    BOOST_CHECK_NO_THROW(check_key("a"));
    BOOST_CHECK_NO_THROW(check_key(std::string(1024, 'k')));
    BOOST_CHECK_THROW(check_key(std::string(1025, 'k')), InvalidName);
    BOOST_CHECK_THROW(check_key(""), InvalidName);
    BOOST_CHECK_THROW(check_key(std::string("a\0b", 3)), InvalidName);
    BOOST_CHECK(valid_utf8("\xc3\xbc\xe2\x82\xac\xf0\x9f\x98\x80"));
    for (const char* bad : {"\xff", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc3"}) {
        BOOST_CHECK(!valid_utf8(bad));
    }
}

BOOST_AUTO_TEST_CASE(chunk_lists_round_trip) {
    std::vector<ChunkRef> chunks(3);
    for (size_t i = 0; i < chunks.size(); ++i) {
        chunks[i].sha256 = sha256_of(&i, sizeof i);
        chunks[i].size = static_cast<int64_t>(i) * 5000000000LL + 1;
    }
    std::string blob = encode_chunk_list(chunks);
    BOOST_CHECK_EQUAL(blob.size(), 120u);
    std::vector<ChunkRef> back = decode_chunk_list(blob, "b/k");
    BOOST_REQUIRE_EQUAL(back.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        BOOST_CHECK(back[i].sha256 == chunks[i].sha256);
        BOOST_CHECK_EQUAL(back[i].size, chunks[i].size);
    }
    BOOST_CHECK_THROW(decode_chunk_list(blob.substr(1), "b/k"), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(digests_match_known_values) {
    BOOST_CHECK_EQUAL(to_hex(sha256_of("abc", 3)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    BOOST_CHECK_EQUAL(to_hex(md5_of("abc", 3)), "900150983cd24fb0d6963f7d28e17f72");
    Digest d(Digest::Kind::kSha256);
    d.update("a", 1);
    d.update("bc", 2);
    BOOST_CHECK_EQUAL(to_hex(d.finish()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

BOOST_AUTO_TEST_SUITE_END()
