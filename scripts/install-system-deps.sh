#!/usr/bin/env bash
# Installs the Debian packages this project needs: PostgreSQL build dependencies,
# the protobuf compiler, and the stock PostgreSQL 15 used as a reference in tests.
# Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail

packages=(
  build-essential bison flex pkg-config
  libreadline-dev zlib1g-dev libssl-dev libxml2-dev libxslt1-dev libicu-dev
  liblz4-dev libzstd-dev libselinux1-dev libsystemd-dev uuid-dev libkrb5-dev libldap2-dev libpam0g-dev
  protobuf-compiler libprotobuf-dev
  postgresql-15 postgresql-client-15
  bzip2 xz-utils dpkg-dev ca-certificates
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-system-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-system-deps: all packages present"
fi

# The stock server must not run as a system service: tests start their own instances.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet postgresql 2>/dev/null; then
  "${sudo_cmd[@]}" systemctl stop postgresql || true
fi
