#!/usr/bin/env bash
# Sets up a neon_local repository (if there is none), starts the local cluster, and makes sure
# there is a tenant with a `main` timeline. Called by `make run` after everything is built.
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
if [ -z "$("$neon_local" tenant list)" ]; then
  "$neon_local" tenant create --set-default
fi
"$neon_local" timeline list
cat <<TXT

The pageserver is running (page service 127.0.0.1:64000, HTTP API 127.0.0.1:9898).
Try:  curl -s http://127.0.0.1:9898/v1/tenant
Stop: NEON_REPO_DIR=$NEON_REPO_DIR $neon_local stop
(Compute endpoints, safekeepers and the storage broker arrive with later issues.)
TXT
