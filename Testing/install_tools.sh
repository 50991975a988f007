#!/usr/bin/env bash
# Installs the Debian packages that tests and benchmarks run as peers or validators
# (Testing/debian-packages.txt, one package per line, '#' comments). Idempotent and quick when they
# are present. Without root or apt it only reports what is missing: the tests that need a tool
# then skip with that reason, unless MMANNO_REQUIRE_TOOLS=1 turns the absence into a failure.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
missing=()
while read -r line; do
  pkg=${line%%#*}; pkg=$(echo "$pkg" | xargs)
  [ -z "$pkg" ] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < "$here/debian-packages.txt"
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}" >&2
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
      || echo "could not install: ${missing[*]}" >&2
  fi
else
  echo "not root or no apt-get: these Debian packages are missing: ${missing[*]}" >&2
fi
exit 0
