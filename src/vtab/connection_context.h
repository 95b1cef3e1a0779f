// What the aerials SQL faces of one database connection share: the stores
// they opened, keyed by absolute root, so that every table and function on the
// same root in one connection uses one Store (one LRU, one transaction).
//
// A table holds its store for as long as it is connected. Functions and views
// (aerials_map, aerials_buckets, aerials_collections) hold theirs only while a
// query runs, so the context also keeps the stores they used most recently:
// opening a store costs a catalog open, a map load and the start of its read
// pool's threads, which would otherwise be paid again by every query.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cluster/cluster_client.h"
#include "store/store.h"
#include "vtab/module_args.h"

namespace aerials::vtab {

class ConnectionContext {
public:
    // How many stores functions and views keep open beyond their queries.
    // Each may hold up to 2 x max_open bucket connections (its LRU and its
    // worker threads' idle connections, about 3 descriptors each), so the
    // bound is small: a connection usually works on one or two roots.
    static constexpr size_t kKeptStores = 2;

    // For a table: the store at options.root that a table or a running query
    // of this connection holds, or a new one opened with `options`. A store
    // that only the keep list holds is replaced, so that the table's own
    // settings (max_open, workers, ...) take effect.
    std::shared_ptr<store::Store> store_for(const store::StoreOptions& options);
    // For functions and views: the store at `root` in use in this connection,
    // or a kept one, or a new one opened with the default settings (never
    // creating a store). Either way it becomes the most recently kept store.
    std::shared_ptr<store::Store> store_at(const std::string& root);
    // The store in use or kept in this connection for `root`, or null.
    std::shared_ptr<store::Store> find(const std::string& root);

    // For a cluster table: the client of this connection for args.url, made
    // (and its token read) on first use or when the settings changed.
    std::shared_ptr<cluster::ClusterClient> cluster_for(const ClusterArgs& args);
    // For functions and views given a cluster URL where they take a root:
    // the client a cluster table of this connection made. Throws naming the
    // URL when there is none (the token comes with the table's token_file).
    std::shared_ptr<cluster::ClusterClient> cluster_at(const std::string& url);
    static bool is_cluster_url(const std::string& location) { return location.rfind("http://", 0) == 0; }

private:
    struct Entry {
        std::weak_ptr<store::Store> store;
        // The catalog file the store opened, to notice a store that was
        // removed and created again at the same root.
        dev_t device = 0;
        ino_t inode = 0;
    };
    std::shared_ptr<store::Store> open_new(const std::string& key, const store::StoreOptions& options);
    // A kept store that nothing else holds is stale when its catalog file is
    // not the one at its root any more, or when another connection changed
    // the collections since it loaded them (aerials_map shows collections
    // as views, aerials_buckets counts their rows).
    bool stale(const Entry& entry, store::Store& store) const;
    bool held_elsewhere(const std::shared_ptr<store::Store>& store) const;
    void keep(const std::shared_ptr<store::Store>& store);
    void forget(const std::shared_ptr<store::Store>& store);

    std::map<std::string, Entry> stores_;
    std::vector<std::shared_ptr<store::Store>> kept_;  // most recently used first
    struct ClusterEntry {
        ClusterArgs args;
        std::shared_ptr<cluster::ClusterClient> client;
    };
    std::map<std::string, ClusterEntry> clusters_;  // by URL as written
};

// The SQLite result code for an exception caught at the boundary of SQLite's
// C code (which no exception may cross).
int result_code_of(const std::exception& e);

}  // namespace aerials::vtab
