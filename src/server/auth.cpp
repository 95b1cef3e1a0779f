#include "server/auth.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>

namespace aerials::server {

std::string read_token_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read the token file '" + path + "'");
    std::ostringstream content;
    content << in.rdbuf();
    std::string token = content.str();
    size_t b = token.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) throw std::runtime_error("the token file '" + path + "' is empty");
    token = token.substr(b, token.find_last_not_of(" \t\r\n") - b + 1);
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
