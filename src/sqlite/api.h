// The one place that decides which SQLite the core library talks to.
//
// Built into the loadable extension (AERIALS_EXTENSION defined), every SQLite
// call goes through the host's sqlite3_api table: a second copy of SQLite in
// one process keeps its own POSIX lock bookkeeping and corrupts files that the
// host also has open. Built for the daemon and the unit tests, the same sources
// link libsqlite3 directly.
#pragma once

#ifdef AERIALS_EXTENSION
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT3
#else
#include <sqlite3.h>
#endif
