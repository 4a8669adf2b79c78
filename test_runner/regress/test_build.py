"""The PostgreSQL build: the patch-series mechanism of scripts/prepare-postgres-source.sh, and
the installed pg_install/v15."""

from __future__ import annotations

import difflib
import os
import tarfile
from pathlib import Path

import pytest

from fixtures.paths import PG_VERSION
from fixtures.pg import PgBin
from fixtures.procs import ProcessRegistry

CONFIG_HEADER = "src/include/pg_config_manual.h"
MAIN_C = "src/backend/main/main.c"
CONTRIB_EXTENSIONS = ["amcheck", "pageinspect", "pg_stat_statements", "pgcrypto"]


def read_source_info(repo_root: Path) -> dict[str, str]:
    info = {}
    for line in (repo_root / "vendor/postgres-v15/SOURCE").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            info[key] = value
    return info


@pytest.fixture
def source_info(repo_root: Path) -> dict[str, str]:
    return read_source_info(repo_root)


@pytest.fixture
def pg_tarball(
    repo_root: Path, source_info: dict[str, str], process_registry: ProcessRegistry, test_output_dir
) -> Path:
    """The upstream PostgreSQL tarball: build/<tarball>, else the download cache, else fetched."""
    name = source_info["PG_ORIG_TARBALL"]
    cache = Path(os.environ.get("NEON_CACHE_DIR", Path.home() / ".cache/neon-rs")) / "sources"
    for candidate in (repo_root / "build" / name, cache / name):
        if candidate.is_file():
            return candidate
    fetched = test_output_dir / name
    process_registry.run(
        "fetch-postgres-source", [repo_root / "scripts/fetch-postgres-source.sh", fetched]
    )
    return fetched


def original_file(tarball: Path, topdir: str, relpath: str) -> str:
    with tarfile.open(tarball, "r:bz2") as tar:
        member = tar.extractfile(f"{topdir}/{relpath}")
        assert member is not None, f"{relpath} not in {tarball}"
        return member.read().decode()


def make_patch(relpath: str, old: str, new: str) -> str:
    """A unified diff of one file in the `-p1` layout (a/..., b/...) of our patch series."""
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"a/{relpath}",
            tofile=f"b/{relpath}",
        )
    )


def insert_after_first(text: str, anchor: str, addition: str) -> str:
    i = text.index(anchor) + len(anchor)
    return text[:i] + addition + text[i:]


def mtimes(tree: Path) -> dict[str, int]:
    result = {}
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            p = Path(dirpath, name)
            result[str(p.relative_to(tree))] = p.stat().st_mtime_ns
    return result


@pytest.mark.timeout(600)
def test_prepare_postgres_source_applies_patch_series(
    repo_root: Path,
    pg_tarball: Path,
    source_info: dict[str, str],
    process_registry: ProcessRegistry,
    test_output_dir: Path,
):
    script = repo_root / "scripts/prepare-postgres-source.sh"
    topdir = source_info["PG_TARBALL_TOPDIR"]
    patches = test_output_dir / "patches"
    patches.mkdir()
    dest = test_output_dir / "src"

    header = original_file(pg_tarball, topdir, CONFIG_HEADER)
    marker = "\n/* neon-rs test_build: added by 0001-test.patch */\n"
    patched_header = insert_after_first(header, "*/\n", marker)
    (patches / "0001-test.patch").write_text(make_patch(CONFIG_HEADER, header, patched_header))

    def prepare(name: str, check: bool = True):
        return process_registry.run(name, [script, pg_tarball, patches, dest], check=check)

    res = prepare("prepare-1")
    assert "1 patches applied" in res.stdout
    assert (dest / CONFIG_HEADER).read_text() == patched_header
    assert (dest / "configure").is_file() and (dest / MAIN_C).is_file()
    assert not list(dest.rglob("*.orig")) and not list(dest.rglob("*.rej"))

    # Nothing changed: nothing is rewritten, so make rebuilds nothing.
    before = mtimes(dest)
    prepare("prepare-2")
    assert mtimes(dest) == before

    # A second patch: only the file it touches gets a new modification time.
    main_c = original_file(pg_tarball, topdir, MAIN_C)
    patched_main = insert_after_first(main_c, "*/\n", "/* neon-rs test_build: 0002 */\n")
    (patches / "0002-main.patch").write_text(make_patch(MAIN_C, main_c, patched_main))
    res = prepare("prepare-3")
    assert "2 patches applied" in res.stdout
    after = mtimes(dest)
    assert (dest / MAIN_C).read_text() == patched_main
    changed = {path for path in before if after.get(path) != before[path]}
    assert changed == {MAIN_C}
    assert set(after) == set(before)

    # A patch that does not apply: a clear error naming it, and a non-zero exit.
    stale = make_patch(CONFIG_HEADER, header.replace("*/\n", "* not the real text */\n", 1), header)
    (patches / "0003-stale.patch").write_text(stale)
    res = prepare("prepare-bad", check=False)
    assert res.returncode != 0
    assert "patch 0003-stale.patch does not apply" in res.stderr
    # The failed run left the previous result alone.
    assert (dest / MAIN_C).read_text() == patched_main


def test_installed_postgres(pg_bin: PgBin, pg_distrib_dir: Path, source_info: dict[str, str]):
    """pg_install/v15 holds our PostgreSQL of the version in vendor/postgres-v15/SOURCE, with
    the contrib modules the project relies on (`make postgres` builds it)."""
    install = pg_distrib_dir / PG_VERSION
    assert (install / "bin/postgres").is_file(), (
        f"{install}/bin/postgres is missing: build PostgreSQL first (`make postgres`)"
    )
    version = pg_bin.version()
    assert version == f"postgres (PostgreSQL) {source_info['PG_VERSION']}", version
    sharedir = Path(pg_bin.run_capture(["pg_config", "--sharedir"]).strip())
    assert sharedir.is_relative_to(install)
    for ext in CONTRIB_EXTENSIONS:
        control = sharedir / "extension" / f"{ext}.control"
        assert control.is_file(), f"contrib module {ext} is not installed ({control} missing)"
    libdir = Path(pg_bin.run_capture(["pg_config", "--pkglibdir"]).strip())
    for ext in CONTRIB_EXTENSIONS:
        assert (libdir / f"{ext}.so").is_file(), f"{ext}.so missing in {libdir}"
