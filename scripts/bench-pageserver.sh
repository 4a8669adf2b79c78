#!/usr/bin/env bash
# Pageserver benchmarks: builds pagebench, the pageserver and neon_local, starts a pageserver
# in a temporary neon_local repository with one tenant (its `main` timeline bootstrapped from
# initdb), runs `pagebench getpage` against it and `pagebench ingest --generate-mb N`, and
# prints the machine and the figures. Everything it starts is stopped on exit.
#
# Environment: BUILD_TYPE=release|debug (default release), INGEST_MB (default 200),
# GETPAGE_REQUESTS (default 100000), PG_PORT/HTTP_PORT (default 64100/9998, chosen apart from
# the defaults of a `make run` cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

build_type=${BUILD_TYPE:-release}
ingest_mb=${INGEST_MB:-200}
requests=${GETPAGE_REQUESTS:-100000}
pg_port=${PG_PORT:-64100}
http_port=${HTTP_PORT:-9998}

if [ "$build_type" = release ]; then
  cargo build --release -p pagebench -p pageserver -p control_plane
  bin=target/release
else
  cargo build -p pagebench -p pageserver -p control_plane
  bin=target/debug
fi

NEON_REPO_DIR=$(mktemp -d /tmp/bench-pageserver.XXXXXX)
export NEON_REPO_DIR
# The `postgres` user that `pagebench ingest` runs PostgreSQL as must reach its data directory.
chmod 711 "$NEON_REPO_DIR"
cleanup() {
  # A PostgreSQL left by an interrupted `pagebench ingest` (it stops its own otherwise).
  for pid_file in "$NEON_REPO_DIR"/ingest/pagebench-*/pg/pgdata/postmaster.pid; do
    [ -f "$pid_file" ] || continue
    runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$(dirname "$pid_file")" \
      -m immediate stop || true
  done
  "$bin/neon_local" stop >/dev/null 2>&1 || "$bin/neon_local" stop --mode immediate || true
  rm -rf "$NEON_REPO_DIR"
}
trap cleanup EXIT INT TERM

echo "== machine"
echo "cpus:   $(nproc)"
echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "cpu:    $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "build:  $build_type"

echo "== setup"
tenant=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
timeline=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
"$bin/neon_local" init --pageserver-pg-port "$pg_port" --pageserver-http-port "$http_port"
"$bin/neon_local" start
"$bin/neon_local" tenant create --tenant-id "$tenant" --timeline-id "$timeline" --set-default

getpage() {
  echo "-- pagebench getpage $*"
  "$bin/pagebench" getpage --page-service "127.0.0.1:$pg_port" --http "127.0.0.1:$http_port" \
    --tenant "$tenant" --timeline "$timeline" --requests "$requests" "$@"
}
echo "== getpage"
getpage --sequential --connections 1 --depth 1
getpage --random --connections 1 --depth 1
getpage --random --connections 1 --depth 32
getpage --random --connections 4 --depth 8

echo "== ingest"
echo "-- pagebench ingest --generate-mb $ingest_mb"
mkdir "$NEON_REPO_DIR/ingest"
"$bin/pagebench" ingest --generate-mb "$ingest_mb" --workdir "$NEON_REPO_DIR/ingest"
