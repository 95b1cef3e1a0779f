#include "vtab/connection_context.h"

#include <filesystem>
#include <new>
#include <stdexcept>

namespace aerials::vtab {

namespace {
std::string root_key(const std::string& root) {
    return std::filesystem::absolute(root).lexically_normal().string();
}
}  // namespace

std::shared_ptr<store::Store> ConnectionContext::store_for(const store::StoreOptions& options) {
    std::string key = root_key(options.root);
    if (auto existing = stores_[key].lock()) return existing;
    auto created = std::make_shared<store::Store>(options);
    stores_[key] = created;
    return created;
}

std::shared_ptr<store::Store> ConnectionContext::find(const std::string& root) {
    auto it = stores_.find(root_key(root));
    return it == stores_.end() ? nullptr : it->second.lock();
}

int result_code_of(const std::exception& e) {
    if (auto* sqlite_error = dynamic_cast<const sqlite::Error*>(&e)) return sqlite_error->primary_code();
    if (dynamic_cast<const store::BucketRetired*>(&e)) return SQLITE_BUSY;
    if (dynamic_cast<const std::bad_alloc*>(&e)) return SQLITE_NOMEM;
    return SQLITE_ERROR;
}

}  // namespace aerials::vtab
