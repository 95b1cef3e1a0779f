// The cluster token: read once from --token-file, compared in constant time.
#pragma once

#include <string>
#include <string_view>

namespace aerials::server {

// The file's content without surrounding whitespace. Throws naming the file
// when it cannot be read or holds no token.
std::string read_token_file(const std::string& path);

// Whether `given` equals `expected`, in time independent of where they
// differ and of their lengths (both are hashed with SHA-256 first).
bool token_matches(std::string_view given, std::string_view expected);

}  // namespace aerials::server
