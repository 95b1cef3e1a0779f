#include "vfs/inner_file.h"

#include <cstring>

#include "vfs/vfs_error.h"

namespace aerials::vfs {

InnerFile::InnerFile(sqlite3_vfs* vfs, std::string path, const char* sqlite_name)
    : vfs_(vfs), path_(std::move(path)), memory_(new char[vfs->szOsFile]()) {
    // c_str() adds the second NUL that ends the (empty) parameter list.
    name_ = path_ + '\0';
    open_name_ = sqlite_name ? sqlite_name : name_.c_str();
}

int InnerFile::open(int flags, int* out_flags) {
    close();
    int ignored = 0;
    int rc = vfs_->xOpen(vfs_, open_name_, file(), flags, out_flags ? out_flags : &ignored);
    // A VFS that set pMethods must see xClose even when xOpen failed.
    if (rc != SQLITE_OK) {
        if (file()->pMethods) file()->pMethods->xClose(file());
        file()->pMethods = nullptr;
        return rc;
    }
    open_ = true;
    return rc;
}

void InnerFile::close() {
    if (open_ && file()->pMethods) file()->pMethods->xClose(file());
    file()->pMethods = nullptr;
    open_ = false;
}

int64_t InnerFile::size() {
    sqlite3_int64 n = 0;
    int rc = file()->pMethods->xFileSize(file(), &n);
    if (rc != SQLITE_OK) throw VfsError(rc, "cannot read the size of '" + path_ + "'");
    return n;
}

bool InnerFile::read(void* buf, int amt, int64_t offset) {
    int rc = file()->pMethods->xRead(file(), buf, amt, offset);
    if (rc == SQLITE_OK) return true;
    if (rc == SQLITE_IOERR_SHORT_READ) return false;
    throw VfsError(rc, "cannot read " + std::to_string(amt) + " bytes at offset " + std::to_string(offset) +
                           " of '" + path_ + "'");
}

void InnerFile::write(const void* buf, int amt, int64_t offset) {
    int rc = file()->pMethods->xWrite(file(), buf, amt, offset);
    if (rc != SQLITE_OK) {
        throw VfsError(rc, "cannot write " + std::to_string(amt) + " bytes at offset " + std::to_string(offset) +
                               " of '" + path_ + "'");
    }
}

void InnerFile::truncate(int64_t size) {
    int rc = file()->pMethods->xTruncate(file(), size);
    if (rc != SQLITE_OK) throw VfsError(rc, "cannot truncate '" + path_ + "' to " + std::to_string(size) + " bytes");
}

void InnerFile::sync(int flags) {
    int rc = file()->pMethods->xSync(file(), flags);
    if (rc != SQLITE_OK) throw VfsError(rc, "cannot sync '" + path_ + "'");
}

}  // namespace aerials::vfs
