#!/usr/bin/env bash
# Makes a patched PostgreSQL source tree: extracts the upstream tarball, applies every
# *.patch of PATCH_DIR in name order, and brings DEST up to date with the result.
# Only files whose content changed are rewritten in DEST, so an incremental `make` in a
# VPATH build of DEST recompiles just what the patch series touched.
#
# Usage: scripts/prepare-postgres-source.sh TARBALL PATCH_DIR DEST
set -euo pipefail

tarball=${1:?usage: prepare-postgres-source.sh TARBALL PATCH_DIR DEST}
patch_dir=${2:?usage: prepare-postgres-source.sh TARBALL PATCH_DIR DEST}
dest=${3:?usage: prepare-postgres-source.sh TARBALL PATCH_DIR DEST}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=/dev/null
. "$root/vendor/postgres-v15/SOURCE"

work=$(mktemp -d "${TMPDIR:-/tmp}/pg-prepare.XXXXXX")
trap 'rm -rf "$work"' EXIT

tar -xjf "$tarball" -C "$work"
tree="$work/$PG_TARBALL_TOPDIR"
[ -d "$tree" ] || { echo "prepare-postgres-source: $PG_TARBALL_TOPDIR/ not in $tarball" >&2; exit 1; }

shopt -s nullglob
count=0
for p in "$patch_dir"/*.patch; do
  # --fuzz=0: a patch that no longer applies exactly is an error, not a guess.
  if ! patch -d "$tree" -p1 --forward --fuzz=0 --batch --quiet --no-backup-if-mismatch < "$p"; then
    echo "prepare-postgres-source: patch $(basename "$p") does not apply" >&2
    exit 1
  fi
  count=$((count + 1))
done
find "$tree" -name '*.orig' -delete

mkdir -p "$dest"
python3 "$root/scripts/sync_tree.py" "$tree" "$dest"
echo "prepare-postgres-source: $dest ready ($count patches applied)"
