#include "sinks/postgres/query_rewrite.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "base/table_name.h"

namespace pgderive {
namespace {

bool IsWordStart(unsigned char c) { return std::isalpha(c) || c == '_' || c >= 0x80; }
bool IsWordChar(unsigned char c) { return std::isalnum(c) || c == '_' || c == '$' || c >= 0x80; }

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsName(const SqlToken& t) {
  return t.kind == SqlToken::Kind::kWord || t.kind == SqlToken::Kind::kQuotedName;
}

bool IsWord(const std::vector<SqlToken>& tokens, size_t i, std::string_view word) {
  return i < tokens.size() && tokens[i].kind == SqlToken::Kind::kWord && tokens[i].text == word;
}

// Words that end a FROM item (so the next word is not an alias).
const std::set<std::string>& Keywords() {
  static const std::set<std::string> kWords = {
      "on",      "using",   "where",  "group",  "order",     "having", "limit",
      "offset",  "join",    "inner",  "left",   "right",     "full",   "outer",
      "cross",   "natural", "union",  "except", "intersect", "window", "for",
      "lateral", "as",      "select", "from",   "and",       "or",     "not"};
  return kWords;
}

struct TableAt {
  size_t first = 0, last = 0;  // token indexes of the reference
  std::string qualified;
  bool has_alias = false;
};

// Every table reference in the token stream.
std::vector<TableAt> FindTables(const std::vector<SqlToken>& tokens,
                                const std::string& default_schema) {
  std::vector<TableAt> found;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!IsName(tokens[i])) continue;
    const bool qualified = i + 2 < tokens.size() && tokens[i + 1].kind == SqlToken::Kind::kSymbol &&
                           tokens[i + 1].text == "." && IsName(tokens[i + 2]) &&
                           !(i + 3 < tokens.size() && tokens[i + 3].text == ".") &&
                           !(i > 0 && tokens[i - 1].text == ".");
    const bool after_from =
        i > 0 && (IsWord(tokens, i - 1, "from") || IsWord(tokens, i - 1, "join"));
    if (!after_from && !(qualified && i > 0 &&
                         (IsWord(tokens, i - 1, "from") || IsWord(tokens, i - 1, "join") ||
                          tokens[i - 1].text == ","))) {
      continue;
    }
    if (tokens[i].kind == SqlToken::Kind::kWord && tokens[i].text == "lateral") continue;
    TableAt at;
    at.first = i;
    if (qualified) {
      at.qualified = tokens[i].text + "." + tokens[i + 2].text;
      at.last = i + 2;
    } else {
      if (i + 1 < tokens.size() && tokens[i + 1].text == "(") continue;  // a function
      at.qualified = default_schema + "." + tokens[i].text;
      at.last = i;
    }
    size_t next = at.last + 1;
    if (IsWord(tokens, next, "as")) ++next;
    at.has_alias =
        next < tokens.size() && IsName(tokens[next]) &&
        !(tokens[next].kind == SqlToken::Kind::kWord && Keywords().contains(tokens[next].text));
    found.push_back(std::move(at));
    i = at.last;
  }
  return found;
}

}  // namespace

