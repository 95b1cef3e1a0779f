#include "store/bucket_repair.h"

#include <fcntl.h>

#include <stdexcept>
#include <system_error>

#include "store/bucket_builder.h"
#include "store/catalog.h"

namespace aerials::store {
namespace fs = std::filesystem;

namespace {

// Directories only: a directory descriptor holds no SQLite lock.
void sync_directory(const fs::path& dir) { fsync_path(dir, O_RDONLY | O_DIRECTORY); }

}  // namespace

fs::path quarantine_bucket_files(const fs::path& root, const BucketId& id) {
    fs::path source = root / id.relative_path();
    fs::path target = root / "quarantine" / (std::to_string(unix_ms_now()) + "-" + id.name());
    fs::create_directories(target);
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
        fs::path from = source.string() + suffix;
        std::error_code ec;
        if (!fs::exists(fs::symlink_status(from, ec))) continue;
        fs::rename(from, target / (source.filename().string() + suffix), ec);
        if (ec) {
            throw std::runtime_error("cannot move damaged bucket file '" + from.string() + "' into quarantine '" +
                                     target.string() + "': " + ec.message());
        }
    }
    sync_directory(target);
    sync_directory(target.parent_path());
    sync_directory(source.parent_path());
    return target;
}

int64_t rebuild_bucket_file(const fs::path& root, const BucketId& id, const std::vector<Collection>& collections,
                            int page_size, const std::function<void(BucketBuilder&)>& fill) {
    fs::path path = root / id.relative_path();
    std::error_code ec;
    if (fs::exists(fs::symlink_status(path, ec))) {
        // The builder would remove it: a file still there was never quarantined.
        throw std::runtime_error("cannot rebuild bucket file '" + path.string() + "': a file is still there");
    }
    BucketBuilder builder(root, id, collections, page_size);
    fill(builder);
    int64_t records = builder.records();
    DurabilityBatch batch(true);
    builder.seal(batch);
    batch.sync();
    return records;
}

}  // namespace aerials::store
