#include "vtab/connection_context.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <new>
#include <stdexcept>

#include "vtab/store_view_support.h"

namespace aerials::vtab {

namespace {

std::string root_key(const std::string& root) {
    return std::filesystem::absolute(root).lexically_normal().string();
}

bool stat_catalog(const std::filesystem::path& root, struct stat* out) {
    return ::stat((root / "aerial.sq3").c_str(), out) == 0;
}

}  // namespace

bool ConnectionContext::held_elsewhere(const std::shared_ptr<store::Store>& store) const {
    long kept = std::count(kept_.begin(), kept_.end(), store);
    // One reference is the caller's own.
    return store.use_count() > 1 + kept;
}

void ConnectionContext::keep(const std::shared_ptr<store::Store>& store) {
    auto it = std::find(kept_.begin(), kept_.end(), store);
    if (it != kept_.end()) kept_.erase(it);
    kept_.insert(kept_.begin(), store);
    if (kept_.size() > kKeptStores) kept_.resize(kKeptStores);
}

void ConnectionContext::forget(const std::shared_ptr<store::Store>& store) {
    kept_.erase(std::remove(kept_.begin(), kept_.end(), store), kept_.end());
}

std::shared_ptr<store::Store> ConnectionContext::open_new(const std::string& key,
                                                          const store::StoreOptions& options) {
    // Entries of stores that have gone would otherwise pile up in a
    // connection that visits many roots.
    std::erase_if(stores_, [](const auto& item) { return item.second.store.expired(); });
    auto created = std::make_shared<store::Store>(options);
    Entry entry;
    entry.store = created;
    struct stat st {};
    if (stat_catalog(created->root(), &st)) {
        entry.device = st.st_dev;
        entry.inode = st.st_ino;
    }
    stores_[key] = entry;
    return created;
}

bool ConnectionContext::stale(const Entry& entry, store::Store& store) const try {
    struct stat st {};
    if (!stat_catalog(store.root(), &st) || st.st_dev != entry.device || st.st_ino != entry.inode) return true;
    // Both lists are ordered by name (Catalog::load_collections).
    std::vector<CatalogCollection> now = catalog_collections(store);
    const std::vector<store::Collection>& known = store.collections();
    if (now.size() != known.size()) return true;
    for (size_t i = 0; i < now.size(); ++i) {
        if (now[i].name != known[i].name || now[i].shard_key != known[i].shard_key() ||
            now[i].definition != known[i].definition) {
            return true;
        }
    }
    return false;
} catch (const std::exception&) {
    // Reopening names what is wrong with the store far better than this
    // check could.
    return true;
}

std::shared_ptr<store::Store> ConnectionContext::store_for(const store::StoreOptions& options) {
    std::string key = root_key(options.root);
    auto found = stores_.find(key);
    if (found != stores_.end()) {
        if (auto existing = found->second.store.lock()) {
            if (held_elsewhere(existing)) return existing;
            // Only kept: reopen with this table's options (as it was opened
            // before stores were kept, when the last table let it go).
            forget(existing);
            existing.reset();
        }
    }
    return open_new(key, options);
}

std::shared_ptr<store::Store> ConnectionContext::store_at(const std::string& root) {
    std::string key = root_key(root);
    auto found = stores_.find(key);
    if (found != stores_.end()) {
        if (auto existing = found->second.store.lock()) {
            if (held_elsewhere(existing) || !stale(found->second, *existing)) {
                keep(existing);
                return existing;
            }
            forget(existing);
            existing.reset();
        }
    }
    store::StoreOptions options;
    options.root = root;
    options.create_if_missing = false;
    auto created = open_new(key, options);
    keep(created);
    return created;
}

std::shared_ptr<store::Store> ConnectionContext::find(const std::string& root) {
    auto it = stores_.find(root_key(root));
    return it == stores_.end() ? nullptr : it->second.store.lock();
}

std::shared_ptr<cluster::ClusterClient> ConnectionContext::cluster_for(const ClusterArgs& args) {
    auto found = clusters_.find(args.url);
    if (found != clusters_.end()) {
        const ClusterArgs& had = found->second.args;
        if (had.token_file == args.token_file && had.timeout_ms == args.timeout_ms &&
            had.connect_timeout_ms == args.connect_timeout_ms && had.retries == args.retries) {
            return found->second.client;
        }
    }
    cluster::ClusterSettings settings;
    settings.seeds = cluster::parse_cluster_url(args.url);
    settings.token = cluster::read_token_file(args.token_file);
    settings.retries = args.retries;
    settings.http.idle_timeout = std::chrono::milliseconds(args.timeout_ms);
    settings.http.connect_timeout = std::chrono::milliseconds(args.connect_timeout_ms);
    auto client = std::make_shared<cluster::ClusterClient>(std::move(settings));
    clusters_[args.url] = {args, client};
    return client;
}

std::shared_ptr<cluster::ClusterClient> ConnectionContext::cluster_at(const std::string& url) {
    auto found = clusters_.find(url);
    if (found == clusters_.end()) {
        throw std::invalid_argument("no table of this connection uses cluster '" + url +
                                    "': create one with cluster='" + url + "', token_file=... first (it brings the token)");
    }
    return found->second.client;
}

int result_code_of(const std::exception& e) {
    if (auto* sqlite_error = dynamic_cast<const sqlite::Error*>(&e)) return sqlite_error->primary_code();
    if (dynamic_cast<const store::BucketRetired*>(&e)) return SQLITE_BUSY;
    if (dynamic_cast<const std::bad_alloc*>(&e)) return SQLITE_NOMEM;
    return SQLITE_ERROR;
}

}  // namespace aerials::vtab
