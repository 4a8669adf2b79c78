"""Computes on the pageserver: the README walkthrough, a data directory without relation data,
the same results as stock PostgreSQL (also after a restart), branches at a middle LSN and
read-only static endpoints."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg
import pytest

from fixtures.compare import assert_amcheck_clean, assert_same_state
from fixtures.neon import NeonEnv
from fixtures.pg import PgBin, VanillaPostgres
from fixtures.utils import format_lsn

log = logging.getLogger("test_compute")

# Settings both the compute and the stock server of the comparison run with.
COMPARE_SETTINGS = {"max_prepared_transactions": 5, "autovacuum": "off"}


def test_readme_walkthrough(neon_env: NeonEnv):
    env = neon_env
    main = env.endpoints.create_start("main")
    main.safe_psql("CREATE TABLE t (key int primary key, value text)")
    main.safe_psql("INSERT INTO t VALUES (1, 'main row')")
    main.wait_ingested()

    env.create_branch("migration_check", ancestor="main")
    branch = env.endpoints.create_start("migration_check", branch_name="migration_check")
    assert branch.safe_psql("SELECT * FROM t") == [(1, "main row")]
    branch.safe_psql("INSERT INTO t VALUES (2, 'branch row')")
    assert branch.safe_psql("SELECT key FROM t ORDER BY key") == [(1,), (2,)]
    assert main.safe_psql("SELECT key FROM t ORDER BY key") == [(1,)]

    listing = env.neon_cli("endpoint", "list").stdout
    header = listing.splitlines()[0].split()
    assert header == ["ENDPOINT", "ADDRESS", "TIMELINE", "BRANCH", "NAME", "LSN", "STATUS"]
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[1:]}
    assert rows["main"][1] == f"127.0.0.1:{main.port}"
    assert rows["migration_check"][3] == "migration_check"
    assert rows["main"][-1] == "running", listing

    # stop stops the endpoints first, and a stopped endpoint shows as such.
    branch.stop()
    listing = env.neon_cli("endpoint", "list").stdout
    assert re.search(r"^migration_check .* stopped$", listing, re.M), listing


def test_datadir_holds_no_relation_data(neon_env: NeonEnv):
    env = neon_env
    ep = env.endpoints.create_start("main")
    before = env.pageserver_http.metric_sum("pageserver_getpage_requests_total")
    ep.safe_psql(
        "CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g"
    )
    ep.safe_psql("CREATE INDEX ON big (g)")
    ep.safe_psql("CREATE UNLOGGED TABLE u AS SELECT g FROM generate_series(1, 100) g")
    ep.wait_ingested()
    ep.stop()
    ep.start()
    assert ep.safe_psql("SELECT count(*), sum(g) FROM big") == [(20000, 20000 * 20001 // 2)]
    # Unlogged tables come back empty after a restart.
    assert ep.safe_psql("SELECT count(*) FROM u") == [(0,)]
    after = env.pageserver_http.metric_sum("pageserver_getpage_requests_total")
    assert after > before + 100, (before, after)

    offenders = permanent_relation_files(ep.pgdata)
    assert offenders == [], f"relation data in the compute's data directory: {offenders[:20]}"


def permanent_relation_files(pgdata: Path) -> list[str]:
    """Files of relation forks in base/ and global/ with data, other than init forks and the
    forks of relations that have an init fork (unlogged) and temporary relations."""
    bad = []
    for d in [pgdata / "global", *(p for p in (pgdata / "base").iterdir() if p.is_dir())]:
        names = {p.name for p in d.iterdir()}
        for name in names:
            m = re.fullmatch(r"(t\d+_)?(\d+)(_(fsm|vm|init))?(\.\d+)?", name)
            if not m:
                continue  # PG_VERSION, pg_filenode.map, pg_internal.init, ...
            if m.group(1) or m.group(4) == "init" or f"{m.group(2)}_init" in names:
                continue
            if (d / name).stat().st_size > 0:
                bad.append(str(d / name))
    return sorted(bad)


@pytest.mark.parametrize("scale", [0.05])
def test_same_results_as_stock(neon_env: NeonEnv, pg_bin: PgBin, vanilla_pg_factory, scale: float):
    from fixtures.workload import MixedWorkload

    env = neon_env
    ep = env.endpoints.create_start("main", settings=COMPARE_SETTINGS)
    stock: VanillaPostgres = vanilla_pg_factory("stock")
    stock.user = "cloud_admin"  # the same superuser as the compute's, for equal dumps
    stock.init()
    stock.configure(COMPARE_SETTINGS)
    stock.start()

    for target in (ep, stock):
        wl = MixedWorkload(lambda db, t=target: t.connect(db), scale=scale, seed=7)
        wl.run()
        wl.close()
    # Live sequence values: the compute WAL-logs every nextval (patch 0007), stock 32 ahead.
    assert_same_state(ep_instance(ep, pg_bin), stock, pg_bin, live_sequences=True)
    ep.stop()
    ep.start()
    assert_same_state(ep_instance(ep, pg_bin), stock, pg_bin, live_sequences=True)
    checked = assert_amcheck_clean(ep_instance(ep, pg_bin))
    assert sum(checked.values()) > 0


def ep_instance(ep, pg_bin: PgBin):
    ep.pg_bin = pg_bin
    return ep


def test_branch_at_middle_lsn_and_static_endpoint(neon_env: NeonEnv):
    env = neon_env
    main = env.endpoints.create_start("main")
    main.safe_psql("CREATE TABLE t (x int)")
    main.safe_psql("INSERT INTO t SELECT generate_series(1, 100)")
    middle = main.wait_ingested()
    main.safe_psql("INSERT INTO t SELECT generate_series(101, 250)")
    main.safe_psql("DELETE FROM t WHERE x <= 10")
    main.wait_ingested()

    env.create_branch("past", ancestor="main", lsn=format_lsn(middle))
    past = env.endpoints.create_start("past", branch_name="past")
    assert past.safe_psql("SELECT count(*), min(x), max(x) FROM t") == [(100, 1, 100)]
    past.safe_psql("INSERT INTO t VALUES (1000)")  # a branch is writable
    assert past.safe_psql("SELECT count(*) FROM t") == [(101,)]

    ro = env.endpoints.create_start("ro", branch_name="main", lsn=format_lsn(middle))
    assert ro.safe_psql("SELECT count(*), min(x), max(x) FROM t") == [(100, 1, 100)]
    assert ro.safe_psql("SELECT pg_is_in_recovery()") == [(True,)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        ro.safe_psql("INSERT INTO t VALUES (0)")
    # The primary still sees its latest state.
    assert main.safe_psql("SELECT count(*) FROM t") == [(240,)]


def test_command_ids_survive_eviction(neon_env: NeonEnv):
    """Heap pages evicted in the middle of a transaction come back from the pageserver with
    their tuples' command ids (neon_cid records), so a statement does not see its own rows."""
    ep = neon_env.endpoints.create_start("main", settings={"shared_buffers": "1MB"})
    with ep.connect(autocommit=False) as conn:
        conn.execute("CREATE TABLE t (x int, pad text)")
        conn.execute("INSERT INTO t SELECT g, repeat('p', 200) FROM generate_series(1, 5000) g")
        conn.execute("INSERT INTO t SELECT * FROM t")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (10000,)
        conn.execute("UPDATE t SET x = x + 1 WHERE x % 2 = 0")
        conn.execute("DELETE FROM t WHERE x % 3 = 0")
        expected = sum(1 for g in range(1, 5001) if (g + (g % 2 == 0)) % 3 != 0) * 2
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (expected,)
        conn.commit()
    assert ep.safe_psql("SELECT count(*) FROM t") == [(expected,)]
