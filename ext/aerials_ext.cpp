// Entry points of the loadable extension: `.load ./aerials` in the sqlite3
// shell, conn.load_extension(...) in Python. A thin shell over src/vtab,
// src/vfs and src/files.
//
//   sqlite3_aerials_init       everything
//   sqlite3_aerials_noio_init  everything but the functions that read or write
//                              host files named by their arguments (aerials_put,
//                              aerials_get, aerials_upload_part_file,
//                              aerials_vfs_import, aerials_vfs_export), for
//                              applications that run untrusted SQL:
//                              `.load ./aerials sqlite3_aerials_noio_init`
#include <memory>
#include <string>

#include "files/files_sql.h"
#include "sqlite/api.h"
#include "vtab/buckets_view.h"
#include "vtab/connection_context.h"
#include "vtab/map_function.h"
#include "vtab/table_module.h"
#include "vfs/vfs_sql.h"

SQLITE_EXTENSION_INIT1

namespace {

int init(sqlite3* db, char** err, const sqlite3_api_routines* api, bool host_files) {
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
        if (rc == SQLITE_OK && !host_files) {
            // Registered by the VFS layer for every connection; taken away
            // again here (a function created with no callbacks is deleted).
            for (auto [name, args] : {std::pair{"aerials_vfs_import", 2}, {"aerials_vfs_import", 3}, {"aerials_vfs_export", 2}}) {
                if (rc == SQLITE_OK) rc = sqlite3_create_function_v2(db, name, args, SQLITE_UTF8, nullptr, nullptr, nullptr, nullptr, nullptr);
            }
            // SQLite refuses that while a statement runs (the SQL function
            // load_extension()); loading without them is then impossible.
            if (rc != SQLITE_OK) {
                *err = sqlite3_mprintf("aerials: the host-file functions could not be left out (%s); load the extension "
                                       "with sqlite3_load_extension() or the shell's .load, not the SQL function load_extension()",
                                       sqlite3_errmsg(db));
                return rc;
            }
        }
        auto files = aerials::files::make_files_context();
        if (rc == SQLITE_OK) rc = aerials::files::register_files_table(db, files);
        if (rc == SQLITE_OK) rc = aerials::files::register_files_functions(db, files, host_files);
        if (rc != SQLITE_OK) *err = sqlite3_mprintf("aerials: registration failed: %s", sqlite3_errmsg(db));
        return rc;
    } catch (const std::exception& e) {
        *err = sqlite3_mprintf("aerials: %s", e.what());
        return SQLITE_ERROR;
    }
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int sqlite3_aerials_init(sqlite3* db, char** err,
                                                                           const sqlite3_api_routines* api) {
    return init(db, err, api, true);
}

extern "C" __attribute__((visibility("default"))) int sqlite3_aerials_noio_init(sqlite3* db, char** err,
                                                                                const sqlite3_api_routines* api) {
    return init(db, err, api, false);
}
