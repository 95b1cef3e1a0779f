#include "files/files_context.h"

#include <filesystem>

#include "files/files_sql.h"
#include "files/names.h"

namespace aerials::files {

ObjectStore& FilesContext::open(const store::StoreOptions& options) {
    std::string key = std::filesystem::absolute(options.root).lexically_normal().string();
    auto found = stores_.find(key);
    if (found != stores_.end()) return *found->second;
    if (!options.create_if_missing && !std::filesystem::exists(std::filesystem::path(options.root) / "aerial.sq3")) {
        throw InvalidName("no store at '" + options.root + "': create one with CREATE VIRTUAL TABLE files USING "
                          "aerials_files(root='" + options.root + "')");
    }
    auto created = std::make_unique<ObjectStore>(options);
    ObjectStore& ref = *created;
    stores_[key] = std::move(created);
    return ref;
}

ObjectStore& FilesContext::open(const std::string& root) {
    store::StoreOptions options;
    options.root = root;
    options.create_if_missing = false;
    options.cache_kib = ObjectStore::kCacheKib;
    return open(options);
}

int files_error_code(const std::exception& e) {
    if (auto* s = dynamic_cast<const sqlite::Error*>(&e)) return s->primary_code();
    if (dynamic_cast<const ChunkDamaged*>(&e)) return SQLITE_CORRUPT;
    if (dynamic_cast<const store::BucketRetired*>(&e)) return SQLITE_BUSY;
    if (dynamic_cast<const std::bad_alloc*>(&e)) return SQLITE_NOMEM;
    return SQLITE_ERROR;
}

std::shared_ptr<FilesContext> make_files_context() { return std::make_shared<FilesContext>(); }

}  // namespace aerials::files
