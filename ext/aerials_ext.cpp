// Entry point of the loadable extension: `.load ./aerials` in the sqlite3
// shell, conn.load_extension(...) in Python. A thin shell over src/vtab.
#include <memory>
#include <string>

#include "sqlite/api.h"
#include "vtab/buckets_view.h"
#include "vtab/connection_context.h"
#include "vtab/map_function.h"
#include "vtab/table_module.h"
#include "vfs/vfs_sql.h"

SQLITE_EXTENSION_INIT1

extern "C" __attribute__((visibility("default"))) int sqlite3_aerials_init(sqlite3* db, char** err,
                                                                           const sqlite3_api_routines* api) {
    SQLITE_EXTENSION_INIT2(api);
    // sqlite3_vtab_in (routing of key IN (...)) arrived in 3.38.
    if (sqlite3_libversion_number() < 3038000) {
        *err = sqlite3_mprintf("aerials needs SQLite 3.38 or newer; this process runs %s", sqlite3_libversion());
        return SQLITE_ERROR;
    }
    try {
        auto context = std::make_shared<aerials::vtab::ConnectionContext>();
        int rc = aerials::vtab::register_table_module(db, context);
        if (rc == SQLITE_OK) rc = aerials::vtab::register_buckets_view(db, context);
        if (rc == SQLITE_OK) rc = aerials::vtab::register_stats_function(db, context);
        if (rc == SQLITE_OK) rc = aerials::vtab::register_map_module(db, context);
        if (rc == SQLITE_OK) rc = aerials::vfs::register_sharding_vfs(db);
        if (rc != SQLITE_OK) *err = sqlite3_mprintf("aerials: registration failed: %s", sqlite3_errmsg(db));
        return rc;
    } catch (const std::exception& e) {
        *err = sqlite3_mprintf("aerials: %s", e.what());
        return SQLITE_ERROR;
    }
}
