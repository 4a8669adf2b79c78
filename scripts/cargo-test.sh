#!/usr/bin/env bash
# Runs the Rust test suite: cargo nextest where installed, cargo test otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  echo "cargo-test: cargo-nextest not found, using cargo test" >&2
  exec cargo test --workspace --no-fail-fast "$@"
fi
