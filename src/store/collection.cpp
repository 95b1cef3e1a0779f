#include "store/collection.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "sqlite/database.h"

namespace aerials::store {
namespace {

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string trim(const std::string& s) {
    size_t b = 0, e = s.size();
    while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
    while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
    return s.substr(b, e - b);
}

bool starts_with_word(const std::string& text, const char* word) {
    std::string head = lower(text.substr(0, std::char_traits<char>::length(word)));
    if (head != word) return false;
    size_t n = head.size();
    return n == text.size() || !std::isalnum(static_cast<unsigned char>(text[n]));
}

// Splits "INDEX(a, b)" into its column list "a, b".
std::string index_columns(const std::string& def) {
    size_t open = def.find('(');
    size_t close = def.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) {
        throw std::invalid_argument("malformed index definition '" + def + "': use INDEX(column, ...)");
    }
    std::string columns = trim(def.substr(open + 1, close - open - 1));
    if (columns.empty()) throw std::invalid_argument("index definition '" + def + "' names no column");
    return columns;
}

// Fills create_table_sql, create_index_sql and columns, checking everything
// with SQLite in a private in-memory database.
void build(Collection& c, const std::vector<std::string>& column_defs, const std::vector<std::string>& index_defs,
           const std::string& shard_key) {
    std::string joined;
    for (const std::string& def : column_defs) joined += (joined.empty() ? "" : ", ") + def;
    c.create_table_sql = "CREATE TABLE " + quote_identifier(c.table) + "(" + joined + ")";
    sqlite::Database scratch(":memory:", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (sqlite3_exec(scratch.get(), c.create_table_sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
        throw std::invalid_argument("invalid definition of table " + c.name + ": " + sqlite3_errmsg(scratch.get()));
    }
    sqlite::Statement info =
        scratch.prepare("SELECT name, type, dflt_value FROM pragma_table_xinfo(?1) WHERE hidden = 0");
    info.bind(1, c.table);
    while (info.step()) {
        c.columns.push_back({info.column_text(0), info.column_text(1), "BINARY", info.column_text(2)});
    }
    info.reset();
    if (c.columns.empty()) throw std::invalid_argument("table " + c.name + " declares no columns");
    for (const CollectionColumn& column : c.columns) {
        if (lower(column.name) == "_pk") throw std::invalid_argument("column name _pk is reserved");
        if (lower(column.name).rfind("aerials_", 0) == 0) {
            throw std::invalid_argument("column name " + column.name + " is reserved (names starting with aerials_ are)");
        }
    }
    // Declared collations decide whether the store may merge sorted streams
    // itself (it compares with BINARY only).
    for (CollectionColumn& column : c.columns) {
        sqlite3* db = scratch.get();
        const char *type = nullptr, *collation = nullptr;
        int not_null = 0, pk = 0, autoinc = 0;
        if (sqlite3_table_column_metadata(db, "main", c.table.c_str(), column.name.c_str(), &type, &collation,
                                          &not_null, &pk, &autoinc) == SQLITE_OK && collation) {
            column.collation = collation;
        }
    }
    auto shard = std::find_if(c.columns.begin(), c.columns.end(),
                              [&](const CollectionColumn& col) { return lower(col.name) == lower(shard_key); });
    if (shard == c.columns.end()) {
        throw std::invalid_argument("shard_key " + shard_key + " is not a column of " + c.name);
    }
    c.shard_column = static_cast<int>(shard - c.columns.begin());
    int n = 0;
    for (const std::string& def : index_defs) {
        std::string sql = "CREATE INDEX " + quote_identifier(c.table + "_i" + std::to_string(++n)) + " ON " +
                          quote_identifier(c.table) + "(" + index_columns(def) + ")";
        if (sqlite3_exec(scratch.get(), sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
            throw std::invalid_argument("invalid index '" + def + "' on " + c.name + ": " +
                                        sqlite3_errmsg(scratch.get()));
        }
        c.create_index_sql.push_back(sql);
    }
}

}  // namespace

std::string quote_identifier(const std::string& name) {
    std::string out = "\"";
    for (char ch : name) {
        out.push_back(ch);
        if (ch == '"') out.push_back('"');
    }
    return out + "\"";
}

std::string quote_literal(const std::string& text) {
    std::string out = "'";
    for (char ch : text) {
        out.push_back(ch);
        if (ch == '\'') out.push_back('\'');
    }
    return out + "'";
}

char CollectionColumn::affinity() const {
    // SQLite's rules, in SQLite's order (datatype3.html, 3.1).
    std::string t = lower(type);
    if (t.find("int") != std::string::npos) return 'i';
    if (t.find("char") != std::string::npos || t.find("clob") != std::string::npos ||
        t.find("text") != std::string::npos) {
        return 't';
    }
    if (t.empty() || t.find("blob") != std::string::npos) return 'b';
    if (t.find("real") != std::string::npos || t.find("floa") != std::string::npos ||
        t.find("doub") != std::string::npos) {
        return 'r';
    }
    return 'n';
}

std::string Collection::frozen_table() const { return key_value ? "bucket_frozen" : "f_" + table.substr(2); }

const Collection& key_value_collection() {
    static const Collection kv = [] {
        Collection c;
        c.name = "";
        c.table = "bucket";
        c.key_value = true;
        c.columns = {{"key", "", "BINARY"}, {"subkey", "", "BINARY"}, {"value", "", "BINARY"}};
        c.shard_column = 0;
        return c;
    }();
    return kv;
}

Collection define_collection(const std::string& name, const std::vector<std::string>& definitions,
                             const std::string& shard_key) {
    if (name.empty()) throw std::invalid_argument("a collection needs a name");
    for (char ch : name) {
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') {
            throw std::invalid_argument("table name '" + name + "' may hold only letters, digits and _");
        }
    }
    if (shard_key.empty()) {
        throw std::invalid_argument("table " + name + " declares columns but no shard_key: add shard_key=<column>");
    }
    Collection c;
    c.name = lower(name);
    c.table = "c_" + c.name;
    std::vector<std::string> column_defs, index_defs;
    for (const std::string& raw : definitions) {
        std::string def = trim(raw);
        if (starts_with_word(def, "index")) {
            index_defs.push_back(def);
        } else if (starts_with_word(def, "foreign") || lower(" " + def + " ").find(" references ") != std::string::npos) {
            throw std::invalid_argument("FOREIGN KEY is not supported across buckets (nor REFERENCES): '" + def +
                                        "'");
        } else {
            column_defs.push_back(def);
        }
        c.definition += (c.definition.empty() ? "" : ", ") + def;
    }
    build(c, column_defs, index_defs, shard_key);
    return c;
}

std::vector<std::string> split_top_level(const std::string& text) {
    std::vector<std::string> parts(1);
    int depth = 0;
    char quote = 0;
    for (char c : text) {
        if (quote) {
            if (c == quote) quote = 0;
        } else if (c == '\'' || c == '"' || c == '`' || c == '[') {
            quote = c == '[' ? ']' : c;
        } else if (c == '(') {
            ++depth;
        } else if (c == ')') {
            if (--depth < 0) throw std::invalid_argument("definition '" + text + "' has an unbalanced ')'");
        } else if (c == ',' && depth == 0) {
            parts.emplace_back();
            continue;
        } else if (c == ';') {
            throw std::invalid_argument("definition '" + text + "' holds a ';'");
        }
        parts.back().push_back(c);
    }
    if (quote || depth != 0) throw std::invalid_argument("definition '" + text + "' has an unclosed quote or '('");
    return parts;
}

Collection collection_from_catalog(const std::string& name, const std::string& shard_key,
                                   const std::string& definition) {
    // The recorded definition is the declared one, comma-joined.
    std::vector<std::string> parts = split_top_level(definition);
    if (trim(parts.back()).empty()) parts.pop_back();
    return define_collection(name, parts, shard_key);
}

}  // namespace aerials::store
