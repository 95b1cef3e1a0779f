# Turns the schema files under sql/ into a C++ header, so the library carries
# the exact text that is versioned in the repository.
# Inputs: SQL_DIR, OUTPUT.
file(READ "${SQL_DIR}/catalog.sql" CATALOG_SQL)
file(READ "${SQL_DIR}/bucket.sql" BUCKET_SQL)
file(READ "${SQL_DIR}/catalog_migrate_2.sql" CATALOG_MIGRATE_2_SQL)
file(WRITE "${OUTPUT}.tmp"
"// Generated from sql/*.sql by cmake/embed_sql.cmake. Do not edit.
#pragma once
namespace aerials::schema {
inline constexpr const char* kCatalogSql = R\"aerials_sql(${CATALOG_SQL})aerials_sql\";
inline constexpr const char* kBucketSql = R\"aerials_sql(${BUCKET_SQL})aerials_sql\";
inline constexpr const char* kCatalogMigrate2Sql = R\"aerials_sql(${CATALOG_MIGRATE_2_SQL})aerials_sql\";
inline constexpr int kCatalogVersion = 2;
inline constexpr int kBucketVersion = 2;
}
")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
