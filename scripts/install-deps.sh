#!/usr/bin/env bash
# Installs everything pgderive needs to build, test and run its demo, from Debian 12's
# packages. Idempotent: a second run installs nothing and takes a second or two.
# Both README commands call it.
set -euo pipefail

packages=(
  # toolchain
  build-essential g++ cmake ninja-build pkg-config clang-format git curl ca-certificates
  # clang + compiler-rt for the libFuzzer target of the decoder (tests/fuzz)
  clang libclang-rt-14-dev
  # GNU time for the benchmark's peak RSS
  time
  # libraries (every one from Debian; see docs/architecture.md, "Dependencies")
  libpq-dev libpqxx-dev libhiredis-dev nlohmann-json3-dev libyaml-cpp-dev
  libcurl4-openssl-dev libgtest-dev libgmock-dev libspdlog-dev libfmt-dev
  libcli11-dev libcpp-httplib-dev libsimdjson-dev
  # servers for the local stack (compose/local) and the benchmark ceiling
  postgresql-15 postgresql-client-15 redis-server
  # OpenSearch runs on the JDK from Maven Central jars
  openjdk-17-jdk-headless maven
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

# Package scripts must not start system-wide PostgreSQL or Redis services: the project
# runs its own servers on free ports (compose/local). policy-rc.d is Debian's switch for
# that; we only add it when none exists and remove exactly what we added.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
  "${sudo_cmd[@]}" chmod 755 "$policy"
  added_policy=1
fi
cleanup() { [ "$added_policy" -eq 0 ] || "${sudo_cmd[@]}" rm -f "$policy"; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: done"
