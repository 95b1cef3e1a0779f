#include "files/digest.h"

#include <openssl/evp.h>

#include <new>
#include <stdexcept>

namespace aerials::files {
namespace {

const EVP_MD* algorithm(Digest::Kind kind) { return kind == Digest::Kind::kSha256 ? EVP_sha256() : EVP_md5(); }

}  // namespace

Digest::Digest(Kind kind) : kind_(kind), ctx_(EVP_MD_CTX_new()) {
    if (!ctx_) throw std::bad_alloc();
    if (EVP_DigestInit_ex(ctx_, algorithm(kind_), nullptr) != 1) {
        EVP_MD_CTX_free(ctx_);
        throw std::runtime_error("OpenSSL could not start a digest");
    }
}

Digest::~Digest() { EVP_MD_CTX_free(ctx_); }

void Digest::update(const void* data, size_t size) {
    if (size && EVP_DigestUpdate(ctx_, data, size) != 1) throw std::runtime_error("OpenSSL digest update failed");
}

std::string Digest::finish() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx_, out, &n) != 1 || EVP_DigestInit_ex(ctx_, algorithm(kind_), nullptr) != 1) {
        throw std::runtime_error("OpenSSL digest finish failed");
    }
    return std::string(reinterpret_cast<char*>(out), n);
}

Sha256 sha256_of(const void* data, size_t size) {
    Sha256 out{};
    unsigned int n = 0;
    if (EVP_Digest(data, size, out.data(), &n, EVP_sha256(), nullptr) != 1) throw std::runtime_error("SHA-256 failed");
    return out;
}

Md5 md5_of(const void* data, size_t size) {
    Md5 out{};
    unsigned int n = 0;
    if (EVP_Digest(data, size, out.data(), &n, EVP_md5(), nullptr) != 1) throw std::runtime_error("MD5 failed");
    return out;
}

std::string to_hex(const uint8_t* data, size_t size) {
    static const char digits[] = "0123456789abcdef";
    std::string out(size * 2, '0');
    for (size_t i = 0; i < size; ++i) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    return out;
}

}  // namespace aerials::files
