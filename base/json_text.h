#pragma once

// JSON text written by hand on hot paths (log lines, store documents): a string literal
// with RFC 8259 escapes. Whole documents are built with nlohmann::json elsewhere.

#include <string>
#include <string_view>

namespace pgderive {

// Appends `text` as a JSON string literal (quotes, escapes; UTF-8 passes through).
void AppendJsonString(std::string& out, std::string_view text);

}  // namespace pgderive