Result<std::vector<SqlToken>> LexSql(std::string_view q) {
  std::vector<SqlToken> tokens;
  size_t i = 0;
  while (i < q.size()) {
    const unsigned char c = static_cast<unsigned char>(q[i]);
    if (std::isspace(c)) {
      ++i;
    } else if (c == '-' && i + 1 < q.size() && q[i + 1] == '-') {
      while (i < q.size() && q[i] != '\n') ++i;
    } else if (c == '/' && i + 1 < q.size() && q[i + 1] == '*') {
      const size_t close = q.find("*/", i + 2);
      if (close == std::string_view::npos) return Error::Permanent("query: unterminated comment");
      i = close + 2;
    } else if (c == '\'' || ((c == 'e' || c == 'E') && i + 1 < q.size() && q[i + 1] == '\'')) {
      const bool escapes = c != '\'';
      const size_t begin = i;
      i += escapes ? 2 : 1;
      while (true) {
        if (i >= q.size()) return Error::Permanent("query: unterminated string literal");
        if (escapes && q[i] == '\\') {
          i += 2;
          continue;
        }
        if (q[i] == '\'') {
          if (i + 1 < q.size() && q[i + 1] == '\'') {
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        ++i;
      }
      tokens.push_back(
          {SqlToken::Kind::kString, std::string(q.substr(begin, i - begin)), begin, i});
    } else if (c == '$' && i + 1 < q.size() && (q[i + 1] == '$' || IsWordStart(q[i + 1]))) {
      const size_t tag_end = q.find('$', i + 1);
      if (tag_end == std::string_view::npos) return Error::Permanent("query: stray $");
      const std::string_view tag = q.substr(i, tag_end - i + 1);
      const size_t close = q.find(tag, tag_end + 1);
      if (close == std::string_view::npos) return Error::Permanent("query: unterminated $ quote");
      const size_t begin = i;
      i = close + tag.size();
      tokens.push_back(
          {SqlToken::Kind::kString, std::string(q.substr(begin, i - begin)), begin, i});
    } else if (c == '"') {
      const size_t begin = i;
      std::string name;
      ++i;
      while (true) {
        if (i >= q.size()) return Error::Permanent("query: unterminated quoted name");
        if (q[i] == '"') {
          if (i + 1 < q.size() && q[i + 1] == '"') {
            name += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        name += q[i++];
      }
      tokens.push_back({SqlToken::Kind::kQuotedName, name, begin, i});
    } else if (IsWordStart(c)) {
      const size_t begin = i;
      while (i < q.size() && IsWordChar(static_cast<unsigned char>(q[i]))) ++i;
      tokens.push_back({SqlToken::Kind::kWord, Lower(q.substr(begin, i - begin)), begin, i});
    } else if (std::isdigit(c)) {
      const size_t begin = i;
      while (i < q.size() && (std::isalnum(static_cast<unsigned char>(q[i])) || q[i] == '.')) ++i;
      tokens.push_back(
          {SqlToken::Kind::kNumber, std::string(q.substr(begin, i - begin)), begin, i});
    } else {
      tokens.push_back({SqlToken::Kind::kSymbol, std::string(1, static_cast<char>(c)), i, i + 1});
      ++i;
    }
  }
  return tokens;
}

Result<std::string> RewriteQuery(std::string_view query, const QueryRewrite& rewrite,
                                 const std::string& default_schema) {
  auto lexed = LexSql(query);
  if (!lexed.ok()) return lexed.error();
  const auto& tokens = lexed.value();
  struct Edit {
    size_t begin, end;
    std::string text;
  };
  std::vector<Edit> edits;
  for (const TableAt& at : FindTables(tokens, default_schema)) {
    auto it = rewrite.replacements.find(at.qualified);
    if (it == rewrite.replacements.end()) continue;
    std::string text = it->second;
    if (!at.has_alias) {
      const SqlToken& name = tokens[at.last];
      text += " as \"" + name.text + "\"";
    }
    edits.push_back({tokens[at.first].begin, tokens[at.last].end, std::move(text)});
    if (rewrite.inner_join_to && *rewrite.inner_join_to == at.qualified && at.first >= 2 &&
        IsWord(tokens, at.first - 1, "join")) {
      size_t j = at.first - 2;
      if (IsWord(tokens, j, "outer") && j > 0) --j;
      if (IsWord(tokens, j, "left")) {
        edits.push_back({tokens[j].begin, tokens[at.first - 1].begin, ""});
      }
    }
  }
  std::sort(edits.begin(), edits.end(),
            [](const Edit& a, const Edit& b) { return a.begin < b.begin; });
  std::string out;
  size_t at = 0;
  for (const Edit& edit : edits) {
    out.append(query.substr(at, edit.begin - at));
    out += edit.text;
    at = edit.end;
  }
  out.append(query.substr(at));
  return out;
}

std::optional<std::string> UnsupportedConstruct(std::string_view query) {
  auto lexed = LexSql(query);
  if (!lexed.ok()) return lexed.error().message();
  const auto& t = lexed.value();
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i].kind != SqlToken::Kind::kWord) continue;
    const std::string& w = t[i].text;
    if (w == "over") return "a window function (OVER)";
    if (w == "limit" || w == "offset" || w == "fetch") return "LIMIT/OFFSET/FETCH";
    if ((w == "right" || w == "full") &&
        (IsWord(t, i + 1, "join") || (IsWord(t, i + 1, "outer") && IsWord(t, i + 2, "join")))) {
      return "a " + std::string(w == "right" ? "RIGHT" : "FULL") + " JOIN";
    }
    if (w == "union" || w == "except" || w == "intersect") return "a set operation (" + w + ")";
    if (w == "distinct" && IsWord(t, i + 1, "on")) return "DISTINCT ON";
    if (w == "tablesample") return "TABLESAMPLE";
  }
  return std::nullopt;
}

std::vector<std::string> CalledFunctions(std::string_view query) {
  std::vector<std::string> out;
  auto lexed = LexSql(query);
  if (!lexed.ok()) return out;
  const auto& t = lexed.value();
  for (size_t i = 0; i + 1 < t.size(); ++i) {
    if (IsName(t[i]) && t[i + 1].text == "(") out.push_back(t[i].text);
  }
  return out;
}

std::string QuoteIdent(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string QuoteTable(std::string_view table) {
  auto [schema, name] = TableName::Parse(table);
  return QuoteIdent(schema) + "." + QuoteIdent(name);
}

std::string QuotedList(const std::vector<std::string>& names, const std::string& prefix) {
  std::string out;
  for (const std::string& name : names)
    out += (out.empty() ? "" : ", ") + prefix + QuoteIdent(name);
  return out;
}

}  // namespace pgderive
