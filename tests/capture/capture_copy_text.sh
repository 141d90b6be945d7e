#!/usr/bin/env bash
# Records PostgreSQL's COPY text output of rows with every escape COPY writes (tab,
# newline, carriage return, backslash, other control characters, a literal "\N",
# NULL, unicode, an empty string, arrays and json with quotes) into
# tests/fixtures/copy/escapes.copy, for the COPY row parser's unit test.
#   tests/capture/capture_copy_text.sh DSN
set -euo pipefail
dsn=$1
out=$(cd "$(dirname "${BASH_SOURCE[0]}")/../fixtures/copy" && pwd)/escapes.copy
psql "$dsn" -X -q -v ON_ERROR_STOP=1 -c "\\copy (select * from (values
  (1, E'tab\\there', 'plain', null::text),
  (2, E'line\\nbreak\\r\\n', E'back\\\\slash', E'\\\\N'),
  (3, E'bell\\x07 and \\x01', '', 'Grüße, 東京 🐘'),
  (4, null, E'{\"a\\tb\",\"c\\\\\\\\d\",NULL}', '{\"k\": \"v\\\\\"q\"}')
) t(id, a, b, c) order by id) to '$out'"
echo "wrote $out ($(wc -c < "$out") bytes)"
