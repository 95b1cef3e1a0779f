// Chunk commits without an fsync each, made durable in the background and
// all at once before the manifest that names them commits (decision 0007,
// "Durability barrier").
#pragma once

#include <future>
#include <memory>
#include <set>
#include <string>

namespace aerials::store {
class BucketFile;
}

namespace aerials::files {

// Whether chunk commits under the store's `synchronous` setting are deferred
// to a barrier: FULL and EXTRA (their commits would fsync each); OFF and
// NORMAL keep what the store was asked for.
bool defers_chunk_syncs(const std::string& synchronous);

// While alive, commits on `file`'s connection do not fsync
// (synchronous=NORMAL: in WAL mode a crash may lose the latest of them, never
// corrupts the file or loses what was committed before with FULL). Restores
// `restore` (the store's setting) when it goes. Make it before the
// transaction starts (SQLite does not change the setting inside one: then
// nothing is relaxed) and end the transaction before it goes.
class RelaxedCommits {
public:
    RelaxedCommits(std::shared_ptr<store::BucketFile> file, const std::string& restore);
    ~RelaxedCommits();
    RelaxedCommits(const RelaxedCommits&) = delete;
    RelaxedCommits& operator=(const RelaxedCommits&) = delete;

private:
    std::shared_ptr<store::BucketFile> file_;  // kept open until restored
    std::string restore_;
    bool relaxed_ = false;
};

// The bucket files that took relaxed commits, made durable. For each file:
// a checkpoint on a connection of its own (it syncs the WAL, copies it into
// the database file and syncs that, as the close of the store's connection
// would do later, one file after the other), then fsync of the WAL, the
// database file and its directory, which is what the guarantee rests on (a
// checkpoint that readers hold back copies less; a WAL that a relaxed commit
// created was never synced, nor was its directory entry). fsync flushes a
// file whatever descriptor it is called on, so the store's connections,
// which it may have closed meanwhile, are not needed.
//
// flush() hands the files noted so far to a background thread, so that the
// disk works while the next chunks are hashed; one flush is in flight at a
// time (the next waits for it). sync() waits for it and does the files noted
// since, in parallel; when it returns, every noted commit is durable.
class DurabilityBarrier {
public:
    ~DurabilityBarrier();
    void note(const std::string& path) { pending_.insert(path); }
    void flush();
    // Throws std::runtime_error naming the file that could not be synced
    // (also for a background flush that failed).
    void sync();

private:
    std::set<std::string> pending_;
    std::future<void> in_flight_;
};

}  // namespace aerials::files
