#!/usr/bin/env bash
# Pageserver benchmarks: builds pagebench, the pageserver and neon_local, starts a pageserver
# in a temporary neon_local repository with one tenant (its `main` timeline bootstrapped from
# initdb), runs `pagebench getpage` against it and `pagebench ingest --generate-mb N`, and
# prints the machine and the figures. Everything it starts is stopped on exit.
#
# GetPage runs against a loaded timeline: a stock PostgreSQL is loaded with `pgbench -i -s
# PGBENCH_SCALE` and then runs PGBENCH_TRANSACTIONS transactions after a base backup; the base
# backup and that WAL are imported with `neon_local timeline import`, so part of the pages
# need WAL redo.
#
# Environment: BUILD_TYPE=release|debug (default release), INGEST_MB (default 200),
# GETPAGE_REQUESTS (default 100000), PGBENCH_SCALE (default 10), PGBENCH_TRANSACTIONS
# (default 20000), PG_PORT/HTTP_PORT (default 64100/9998, chosen apart from the defaults of a
# `make run` cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

build_type=${BUILD_TYPE:-release}
ingest_mb=${INGEST_MB:-200}
requests=${GETPAGE_REQUESTS:-100000}
pgbench_scale=${PGBENCH_SCALE:-10}
pgbench_transactions=${PGBENCH_TRANSACTIONS:-20000}
stock=/usr/lib/postgresql/15/bin
pg_port=${PG_PORT:-64100}
http_port=${HTTP_PORT:-9998}

if [ "$build_type" = release ]; then
  cargo build --release -p pagebench -p pageserver -p control_plane -p pagectl
  bin=target/release
else
  cargo build -p pagebench -p pageserver -p control_plane -p pagectl
  bin=target/debug
fi

NEON_REPO_DIR=$(mktemp -d /tmp/bench-pageserver.XXXXXX)
export NEON_REPO_DIR
# The `postgres` user that `pagebench ingest` runs PostgreSQL as must reach its data directory.
chmod 711 "$NEON_REPO_DIR"
cleanup() {
  # A PostgreSQL left by an interrupted `pagebench ingest` (it stops its own otherwise).
  for pid_file in "$NEON_REPO_DIR"/ingest/pagebench-*/pg/pgdata/postmaster.pid \
    "$NEON_REPO_DIR"/source/pgdata/postmaster.pid; do
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
"$bin/neon_local" tenant create --tenant-id "$tenant" --set-default

echo "== loading a timeline (pgbench -i -s $pgbench_scale, then $pgbench_transactions transactions)"
src="$NEON_REPO_DIR/source"
mkdir -p "$src/backup" && chown -R postgres "$src"
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$stock/initdb" -D "$src/pgdata" -A trust -U postgres --no-sync >/dev/null
cat >> "$src/pgdata/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$src'
wal_keep_size = '100GB'
fsync = off
CONF
as_pg "$stock/pg_ctl" -D "$src/pgdata" -l "$src/log" -w start >/dev/null
as_pg "$stock/pgbench" -h "$src" -i -q -s "$pgbench_scale" postgres
as_pg "$stock/pg_basebackup" -h "$src" -D "$src/backup" -Ft -X none --no-sync
base_lsn=$(awk '/START WAL LOCATION/ {print $4}' <(tar -xOf "$src/backup/base.tar" backup_label))
as_pg "$stock/pgbench" -h "$src" -n -c 4 -t $((pgbench_transactions / 4)) postgres | grep -E '^tps' || true
as_pg "$stock/psql" -h "$src" -qAtc "select pg_switch_wal()" postgres >/dev/null
as_pg "$stock/pg_ctl" -D "$src/pgdata" -m fast -w stop >/dev/null
# The import ends after the last valid record: the shutdown checkpoint.
hi=$((16#${base_lsn%/*})) lo=$((16#${base_lsn#*/}))
segno=$(( ((hi << 32) | lo) / (16 * 1024 * 1024) ))
first_seg=$(printf '%08X%08X%08X' 1 $((segno / 256)) $((segno % 256)))
wal_files=$(cd "$src/pgdata/pg_wal" && ls | grep -E '^[0-9A-F]{24}$' | sort | awk -v first="$first_seg" '$0 >= first')
# shellcheck disable=SC2086
end_lsn=$(cd "$src/pgdata/pg_wal" && "$root/$bin/pagectl" wal-dump $wal_files 2>/dev/null | tail -n 1 | sed 's/.*"end_lsn": "\([^"]*\)".*/\1/')
# shellcheck disable=SC2086
(cd "$src/pgdata/pg_wal" && tar -cf "$src/wal.tar" $wal_files)
timeline=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
import_started_ms=$(($(date +%s%N) / 1000000))
"$bin/neon_local" timeline import --timeline-id "$timeline" --branch-name loaded \
  --base-tarfile "$src/backup/base.tar" --base-lsn "$base_lsn" \
  --wal-tarfile "$src/wal.tar" --end-lsn "$end_lsn"
echo "imported $base_lsn..$end_lsn in $(( $(date +%s%N) / 1000000 - import_started_ms )) ms"

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
