#!/usr/bin/env bash
# Creates (or refreshes) the Python virtualenv of the integration suite at .venv/ from the
# pinned test_runner/requirements.txt.
#
# Idempotent and fast when nothing changed: the venv carries a stamp with the hash of the
# requirements file and of the interpreter; when it matches, the script only prints a line.
#
#   PYTHON=python3.11     interpreter to build the venv from (default: python3, needs >= 3.11)
#   NEON_VENV=/some/dir   venv location (default: <repo>/.venv)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${NEON_VENV:-$root/.venv}
requirements="$root/test_runner/requirements.txt"
python=${PYTHON:-python3}

command -v "$python" >/dev/null 2>&1 || { echo "setup-python-env: $python not found" >&2; exit 1; }
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "setup-python-env: $python is $("$python" --version 2>&1); Python >= 3.11 is needed" >&2
  exit 1
fi

key=$( {
  sha256sum < "$requirements"
  "$python" -c 'import sys; print(sys.version); print(sys.executable)'
} | sha256sum | cut -c1-16)
stamp="$venv/.neon-requirements-key"

up_to_date() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && [ -x "$venv/bin/python" ]
}

if up_to_date; then
  echo "setup-python-env: $venv is up to date (key $key)"
  exit 0
fi

# Two concurrent callers must not build the same venv at once.
# (The lock lives outside the repo so that it never shows up in git status.)
mkdir -p "$(dirname "$venv")"
exec 9>"${TMPDIR:-/tmp}/neon-setup-python-env-$(echo "$venv" | sha256sum | cut -c1-12).lock"
flock 9
if up_to_date; then
  echo "setup-python-env: $venv is up to date (key $key)"
  exit 0
fi

echo "setup-python-env: creating $venv from $(basename "$requirements") with $("$python" --version 2>&1)"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
"$venv/bin/python" -m pip check
echo "$key" > "$stamp"
echo "setup-python-env: $venv ready (key $key)"
