#!/usr/bin/env bash
# Fetches the upstream PostgreSQL 15 tarball from Debian's source package and checks it
# against the checksum committed in vendor/postgres-v15/SOURCE.
#
# Usage: scripts/fetch-postgres-source.sh OUTPUT_TARBALL
#
# The tarball is kept in a cache outside the clone ($NEON_CACHE_DIR, default ~/.cache/neon-rs)
# so that fresh clones on the same machine do not download it again.
set -euo pipefail

out=${1:?usage: fetch-postgres-source.sh OUTPUT_TARBALL}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=/dev/null
. "$root/vendor/postgres-v15/SOURCE"
cache=${NEON_CACHE_DIR:-$HOME/.cache/neon-rs}/sources
mkdir -p "$cache"
cached="$cache/$PG_ORIG_TARBALL"

verify() {
  echo "$PG_ORIG_SHA256  $1" | sha256sum --check --status
}

if [ -f "$cached" ] && ! verify "$cached"; then
  echo "fetch-postgres-source: cached $cached has a wrong checksum, fetching again" >&2
  rm -f "$cached"
fi

if [ ! -f "$cached" ]; then
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  src_list=/etc/apt/sources.list.d/neon-rs-deb-src.sources
  if [ ! -f "$src_list" ]; then
    # Same archives the system already uses, but for source packages.
    system_list=/etc/apt/sources.list.d/debian.sources
    [ -f "$system_list" ] || { echo "fetch-postgres-source: $system_list not found" >&2; exit 1; }
    sed 's/^Types:.*$/Types: deb-src/' "$system_list" | "${sudo_cmd[@]}" tee "$src_list" >/dev/null
  fi
  "${sudo_cmd[@]}" apt-get update -qq
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  chmod 777 "$tmp"
  (cd "$tmp" && apt-get source --download-only "postgresql-15=$PG_DEBIAN_VERSION")
  [ -f "$tmp/$PG_ORIG_TARBALL" ] || { echo "fetch-postgres-source: $PG_ORIG_TARBALL not downloaded" >&2; exit 1; }
  verify "$tmp/$PG_ORIG_TARBALL" || { echo "fetch-postgres-source: checksum mismatch for $PG_ORIG_TARBALL" >&2; exit 1; }
  mv "$tmp/$PG_ORIG_TARBALL" "$cached.tmp"
  sync "$cached.tmp"
  mv "$cached.tmp" "$cached"
fi

mkdir -p "$(dirname "$out")"
cp "$cached" "$out.tmp"
mv "$out.tmp" "$out"
echo "fetch-postgres-source: $out ($PG_VERSION, sha256 verified)"
