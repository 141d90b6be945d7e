#!/usr/bin/env bash
# Every relative Markdown link in README.md, docs/*.md and the folder READMEs resolves:
# the file (or folder) exists, and a #anchor into a Markdown file names one of its
# headings (GitHub's rule: lower case, punctuation dropped, spaces to '-'). Links inside
# code (fenced blocks, `spans`) and to http(s)/mailto are not checked. Fails naming
# every broken link as file:line: link.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

# The anchors of one Markdown file, one per line.
anchors() {
  awk '/^```/ { fence = !fence; next }
       !fence && /^#+ / {
         h = $0; sub(/^#+ +/, "", h); h = tolower(h)
         gsub(/[^a-z0-9 _-]/, "", h); gsub(/ /, "-", h)
         n = seen[h]++; print (n ? h "-" n : h)
       }' "$1"
}

# file:line:link for every relative link outside code.
links() {
  awk '/^```/ { fence = !fence; next }
       !fence {
         line = $0; gsub(/`[^`]*`/, "", line)
         while (match(line, /\]\([^)]+\)/)) {
           link = substr(line, RSTART + 2, RLENGTH - 3)
           line = substr(line, RSTART + RLENGTH)
           if (link !~ /^(https?:|mailto:)/) print FILENAME ":" FNR ":" link
         }
       }' "$@"
}

files=(README.md docs/*.md)
for f in */README.md sinks/*/README.md tests/*/README.md; do
  [ -f "$f" ] && files+=("$f")
done

bad=0
checked=0
while IFS= read -r entry; do
  file=${entry%%:*}
  rest=${entry#*:}
  line=${rest%%:*}
  link=${rest#*:}
  link=${link%% *}  # drop a "title"
  path=${link%%#*}
  anchor=
  [[ $link == *#* ]] && anchor=${link#*#}
  if [ -z "$path" ]; then
    target=$file
  else
    target=$(dirname "$file")/$path
  fi
  checked=$((checked + 1))
  if [ ! -e "$target" ]; then
    echo "$file:$line: $link: no such file" >&2
    bad=1
    continue
  fi
  if [ -n "$anchor" ] && [[ $target == *.md ]] && ! anchors "$target" | grep -qxF -- "$anchor"; then
    echo "$file:$line: $link: no heading with anchor #$anchor in $target" >&2
    bad=1
  fi
done < <(links "${files[@]}")

if [ "$bad" = 0 ]; then
  echo "docs: $checked relative links in ${#files[@]} files resolve"
fi
exit "$bad"
