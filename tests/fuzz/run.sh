#!/usr/bin/env bash
# Runs a fuzzer for SECONDS, seeded with captured bytes: pgoutput_fuzz with every
# message of tests/fixtures/pgoutput (flag byte 1 for messages inside a stream),
# copy_text_fuzz with every row of tests/fixtures/copy (column count byte first). Exit
# non-zero on any crash, sanitizer report or broken invariant; the reproducer is left
# in WORKDIR.
#   tests/fuzz/run.sh FUZZER SECONDS WORKDIR
set -euo pipefail
fuzzer=$1 seconds=$2 work=$3
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mkdir -p "$work/corpus" "$work/artifacts"
if [ "$(basename "$fuzzer")" = copy_text_fuzz ]; then
  for file in "$root"/tests/fixtures/copy/*.copy; do
    perl -ne '
      my $n = () = /\t/g; open(my $out, ">", "'"$work/corpus/$(basename "$file" .copy)"'_$.") or die;
      binmode $out; print $out pack("C", $n + 1) . $_; close $out;
    ' "$file"
  done
else
  for file in "$root"/tests/fixtures/pgoutput/*.hex; do
    # perl is in every Debian (perl-base): hex lines -> one seed file per message.
    perl -ne '
      next if /^#/; my @f = split; next unless @f == 3;
      $in = 1 if $f[2] =~ /^53/; $in = 0 if $f[2] =~ /^45/;
      open(my $out, ">", "'"$work/corpus/$(basename "$file" .hex)"'_$.") or die;
      binmode $out; print $out pack("C", $in ? 1 : 0) . pack("H*", $f[2]); close $out;
    ' "$file"
  done
fi
echo "fuzz: $(ls "$work/corpus" | wc -l) seeds, ${seconds}s" >&2
"$fuzzer" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
  "$work/corpus" 2>&1 | tail -n 25
