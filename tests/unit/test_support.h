// Helpers shared by the unit tests: temporary store roots and SQLite values.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "sqlite/database.h"

namespace aerials::test {

// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
public:
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "aerials-unit-XXXXXX").string();
        if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::filesystem::path& path() const { return path_; }
    std::string str(const std::string& child = "") const { return (path_ / child).string(); }

private:
    std::filesystem::path path_;
};

// Produces sqlite3_value objects from SQL literals, e.g. value("5.0").
class Values {
public:
    Values() : db_(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) {}
    ~Values() {
        for (auto* v : owned_) sqlite3_value_free(v);
    }
    sqlite3_value* operator()(const std::string& literal) {
        sqlite::Statement stmt = db_.prepare("SELECT " + literal);
        stmt.step();
        sqlite3_value* v = sqlite3_value_dup(stmt.column_value(0));
        owned_.push_back(v);
        return v;
    }

private:
    sqlite::Database db_;
    std::vector<sqlite3_value*> owned_;
};

}  // namespace aerials::test
