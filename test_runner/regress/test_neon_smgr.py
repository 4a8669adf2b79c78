"""The compute's storage manager (pgxn/neon and the PostgreSQL patches it relies on).

Every test runs its compute with a tiny shared_buffers, so that nearly every page a query
needs has left the buffer cache and comes back from the pageserver: a result that matches
what was written shows that the page (or relation size) the compute asked for was recent
enough (the last-written-LSN rules), and that pages changed without WAL (FSM, visibility
map, unlogged index builds) reached the pageserver through WAL.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fixtures.neon import Endpoint, NeonEnv
from fixtures.utils import format_lsn, wait_until

# The smallest buffer cache PostgreSQL accepts (16 buffers) would make every query
# painfully slow in debug builds; 1 MB (128 buffers) still evicts almost everything.
SMALL_CACHE = {"shared_buffers": "1MB"}


def getpage_requests(env: NeonEnv) -> float:
    return env.pageserver_http.metric_sum("pageserver_getpage_requests_total")


def relation_files(ep: Endpoint, relkind_filter: str) -> dict[str, Path]:
    """Local path of the main fork of each relation matching the pg_class filter."""
    rows = ep.safe_psql(
        "SELECT c.relname, pg_relation_filepath(c.oid) FROM pg_class c "
        f"WHERE pg_relation_filepath(c.oid) IS NOT NULL AND {relkind_filter}"
    )
    return {name: ep.pgdata / path for name, path in rows}


def test_index_builds_and_reads_from_pageserver(neon_env: NeonEnv):
    """B-tree, GIN, GiST and SP-GiST builds (the last three write their pages without WAL
    until the end of the build: patch 0006) and reads through them after eviction; no
    main-fork data of a permanent relation on local disk; GetPage requests are served."""
    env = neon_env
    ep = env.endpoints.create_start("main", settings=SMALL_CACHE)
    before = getpage_requests(env)
    ep.safe_psql(
        "CREATE TABLE docs AS SELECT g AS id, ARRAY[g, g + 1, g % 7] AS tags, "
        "point(g, g % 100) AS pos, repeat('x', 100) AS pad "
        "FROM generate_series(1, 20000) g"
    )
    ep.safe_psql("CREATE INDEX docs_id ON docs (id)")
    ep.safe_psql("CREATE INDEX docs_tags ON docs USING gin (tags)")
    # buffering = on: the build that writes pages without WAL (not the sorted one)
    ep.safe_psql("CREATE INDEX docs_pos ON docs USING gist (pos) WITH (buffering = on)")
    ep.safe_psql("CREATE INDEX docs_pos_sp ON docs USING spgist (pos)")

    check_gin_btree(ep)
    assert getpage_requests(env) > before

    files = relation_files(ep, "c.relpersistence = 'p' AND c.relname LIKE 'docs%'")
    assert len(files) == 5, files
    for name, path in files.items():
        assert not path.exists(), f"{name} has local data at {path}"

    # The same answers from a new compute that starts with an empty buffer cache, and
    # through the other index of `pos` once the planner's first choice is gone.
    ep.stop()
    ep.start()
    check_gin_btree(ep)
    ep.safe_psql("DROP INDEX docs_pos")
    check_gin_btree(ep)


def check_gin_btree(ep: Endpoint) -> None:
    with ep.connect() as conn, conn.cursor() as cur:
        cur.execute("SET enable_seqscan = off")
        cur.execute("SELECT count(*) FROM docs WHERE tags @> ARRAY[5]")
        assert cur.fetchone() == (2858,)  # g % 7 = 5 (2857 rows) plus g = 4
        cur.execute("SELECT count(*), sum(id) FROM docs WHERE id BETWEEN 100 AND 199")
        assert cur.fetchone() == (100, sum(range(100, 200)))
        cur.execute("SET enable_bitmapscan = off")
        cur.execute("SELECT count(*) FROM docs WHERE pos <@ box(point(0, 0), point(100, 10))")
        assert cur.fetchone() == (11,)  # g = 1..10 and g = 100


def test_unlogged_and_temp_relations_stay_local(neon_env: NeonEnv):
    """Unlogged and temporary relations live on local disk; an unlogged table comes back
    empty after a restart (the basebackup ships its init fork), its definition stays."""
    env = neon_env
    ep = env.endpoints.create_start("main", settings=SMALL_CACHE)
    ep.safe_psql("CREATE UNLOGGED TABLE u (x int PRIMARY KEY, pad text)")
    ep.safe_psql("INSERT INTO u SELECT g, repeat('u', 200) FROM generate_series(1, 5000) g")
    ep.safe_psql("CREATE TABLE p (x int)")
    ep.safe_psql("INSERT INTO p SELECT generate_series(1, 5000)")
    with ep.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE tmp AS SELECT g, repeat('t', 200) AS pad "
            "FROM generate_series(1, 5000) g"
        )
        cur.execute("SELECT count(*), sum(g) FROM tmp")
        assert cur.fetchone() == (5000, sum(range(1, 5001)))
    assert ep.safe_psql("SELECT count(*), sum(x) FROM u") == [(5000, sum(range(1, 5001)))]

    unlogged = relation_files(ep, "c.relpersistence = 'u' AND c.relname IN ('u', 'u_pkey')")
    assert len(unlogged) == 2
    for name, path in unlogged.items():
        assert path.exists(), f"unlogged {name} has no local file {path}"
        assert Path(f"{path}_init").exists(), f"unlogged {name} has no init fork"
    permanent = relation_files(ep, "c.relname = 'p'")
    assert not permanent["p"].exists()

    ep.stop()
    ep.start()
    assert ep.safe_psql("SELECT count(*) FROM u") == [(0,)]
    assert ep.safe_psql("SELECT count(*) FROM p") == [(5000,)]
    ep.safe_psql("INSERT INTO u VALUES (1, 'again')")
    assert ep.safe_psql("SELECT x FROM u") == [(1,)]


def test_sizes_truncation_and_sequences(neon_env: NeonEnv):
    """Relation sizes (relation-size cache, Nblocks), VACUUM truncation (last-written LSN
    of the relation: patch 0011), database size (DbSize through dbsize_hook: patch 0008)
    and sequences (every nextval WAL-logged: patch 0007), also after a restart."""
    env = neon_env
    ep = env.endpoints.create_start("main", settings={**SMALL_CACHE, "autovacuum": "off"})
    db_before = ep.safe_psql("SELECT pg_database_size('postgres')")[0][0]
    ep.safe_psql("CREATE TABLE t (x int, pad text) WITH (autovacuum_enabled = off)")
    ep.safe_psql("INSERT INTO t SELECT g, repeat('p', 500) FROM generate_series(1, 10000) g")
    full = ep.safe_psql("SELECT pg_relation_size('t')")[0][0]
    assert full >= 10000 * 500
    assert ep.safe_psql("SELECT pg_database_size('postgres')")[0][0] >= db_before + full

    ep.safe_psql("DELETE FROM t WHERE x > 1000")
    ep.safe_psql("VACUUM t")
    truncated = ep.safe_psql("SELECT pg_relation_size('t')")[0][0]
    assert truncated < full / 5, (truncated, full)
    # Grow it again past the old end: the new pages must not come back as the old ones.
    ep.safe_psql("INSERT INTO t SELECT g, repeat('q', 500) FROM generate_series(20001, 22000) g")
    expect = [(3000, sum(range(1, 1001)) + sum(range(20001, 22001)))]
    assert ep.safe_psql("SELECT count(*), sum(x) FROM t") == expect
    assert ep.safe_psql("SELECT count(*) FROM t WHERE pad LIKE 'p%' AND x > 1000") == [(0,)]

    ep.safe_psql("CREATE SEQUENCE s")
    assert ep.safe_psql("SELECT nextval('s'), nextval('s'), nextval('s')") == [(1, 2, 3)]

    size = ep.safe_psql("SELECT pg_relation_size('t')")[0][0]
    ep.stop()
    ep.start()
    assert ep.safe_psql("SELECT pg_relation_size('t')")[0][0] == size
    assert ep.safe_psql("SELECT count(*), sum(x) FROM t") == expect
    # Stock PostgreSQL logs 32 values ahead; the pageserver's page would say 34.
    assert ep.safe_psql("SELECT nextval('s')") == [(4,)]


def test_create_database_strategies(neon_env: NeonEnv):
    """CREATE DATABASE copies through the buffer cache (WAL_LOG) or as a WAL record the
    pageserver replays (FILE_COPY: last-written LSN of the database, patch 0011)."""
    env = neon_env
    ep = env.endpoints.create_start("main", settings=SMALL_CACHE)
    ep.safe_psql("CREATE DATABASE src")
    ep.safe_psql("CREATE TABLE t AS SELECT generate_series(1, 3000) AS x", dbname="src")
    ep.safe_psql("CREATE INDEX ON t (x)", dbname="src")
    expect = [(3000, sum(range(1, 3001)))]
    for strategy in ("wal_log", "file_copy"):
        ep.safe_psql(f"CREATE DATABASE copy_{strategy} TEMPLATE src STRATEGY {strategy}")
        got = ep.safe_psql("SELECT count(*), sum(x) FROM t", dbname=f"copy_{strategy}")
        assert got == expect, strategy
        assert ep.safe_psql(f"SELECT pg_database_size('copy_{strategy}') > 0") == [(True,)]
    ep.safe_psql("DROP DATABASE copy_file_copy")
    ep.safe_psql("CREATE DATABASE copy_again TEMPLATE src STRATEGY file_copy")
    assert ep.safe_psql("SELECT count(*), sum(x) FROM t", dbname="copy_again") == expect


def test_static_endpoint_reads_at_its_lsn(neon_env: NeonEnv):
    """A static compute (in recovery) asks for pages at its replay LSN: it sees the
    table as of that LSN even though the primary changed the same pages afterwards."""
    env = neon_env
    primary = env.endpoints.create_start("main", settings=SMALL_CACHE)
    primary.safe_psql("CREATE TABLE t (x int, v text)")
    primary.safe_psql("INSERT INTO t SELECT g, 'old' FROM generate_series(1, 2000) g")
    lsn = primary.wait_ingested()
    primary.safe_psql("UPDATE t SET v = 'new'")
    primary.safe_psql("INSERT INTO t SELECT g, 'new' FROM generate_series(2001, 3000) g")
    primary.wait_ingested()

    static = env.endpoints.create_start("static", lsn=format_lsn(lsn), settings=SMALL_CACHE)
    assert static.safe_psql("SELECT pg_is_in_recovery()") == [(True,)]
    assert static.safe_psql("SELECT v, count(*) FROM t GROUP BY v") == [("old", 2000)]
    assert primary.safe_psql("SELECT v, count(*) FROM t GROUP BY v") == [("new", 3000)]


def test_reconnect_after_pageserver_kill(neon_env: NeonEnv, allowed_errors: list[str]):
    """The pageserver is killed with SIGKILL while a query reads pages from it and started
    again: the compute reconnects (with backoff) and the query completes."""
    env = neon_env
    # The walreceiver's connection breaks too; the pageserver may log that at restart.
    allowed_errors.append(r".*(connection|walreceiver|wal receiver).*")
    ep = env.endpoints.create_start("main", settings={**SMALL_CACHE, "neon.seqscan_readahead": 0})
    ep.safe_psql(
        "CREATE TABLE t AS SELECT g AS x, repeat('k', 300) AS pad FROM generate_series(1, 30000) g"
    )
    ep.wait_ingested()
    requests_before = getpage_requests(env)

    result: dict[str, object] = {}

    def long_query() -> None:
        try:
            # Three scans of a table ten times the buffer cache: thousands of GetPages.
            result["rows"] = ep.safe_psql("SELECT count(*), sum(x) FROM t, generate_series(1, 3) s")
        except Exception as e:  # reported by the assertion below
            result["error"] = e

    thread = threading.Thread(target=long_query)
    thread.start()
    wait_until(lambda: getpage_requests(env) > requests_before + 50, 60, "the scan to start")
    # `neon_local pageserver stop --mode immediate` sends SIGKILL.
    env.pageserver_restart(immediate=True)
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    assert result["rows"] == [(90000, 3 * sum(range(1, 30001)))]
    log = (ep.dir / "compute.log").read_text()
    assert "reconnected to the pageserver" in log
    # A new session works too.
    assert ep.safe_psql("SELECT count(*) FROM t") == [(30000,)]


@pytest.mark.parametrize("readahead", [0, 16])
def test_seqscan_readahead(neon_env: NeonEnv, readahead: int):
    """Sequential scans with and without readahead through the prefetch ring give the
    same answers, also while the table changes between scans (stale prefetched pages
    must not be used)."""
    env = neon_env
    ep = env.endpoints.create_start(
        "main", settings={**SMALL_CACHE, "neon.seqscan_readahead": readahead}
    )
    ep.safe_psql("CREATE TABLE t AS SELECT g AS x, 0 AS v FROM generate_series(1, 50000) g")
    with ep.connect() as conn, conn.cursor() as cur:
        for round_ in range(1, 4):
            cur.execute("UPDATE t SET v = %s WHERE x %% 1000 = 0", (round_,))
            cur.execute("SELECT count(*), sum(v) FROM t")
            assert cur.fetchone() == (50000, 50 * round_)
            cur.execute("SELECT count(*) FROM t WHERE v = %s", (round_,))
            assert cur.fetchone() == (50,)
