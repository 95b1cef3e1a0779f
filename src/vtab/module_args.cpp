#include "vtab/module_args.h"

#include <cctype>
#include <charconv>
#include <stdexcept>

namespace aerials::vtab {
namespace {

std::string trim(const std::string& s) {
    size_t b = 0, e = s.size();
    while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
    while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
    return s.substr(b, e - b);
}

int64_t parse_count(const std::string& name, const std::string& text, int64_t min, int64_t max) {
    int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
        throw std::invalid_argument(name + " must be an integer from " + std::to_string(min) + " to " +
                                    std::to_string(max) + ", got '" + text + "'");
    }
    return value;
}

}  // namespace

std::string unquote(const std::string& text) {
    if (text.size() >= 2 && (text.front() == '\'' || text.front() == '"') && text.back() == text.front()) {
        char q = text.front();
        std::string out;
        for (size_t i = 1; i + 1 < text.size(); ++i) {
            out.push_back(text[i]);
            if (text[i] == q && i + 2 < text.size() && text[i + 1] == q) ++i;
        }
        return out;
    }
    return text;
}

namespace {

// "name = value" with an identifier before the first '=' (and not "=="), or
// false: then the argument is a table definition such as "total REAL CHECK(total >= 0)".
bool split_option(const std::string& arg, std::string& name, std::string& value) {
    size_t eq = arg.find('=');
    if (eq == std::string::npos || (eq + 1 < arg.size() && arg[eq + 1] == '=')) return false;
    name = trim(arg.substr(0, eq));
    if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
    for (char c : name) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
    }
    value = unquote(trim(arg.substr(eq + 1)));
    return true;
}

}  // namespace

ModuleArgs parse_module_args(const std::vector<std::string>& args) {
    ModuleArgs parsed;
    store::StoreOptions& options = parsed.store;
    bool have_root = false;
    for (const std::string& raw : args) {
        std::string arg = trim(raw);
        std::string name, value;
        if (!split_option(arg, name, value)) {
            if (arg.empty()) throw std::invalid_argument("empty argument");
            static const char* const known[] = {"root", "shard_key", "max_records", "max_bytes", "max_open",
                                                "busy_timeout", "deadlock_timeout", "initial_buckets", "synchronous", "workers",
                                                "pending_timeout", "log_retention", "page_size",
                                                "cluster", "token_file", "timeout_ms", "connect_timeout_ms", "retries"};
            for (const char* option : known) {
                if (arg == option) {
                    throw std::invalid_argument("argument '" + arg + "' is not of the form name=value");
                }
            }
            parsed.definitions.push_back(arg);
            continue;
        }
        if (name == "shard_key") {
            if (value.empty()) throw std::invalid_argument("shard_key is empty: name a column");
            parsed.shard_key = value;
        } else if (name == "root") {
            if (value.empty()) throw std::invalid_argument("root is empty: give the store directory, e.g. root='data'");
            options.root = value;
            have_root = true;
        } else if (name == "cluster") {
            if (value.empty()) throw std::invalid_argument("cluster is empty: give a node, e.g. cluster='http://127.0.0.1:9080'");
            parsed.cluster.url = value;
        } else if (name == "token_file") {
            if (value.empty()) throw std::invalid_argument("token_file is empty: name the file holding the cluster token");
            parsed.cluster.token_file = value;
        } else if (name == "timeout_ms") {
            parsed.cluster.timeout_ms = static_cast<int>(parse_count(name, value, 1, 3600 * 1000));
        } else if (name == "connect_timeout_ms") {
            parsed.cluster.connect_timeout_ms = static_cast<int>(parse_count(name, value, 1, 3600 * 1000));
        } else if (name == "retries") {
            parsed.cluster.retries = static_cast<int>(parse_count(name, value, 0, 100));
        } else if (name == "max_records") {
            options.limits.max_records = parse_count(name, value, 1, int64_t{1} << 40);
            options.limits_given = true;
        } else if (name == "max_bytes") {
            options.limits.max_bytes = parse_count(name, value, 4096, int64_t{1} << 40);
            options.limits_given = true;
        } else if (name == "max_open") {
            options.max_open = static_cast<int>(parse_count(name, value, 1, 1 << 20));
        } else if (name == "busy_timeout") {
            options.busy_timeout_ms = static_cast<int>(parse_count(name, value, 0, 3600 * 1000));
        } else if (name == "workers") {
            options.workers = static_cast<int>(parse_count(name, value, 1, 256));
        } else if (name == "deadlock_timeout") {
            options.lock_wait_holding_ms = static_cast<int>(parse_count(name, value, 0, 3600 * 1000));
        } else if (name == "pending_timeout") {
            options.pending_timeout_ms = static_cast<int>(parse_count(name, value, 1, 3600 * 1000));
        } else if (name == "log_retention") {
            options.log_retention = parse_count(name, value, 0, int64_t{1} << 40);
        } else if (name == "initial_buckets") {
            int64_t n = parse_count(name, value, 1, 65536);
            int depth = 0;
            while ((int64_t{1} << depth) < n) ++depth;
            options.initial_depth = depth;
        } else if (name == "page_size") {
            int64_t n = parse_count(name, value, 512, 65536);
            if ((n & (n - 1)) != 0) throw std::invalid_argument("page_size must be a power of two from 512 to 65536, got " + value);
            options.page_size = static_cast<int>(n);
        } else if (name == "synchronous") {
            std::string upper;
            for (char c : value) upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
            if (upper != "OFF" && upper != "NORMAL" && upper != "FULL" && upper != "EXTRA") {
                throw std::invalid_argument("synchronous must be OFF, NORMAL, FULL or EXTRA, got '" + value + "'");
            }
            options.synchronous = upper;
        } else {
            throw std::invalid_argument("unknown argument '" + name +
                                        "' (known: root, shard_key, max_records, max_bytes, max_open, busy_timeout, "
                                        "deadlock_timeout, pending_timeout, log_retention, initial_buckets, synchronous, workers, page_size, "
                                        "cluster, token_file, timeout_ms, connect_timeout_ms, retries)");
        }
    }
    if (!parsed.cluster.url.empty()) {
        if (have_root) throw std::invalid_argument("give root (a local store) or cluster (aerialsd nodes), not both");
        if (parsed.cluster.token_file.empty()) {
            throw std::invalid_argument("cluster needs token_file: the file holding the cluster token");
        }
        return parsed;
    }
    if (!parsed.cluster.token_file.empty()) throw std::invalid_argument("token_file is only for cluster=...");
    if (!have_root) {
        throw std::invalid_argument("missing argument root: e.g. USING aerials(root='data') (or cluster='http://host:port')");
    }
    return parsed;
}

}  // namespace aerials::vtab
