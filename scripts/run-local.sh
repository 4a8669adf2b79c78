#!/usr/bin/env bash
# Sets up a neon_local repository (if there is none), starts the local cluster, makes sure
# there is a tenant with a `main` branch and a running primary endpoint `main` on it, and
# prints how to connect. Called by `make run` after everything is built.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
[ "${BUILD_TYPE:-debug}" = release ] && profile=release
neon_local="$PWD/target/$profile/neon_local"
export NEON_REPO_DIR=${NEON_REPO_DIR:-$PWD/.neon}

if [ ! -f "$NEON_REPO_DIR/config" ]; then
  "$neon_local" init
fi
# Idempotent: a second `make run` finds everything running and just prints the summary.
if ! "$neon_local" pageserver status 2>/dev/null | grep -q 'is running'; then
  "$neon_local" start
fi
if [ -z "$("$neon_local" tenant list)" ]; then
  "$neon_local" tenant create --set-default
fi
if [ ! -f "$NEON_REPO_DIR/endpoints/main/endpoint.json" ]; then
  "$neon_local" endpoint create main --branch-name main
fi
if ! "$neon_local" endpoint list | grep -qE '^main .* running$'; then
  "$neon_local" endpoint start main
fi
"$neon_local" timeline list
"$neon_local" endpoint list
port=$(sed -n 's/.*"pg_port": *\([0-9]*\).*/\1/p' "$NEON_REPO_DIR/endpoints/main/endpoint.json")
cat <<TXT

The local cluster runs: pageserver (page service 127.0.0.1:64000, HTTP API 127.0.0.1:9898)
and the primary endpoint "main" on branch main.
Connect: $PWD/pg_install/v15/bin/psql -h 127.0.0.1 -p $port -U cloud_admin postgres
Stop:    NEON_REPO_DIR=$NEON_REPO_DIR $neon_local stop
TXT
