#!/usr/bin/env bash
# Sets up a neon_local repository (if there is none) and starts the local cluster.
# Called by `make run` after everything is built.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
[ "${BUILD_TYPE:-debug}" = release ] && profile=release
neon_local="target/$profile/neon_local"
export NEON_REPO_DIR=${NEON_REPO_DIR:-$PWD/.neon}

if [ ! -f "$NEON_REPO_DIR/config" ]; then
  "$neon_local" init
fi
"$neon_local" start
"$neon_local" status
