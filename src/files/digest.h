// SHA-256 and MD5 through OpenSSL's EVP interface (decision 0004): chunk
// addresses and object checksums are SHA-256; S3's ETag is MD5.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace aerials::files {

using Sha256 = std::array<uint8_t, 32>;
using Md5 = std::array<uint8_t, 16>;

// An incremental digest. Not copyable: it owns an EVP_MD_CTX.
class Digest {
public:
    enum class Kind { kSha256, kMd5 };
    explicit Digest(Kind kind);
    ~Digest();
    Digest(const Digest&) = delete;
    Digest& operator=(const Digest&) = delete;

    void update(const void* data, size_t size);
    // The digest of everything so far; the object is reset afterwards.
    std::string finish();  // raw bytes (32 or 16)

private:
    Kind kind_;
    evp_md_ctx_st* ctx_;
};

Sha256 sha256_of(const void* data, size_t size);
Md5 md5_of(const void* data, size_t size);

std::string to_hex(const uint8_t* data, size_t size);
template <size_t N>
std::string to_hex(const std::array<uint8_t, N>& bytes) {
    return to_hex(bytes.data(), N);
}
inline std::string to_hex(std::string_view bytes) {
    return to_hex(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

}  // namespace aerials::files
