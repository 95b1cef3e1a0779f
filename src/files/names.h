// Names of the files layer: S3-style object buckets and object keys.
//
// An object is addressed as (object bucket, key). Both are only ever data:
// neither is used to build a host path. Validation errors say what rule the
// name broke, so that a client can fix it.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace aerials::files {

// A name or argument that breaks a rule; the message names the rule.
class InvalidName : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

inline constexpr size_t kMaxKeyBytes = 1024;

// S3's general-purpose bucket naming rules: 3 to 63 characters of a-z, 0-9,
// '.' and '-', starting and ending with a letter or digit, no "..", not an
// IPv4 address, none of the reserved prefixes and suffixes.
void check_bucket_name(std::string_view name);
// 1 to 1024 bytes of valid UTF-8 without NUL (SQLite text stops at NUL).
void check_key(std::string_view key);
// Whether `text` is well-formed UTF-8 (no overlong forms, surrogates, or code
// points past U+10FFFF).
bool valid_utf8(std::string_view text);

// The shard key of an object: "bucket/key". Unambiguous because a bucket name
// holds no '/'. Every version, upload and part of one object shares it, so
// they live in one bucket file and change together in one SQLite transaction.
std::string object_path(std::string_view bucket, std::string_view key);

}  // namespace aerials::files
