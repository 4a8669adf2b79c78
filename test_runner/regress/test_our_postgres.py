"""Our PostgreSQL build (pg_install/v15) runs, with contrib and our pgxn extensions, and the
neon_local CLI answers from the repository root."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fixtures.pg import PgBin


def test_our_postgres_runs_with_contrib_and_pgxn(vanilla_pg_factory, pg_bin: PgBin):
    pg = vanilla_pg_factory("ours", pg_bin=pg_bin).init()
    pg.configure({"shared_preload_libraries": "pg_stat_statements"})
    pg.start()
    assert "15.18" in pg.safe_psql("select version()")[0][0]
    # Debug builds carry assertions; the build type decides.
    expect_asserts = "on" if os.environ.get("BUILD_TYPE", "debug") == "debug" else "off"
    assert pg.safe_psql("show debug_assertions") == [(expect_asserts,)]

    for ext in ["amcheck", "pageinspect", "pg_stat_statements", "pgcrypto", "neon_test_utils"]:
        pg.safe_psql(f"create extension {ext}")
    pg.safe_psql("create table t as select g as id from generate_series(1, 1000) g")
    pg.safe_psql("create index t_id on t (id)")
    assert pg.safe_psql("select bt_index_check('t_id', true)") == [("",)]
    assert pg.safe_psql("select length(gen_random_bytes(16))") == [(16,)]
    assert pg.safe_psql("select count(*) > 0 from pg_stat_statements") == [(True,)]

    # test_consume_xids advances nextXid by exactly the requested amount.
    with pg.connect() as conn:
        before = conn.execute("select pg_current_xact_id()::text::bigint").fetchone()[0]
    consumed = pg.safe_psql("select test_consume_xids(10000)::text::bigint")[0][0]
    assert consumed == before + 1 + 10000
    after = pg.safe_psql("select pg_current_xact_id()::text::bigint")[0][0]
    assert after == consumed + 1


def run_neon_local(repo_root: Path, args: list[str], env_extra: dict[str, str]):
    env = dict(os.environ, **env_extra)
    return subprocess.run(
        ["cargo", "neon", *args],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cargo_neon(repo_root: Path, test_output_dir: Path):
    repo_dir = test_output_dir / "repo"
    env = {"NEON_REPO_DIR": str(repo_dir)}

    help_out = run_neon_local(repo_root, ["--help"], env)
    assert help_out.returncode == 0, help_out.stderr
    for command in ["init", "start", "stop", "tenant", "timeline", "endpoint", "pageserver"]:
        assert command in help_out.stdout

    init = run_neon_local(repo_root, ["init"], env)
    assert init.returncode == 0, init.stderr
    assert (repo_dir / "config").is_file()

    status = run_neon_local(repo_root, ["status"], env)
    assert status.returncode == 0, status.stderr
    assert "PostgreSQL) 15.18" in status.stdout
    assert str(repo_root / "pg_install") in status.stdout

    # A second init must not clobber an existing repository.
    again = run_neon_local(repo_root, ["init"], env)
    assert again.returncode != 0
    assert "already exists" in again.stderr

    missing = run_neon_local(
        repo_root, ["status"], {"NEON_REPO_DIR": str(test_output_dir / "nope")}
    )
    assert missing.returncode != 0
    assert "neon_local init" in missing.stderr
