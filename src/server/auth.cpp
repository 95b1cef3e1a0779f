#include "server/auth.h"

#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "cluster/cluster_client.h"

namespace aerials::server {

std::string read_token_file(const std::string& path) {
    // The same reading as the extension's client (the file's content, outer
    // whitespace stripped); a node also insists on a token worth the name.
    std::string token = cluster::read_token_file(path);
    if (token.size() < 16) {
        throw std::runtime_error("the token in '" + path + "' is shorter than 16 characters: use a long random one");
    }
    return token;
}

namespace {

void sha256(std::string_view data, unsigned char out[32]) {
    unsigned int length = 0;
    if (EVP_Digest(data.data(), data.size(), out, &length, EVP_sha256(), nullptr) != 1 || length != 32) {
        throw std::runtime_error("SHA-256 failed");
    }
}

}  // namespace

bool token_matches(std::string_view given, std::string_view expected) {
    unsigned char a[32], b[32];
    sha256(given, a);
    sha256(expected, b);
    return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

}  // namespace aerials::server
