// Chunk rows: content-addressed, reference-counted blobs in files_chunks.
//
// Reference counts are kept so that they are never too low after a crash:
// a writer adds its references before the manifest that uses them commits,
// and drops them only after the manifest that used them is gone. A crash in
// between leaves counts too high (space leaked, never data lost), and the
// collector recounts (collector.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "files/manifest.h"
#include "store/store.h"

namespace aerials::files {

// A chunk's bytes do not match its address, or it is missing. The message
// names the object, the chunk and the bucket file.
class ChunkDamaged : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The chunk list in column `column` of the current row (none when NULL).
std::vector<ChunkRef> chunk_list_column(sqlite::Statement& row, int column, const std::string& object);

class ChunkStore {
public:
    explicit ChunkStore(store::Store& store) : store_(store) {}

    // Inside the store's write transaction: one more reference to the chunk
    // `sha256`, storing `data` if the chunk is new. `now` marks it as in use.
    // Returns the bucket file written.
    std::shared_ptr<store::BucketFile> add_ref(const Sha256& sha256, const uint8_t* data, int64_t size, int64_t now);

    // Reads the chunk's bytes into `out` (resized to its size) with
    // incremental blob I/O, without checking them; returns the bucket file's
    // path. `context` names the object and chunk for errors.
    std::string read_raw(const ChunkRef& chunk, std::vector<uint8_t>& out, const std::string& context);
    // Throws ChunkDamaged unless `data` hashes to `chunk.sha256`.
    static void verify(const ChunkRef& chunk, const std::vector<uint8_t>& data, const std::string& context,
                       const std::string& bucket_path);
    void read(const ChunkRef& chunk, std::vector<uint8_t>& out, const std::string& context) {
        std::string path = read_raw(chunk, out, context);
        verify(chunk, out, context, path);
    }

    // Drops one reference to each chunk and removes chunks left with none;
    // commits. Call only after the manifest rows naming them are committed gone.
    void release(const std::vector<ChunkRef>& chunks);

private:
    store::Store& store_;
};

}  // namespace aerials::files
