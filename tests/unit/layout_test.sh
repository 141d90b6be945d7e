#!/usr/bin/env bash
# The tree's layering (docs/architecture.md, "Layout"): a folder includes only folders earlier
# in the dependency order
#   base -> config -> cdc -> spool -> migrations -> snapshot -> sinks/common -> sinks/<store>
# with pipeline after sinks/common (never a concrete store) and app last; and a folder's
# private headers (FOLDER/internal/) are included only inside FOLDER (and by its unit
# tests). Fails naming every such include as file:line.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
rank() {
  case "$1" in
    base/*) echo 0 ;;
    config/*) echo 1 ;;
    cdc/*) echo 2 ;;
    spool/*) echo 3 ;;
    migrations/*) echo 4 ;;
    snapshot/*) echo 5 ;;
    sinks/common/*) echo 6 ;;
    sinks/*) echo 7 ;;
    pipeline/*) echo 7 ;;
    app/*) echo 9 ;;
    *) echo -1 ;;
  esac
}
folder() { case "$1" in sinks/*) echo "$1" | cut -d/ -f1-2 ;; *) echo "${1%%/*}" ;; esac; }
bad=0
while IFS=: read -r file line text; do
  inc=$(sed -E 's/.*#include "([^"]+)".*/\1/' <<< "$text")
  from=$(rank "$file") to=$(rank "$inc")
  [ "$to" -ge 0 ] || continue
  [ "$(folder "$file")" = "$(folder "$inc")" ] && continue
  if [[ "$inc" == */internal/* ]]; then
    echo "$file:$line: includes $inc, a private header of $(folder "$inc")"
    bad=1
    continue
  fi
  # pipeline and the concrete stores share a rank but never see each other.
  if [ "$to" -gt "$from" ] || { [ "$to" -eq 7 ] && [ "$from" -eq 7 ]; }; then
    echo "$file:$line: includes $inc, a later layer ($(folder "$file") may use only earlier folders)"
    bad=1
  fi
done < <(grep -n '#include "' base/* config/* cdc/* spool/* migrations/* snapshot/* sinks/*/* pipeline/* app/* */internal/* sinks/*/internal/* 2>/dev/null | grep -v 'CMakeLists\|\.md:\|\.sql:\|\.cmake:')
if [ "$bad" -ne 0 ]; then exit 1; fi
echo "layout: no backward include"
