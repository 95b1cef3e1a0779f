// The SQL face of the files layer:
//
//   CREATE VIRTUAL TABLE files USING aerials_files(root='data' [, chunk_size=4M] [, versions=1]);
//   SELECT aerials_put(root, bucket, key, path [, content_type [, metadata [, tags]]]);  -- host file in
//   SELECT aerials_get(root, bucket, key, path [, version_id]);                        -- host file out
//   SELECT aerials_read(root, bucket, key, offset, length [, version_id]);             -- a range as a blob
//   ... and aerials_delete, aerials_versioning, aerials_lifecycle, aerials_tag,
//   aerials_upload_{create,part,part_file,complete,abort}, aerials_collect,
//   aerials_progress, and the table aerials_transfers.
//
// Every function and table here opens the store named by its root argument,
// so all are SQLITE_DIRECTONLY (never callable from views, triggers or a
// schema). Those that read or write other host files (aerials_put,
// aerials_get, aerials_upload_part_file) are left out when `host_files` is false.
#pragma once

#include <memory>

#include "sqlite/api.h"

namespace aerials::files {

class FilesContext;

// The per-connection registry of open object stores, shared by the table and
// the functions of one connection.
std::shared_ptr<FilesContext> make_files_context();

int register_files_functions(sqlite3* db, const std::shared_ptr<FilesContext>& context, bool host_files);
int register_files_table(sqlite3* db, const std::shared_ptr<FilesContext>& context);

}  // namespace aerials::files
