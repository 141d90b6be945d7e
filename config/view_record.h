#pragma once

// A view's definition as a store records it beside a version of the view's data
// (SPEC.md §1.4, versions): the serving version of a view whose definition changed in
// the file is maintained with its own, recorded definition until the new version
// replaces it, and a retained version until it is dropped - the file no longer holds
// them. Pure: JSON text in and out.
//
// What is recorded is what decides the entries (ViewDefinitionFingerprint's fields:
// name, store, from, columns, key template, index, table, key columns, query); the
// file's marks are not.

#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"

namespace pgderive {

std::string ViewRecord(const ViewConfig& view);
// nullopt: not a record this version wrote (malformed, or a key template that no
// longer parses).
std::optional<ViewConfig> ViewFromRecord(std::string_view json);

}  // namespace pgderive
