#!/usr/bin/env bash
# Builds our patched PostgreSQL 15 into pg_install/v15 (with contrib).
#
#   BUILD_TYPE=debug   (default) -O2, debug info, assertions
#   BUILD_TYPE=release debug info, no assertions
#
# A finished install is cached outside the clone, keyed by the source version, the patch
# series and the configure flags ($NEON_CACHE_DIR/postgres/, default ~/.cache/neon-rs), so a
# fresh clone on the same machine restores it instead of compiling. Without a cache entry the
# build runs in build/v15 (VPATH, incremental: only what the patches changed is recompiled).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=/dev/null
. vendor/postgres-v15/SOURCE

# When called from our Makefile, MAKELEVEL would make PostgreSQL's top-level make believe it
# is a sub-make and skip generating headers (errcodes.h, ...): start afresh.
unset MAKELEVEL MAKEFLAGS MFLAGS

build_type=${BUILD_TYPE:-debug}
jobs=${MAKE_JOBS:-$(nproc)}
case "$build_type" in
  debug) extra_flags="--enable-debug --enable-cassert" ;;
  release) extra_flags="--enable-debug" ;;
  *) echo "build-postgres: BUILD_TYPE must be debug or release, not $build_type" >&2; exit 1 ;;
esac
configure_flags="$extra_flags --enable-depend --with-openssl --with-lz4 --with-zstd --with-libxml --with-libxslt --with-icu --with-uuid=e2fs --without-llvm"

install_dir="$root/pg_install/v15"
src_dir="$root/build/v15-src"
obj_dir="$root/build/v15"
tarball="$root/build/$PG_ORIG_TARBALL"
cache_root=${NEON_CACHE_DIR:-$HOME/.cache/neon-rs}/postgres

key=$( {
  cat vendor/postgres-v15/SOURCE
  echo "$configure_flags"
  echo "install layout 2: regression suite in share/postgresql/regress"
  for p in vendor/postgres-v15/patches/*.patch; do
    [ -e "$p" ] || continue
    echo "== $(basename "$p")"
    cat "$p"
  done
} | sha256sum | cut -c1-16)
stamp="$install_dir/.neon-build-key"
cache_file="$cache_root/v15-$PG_VERSION-$build_type-$key.tar"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  echo "build-postgres: pg_install/v15 is up to date ($PG_VERSION, key $key)"
  exit 0
fi

# A fresh clone: restore the cached build of exactly this source, patches and flags.
if [ ! -d "$obj_dir" ] && [ -f "$cache_file" ]; then
  rm -rf "$install_dir"
  mkdir -p "$root/pg_install"
  tar -xf "$cache_file" -C "$root/pg_install"
  echo "$key" > "$stamp"
  echo "build-postgres: restored pg_install/v15 from cache (key $key)"
  exit 0
fi

[ -f "$tarball" ] || scripts/fetch-postgres-source.sh "$tarball"
scripts/prepare-postgres-source.sh "$tarball" vendor/postgres-v15/patches "$src_dir"

# --enable-depend makes make track header dependencies, so a patch that changes a header
# recompiles every file that includes it. New configure flags mean a clean build.
if [ -d "$obj_dir" ] && [ "$(cat "$obj_dir/.neon-configure-flags" 2>/dev/null)" != "$configure_flags" ]; then
  echo "build-postgres: configure flags changed, starting a clean build"
  rm -rf "$obj_dir"
fi
mkdir -p "$obj_dir"
if [ ! -f "$obj_dir/config.status" ]; then
  echo "build-postgres: configure $configure_flags"
  # shellcheck disable=SC2086
  (cd "$obj_dir" && "$src_dir/configure" --prefix="$install_dir" $configure_flags --quiet)
  echo "$configure_flags" > "$obj_dir/.neon-configure-flags"
fi

make -C "$obj_dir" -j"$jobs" -s all
make -C "$obj_dir/contrib" -j"$jobs" -s all
make -C "$obj_dir" -s install
make -C "$obj_dir/contrib" -s install
# pg_regress and the isolation tester, for running PostgreSQL's own suites against a compute.
make -C "$obj_dir/src/test/isolation" -s -j"$jobs" all
install -m 755 "$obj_dir/src/test/isolation/pg_isolation_regress" "$obj_dir/src/test/isolation/isolationtester" "$install_dir/bin/"
# PostgreSQL's regression suite (schedule, sql, expected, data) and its C
# module, so that tests can run it against an endpoint from a cached install too.
make -C "$obj_dir/src/test/regress" -s all
install -m 755 "$obj_dir/src/test/regress/pg_regress" "$install_dir/bin/"
install -m 755 "$obj_dir/src/test/regress/regress.so" "$install_dir/lib/postgresql/"
regress_share="$install_dir/share/postgresql/regress"
rm -rf "$regress_share"
mkdir -p "$regress_share"
cp -r "$src_dir/src/test/regress/"{sql,expected,data,parallel_schedule,resultmap} "$regress_share/"
echo "$key" > "$stamp"

# Keep a copy for fresh clones on this machine (best effort: a full disk only loses the cache).
if mkdir -p "$cache_root" 2>/dev/null; then
  find "$cache_root" -name 'v15-*.tar' -mtime +7 -delete 2>/dev/null || true
  if tar -cf "$cache_file.tmp" -C "$root/pg_install" v15 2>/dev/null; then
    mv "$cache_file.tmp" "$cache_file"
  else
    rm -f "$cache_file.tmp"
  fi
fi
echo "build-postgres: pg_install/v15 built ($PG_VERSION, $build_type, key $key)"
