#include "files/names.h"

#include <cstdint>

namespace aerials::files {
namespace {

bool is_ipv4(std::string_view name) {
    int parts = 0;
    size_t i = 0;
    while (i <= name.size()) {
        size_t start = i;
        while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
        if (i == start || i - start > 3) return false;
        ++parts;
        if (i == name.size()) break;
        if (name[i] != '.') return false;
        ++i;
    }
    return parts == 4;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) { return s.size() >= p.size() && s.substr(s.size() - p.size()) == p; }

}  // namespace

void check_bucket_name(std::string_view name) {
    std::string quoted = "bucket name '" + std::string(name) + "'";
    if (name.size() < 3 || name.size() > 63) throw InvalidName(quoted + " must be 3 to 63 characters long");
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
        if (!ok) throw InvalidName(quoted + " may hold only lowercase letters, digits, '.' and '-'");
    }
    auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    if (!alnum(name.front()) || !alnum(name.back())) {
        throw InvalidName(quoted + " must begin and end with a letter or digit");
    }
    if (name.find("..") != std::string_view::npos) throw InvalidName(quoted + " must not hold two adjacent periods");
    if (is_ipv4(name)) throw InvalidName(quoted + " must not be formatted as an IP address");
    for (std::string_view prefix : {"xn--", "sthree-", "amzn-s3-demo-"}) {
        if (starts_with(name, prefix)) throw InvalidName(quoted + " must not start with '" + std::string(prefix) + "'");
    }
    for (std::string_view suffix : {"-s3alias", "--ol-s3", ".mrap", "--x-s3"}) {
        if (ends_with(name, suffix)) throw InvalidName(quoted + " must not end with '" + std::string(suffix) + "'");
    }
}

bool valid_utf8(std::string_view text) {
    size_t i = 0, n = text.size();
    while (i < n) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        int extra;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            extra = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            extra = 2, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            extra = 3, cp = c & 0x07;
        } else {
            return false;
        }
        if (i + static_cast<size_t>(extra) >= n) return false;
        for (int k = 1; k <= extra; ++k) {
            auto cc = static_cast<unsigned char>(text[i + static_cast<size_t>(k)]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += static_cast<size_t>(extra) + 1;
    }
    return true;
}

void check_key(std::string_view key) {
    if (key.empty()) throw InvalidName("object key must not be empty");
    if (key.size() > kMaxKeyBytes) {
        throw InvalidName("object key of " + std::to_string(key.size()) + " bytes is longer than the limit of " +
                          std::to_string(kMaxKeyBytes) + " bytes (UTF-8)");
    }
    if (key.find('\0') != std::string_view::npos) throw InvalidName("object key must not contain a NUL character");
    if (!valid_utf8(key)) throw InvalidName("object key is not valid UTF-8");
}

std::string object_path(std::string_view bucket, std::string_view key) {
    std::string path(bucket);
    path += '/';
    path += key;
    return path;
}

}  // namespace aerials::files
