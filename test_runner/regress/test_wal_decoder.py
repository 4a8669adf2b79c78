"""Our WAL decoder against PostgreSQL's own: `pagectl wal-dump` must list exactly the records
`pg_waldump` lists (LSN, resource manager, xid, total length, block references with fork and
full-page-image flag), on WAL that stock PostgreSQL 15 wrote for a workload touching every
resource manager and the awkward cases (compressed images, records across page and segment
boundaries, a dump that starts on a continuation record)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fixtures.paths import make_pg_user_dir
from fixtures.pg import PgBin, VanillaPostgres
from fixtures.procs import ProcessRegistry
from fixtures.utils import format_lsn, parse_lsn
from fixtures.waldump import (
    SIZE_OF_LONG_PAGE_HEADER,
    WAL_PAGE_SIZE,
    WAL_SEGMENT_SIZE,
    XLP_FIRST_IS_CONTRECORD,
    LsnRange,
    WalRecord,
    check_end_lsns,
    compare_records,
    crosses_page,
    crosses_segment,
    parse_pagectl_wal_dump,
    parse_pg_waldump,
    parse_pg_waldump_detailed,
    pg_waldump_end_of_wal,
    read_page_header,
    rmgr_counts,
    segment_start_lsn,
    wal_segments,
)

log = logging.getLogger("test_wal_decoder")

# Settings that make the WAL interesting and keep all of it in pg_wal.
WAL_SETTINGS = {
    "wal_level": "logical",
    "full_page_writes": "on",
    "wal_log_hints": "on",  # hint-bit changes after a checkpoint log FPI_FOR_HINT
    "track_commit_timestamp": "on",  # CommitTs records
    "max_prepared_transactions": 5,
    "wal_keep_size": "10GB",  # never remove or recycle a segment: we dump all of them
    "max_wal_size": "10GB",
    "checkpoint_timeout": "1h",  # checkpoints happen when the workload asks
    "autovacuum": "off",  # no background writes into the middle of the workload
    "wal_compression": "off",
}

EXPECTED_RMGRS = {
    "XLOG",
    "Transaction",
    "Storage",
    "CLOG",
    "Database",
    "Tablespace",
    "MultiXact",
    "RelMap",
    "Standby",
    "Heap2",
    "Heap",
    "Btree",
    "Hash",
    "Gin",
    "Gist",
    "Sequence",
    "SPGist",
    "BRIN",
    "CommitTs",
    "ReplicationOrigin",
    "Generic",
    "LogicalMessage",
}

# (rmgr, record kind) pairs the workload must produce: the cases a decoder gets wrong.
EXPECTED_KINDS = {
    ("XLOG", "CHECKPOINT_ONLINE"),
    ("XLOG", "CHECKPOINT_SHUTDOWN"),
    ("XLOG", "SWITCH"),
    ("XLOG", "FPI"),
    ("XLOG", "FPI_FOR_HINT"),
    ("XLOG", "NEXTOID"),
    ("XLOG", "RESTORE_POINT"),
    ("Transaction", "COMMIT"),
    ("Transaction", "ABORT"),
    ("Transaction", "ASSIGNMENT"),
    ("Transaction", "PREPARE"),
    ("Transaction", "COMMIT_PREPARED"),
    ("Transaction", "ABORT_PREPARED"),
    ("Storage", "CREATE"),
    ("Storage", "TRUNCATE"),
    ("CLOG", "ZEROPAGE"),
    ("Database", "CREATE_WAL_LOG"),
    ("Database", "CREATE_FILE_COPY"),
    ("Database", "DROP"),
    ("Tablespace", "CREATE"),
    ("Tablespace", "DROP"),
    ("MultiXact", "ZERO_OFF_PAGE"),
    ("MultiXact", "ZERO_MEM_PAGE"),
    ("MultiXact", "CREATE_ID"),
    ("RelMap", "UPDATE"),
    ("Standby", "RUNNING_XACTS"),
    ("Standby", "LOCK"),
    ("Heap", "INSERT"),
    ("Heap", "UPDATE"),
    ("Heap", "HOT_UPDATE"),
    ("Heap", "DELETE"),
    ("Heap", "LOCK"),
    ("Heap", "INPLACE"),
    ("Heap", "HEAP_CONFIRM"),
    ("Heap", "TRUNCATE"),
    ("Heap2", "PRUNE"),
    ("Heap2", "VACUUM"),
    ("Heap2", "FREEZE_PAGE"),
    ("Heap2", "VISIBLE"),
    ("Heap2", "MULTI_INSERT"),
    ("Heap2", "NEW_CID"),
    ("Btree", "INSERT_LEAF"),
    ("Btree", "INSERT_UPPER"),
    ("Btree", "SPLIT_L"),
    ("Btree", "SPLIT_R"),
    ("Btree", "DEDUP"),
    ("Btree", "VACUUM"),
    ("Btree", "UNLINK_PAGE"),
    ("Btree", "MARK_PAGE_HALFDEAD"),
    ("Sequence", "LOG"),
    ("LogicalMessage", "MESSAGE"),
    ("ReplicationOrigin", "SET"),
    ("ReplicationOrigin", "DROP"),
}

MIN_RECORDS = 5000


class Workload:
    """Runs SQL on one autocommit connection and remembers which LSN range each step wrote."""

    def __init__(self, pg: VanillaPostgres):
        self.pg = pg
        self.conn = pg.connect()
        self.ranges: list[LsnRange] = []

    def close(self) -> None:
        self.conn.close()

    def sql(self, query: str, params=None) -> list[tuple]:
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description is not None else []

    def insert_lsn(self) -> int:
        return parse_lsn(self.sql("select pg_current_wal_insert_lsn()::text")[0][0])

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start, t0 = self.insert_lsn(), time.monotonic()
        yield
        end = self.insert_lsn()
        self.ranges.append(LsnRange(name, start, end))
        log.info(
            "step %-28s %s..%s (%d kB) in %.1fs",
            name,
            format_lsn(start),
            format_lsn(end),
            (end - start) // 1024,
            time.monotonic() - t0,
        )

    def cross_segment_boundary(self) -> None:
        """Writes one logical message record that starts in the current segment and ends in the
        next one, so that the next segment begins with a continuation record."""
        left = WAL_SEGMENT_SIZE - self.insert_lsn() % WAL_SEGMENT_SIZE
        self.sql("select pg_logical_emit_message(false, 'cross', repeat('s', %s))", (left + 4000,))


# ---------------------------------------------------------------------------------------------
# The workload


def heap_and_btree(wl: Workload) -> None:
    wl.sql("create table t_heap (id int primary key, v text, n int, pad text)")
    wl.sql("create index t_heap_v on t_heap (v)")
    wl.sql("create index t_heap_n_mod on t_heap ((n % 10))")  # many duplicates: deduplication
    wl.sql(
        "insert into t_heap select g, md5(g::text), g, repeat('x', 100) "
        "from generate_series(1, 20000) g"
    )
    wl.sql("update t_heap set pad = repeat('y', 100) where id % 7 = 0")  # HOT
    wl.sql("update t_heap set v = md5(v) where id % 11 = 0")  # not HOT
    wl.sql("delete from t_heap where id % 13 = 0")
    # Descending keys split on the left.
    wl.sql("insert into t_heap select -g, md5(g::text), g, '' from generate_series(1, 3000) g")
    # Speculative insertion (HEAP_CONFIRM, super-delete).
    wl.sql(
        "insert into t_heap values (1, 'dup', 1, '') on conflict (id) do update set n = t_heap.n + 1"
    )
    wl.sql(
        "insert into t_heap select g, 'new', g, '' from generate_series(19990, 20100) g "
        "on conflict do nothing"
    )


def hash_index(wl: Workload) -> None:
    wl.sql("create table t_hash (k int, v text)")
    wl.sql("create index t_hash_k on t_hash using hash (k)")
    wl.sql("insert into t_hash select g, 'v' || g from generate_series(1, 15000) g")
    wl.sql("insert into t_hash select g % 50, 'dup' from generate_series(1, 5000) g")  # overflow
    wl.sql("delete from t_hash where k % 3 = 0")
    wl.sql("vacuum t_hash")


def gin_index(wl: Workload) -> None:
    wl.sql("create table t_gin (id int, arr int[], doc tsvector)")
    wl.sql("create index t_gin_arr on t_gin using gin (arr) with (fastupdate = off)")
    wl.sql(
        "create index t_gin_doc on t_gin using gin (doc) "
        "with (fastupdate = on, gin_pending_list_limit = 64)"
    )
    wl.sql(
        "insert into t_gin select g, array[g % 100, g % 37, g % 1000], "
        "to_tsvector('simple', 'word' || (g % 500) || ' other' || (g % 77) || ' n' || g) "
        "from generate_series(1, 8000) g"
    )
    wl.sql("delete from t_gin where id % 5 = 0")
    wl.sql("vacuum t_gin")


def gist_index(wl: Workload) -> None:
    wl.sql("create table t_gist (id int, p point, b box)")
    wl.sql("create index t_gist_p on t_gist using gist (p)")
    wl.sql(
        "insert into t_gist select g, point(g % 1000, g / 1000.0), "
        "box(point(g % 100, g % 50), point(g % 100 + 1, g % 50 + 1)) "
        "from generate_series(1, 10000) g"
    )
    wl.sql("create index t_gist_b on t_gist using gist (b)")  # built on existing data
    wl.sql("delete from t_gist where id % 4 = 0")
    wl.sql("vacuum t_gist")


def spgist_index(wl: Workload) -> None:
    wl.sql("create table t_spgist (id int, p point, t text)")
    wl.sql("create index t_spgist_p on t_spgist using spgist (p)")
    wl.sql("create index t_spgist_t on t_spgist using spgist (t)")
    wl.sql(
        "insert into t_spgist select g, point(g % 997, g % 991), 'key' || (g * 7919 % 20000) "
        "from generate_series(1, 10000) g"
    )
    wl.sql("delete from t_spgist where id % 3 = 0")
    wl.sql("vacuum t_spgist")


def brin_index(wl: Workload) -> None:
    wl.sql("create table t_brin (id int, ts timestamptz) with (fillfactor = 100)")
    wl.sql("create index t_brin_id on t_brin using brin (id) with (pages_per_range = 2)")
    wl.sql(
        "insert into t_brin select g, '2024-01-01'::timestamptz + g * interval '1 second' "
        "from generate_series(1, 50000) g"
    )
    wl.sql("select brin_summarize_new_values('t_brin_id')")
    wl.sql("update t_brin set id = -id where id % 1000 = 0")
    wl.sql("insert into t_brin select g, now() from generate_series(50001, 52000) g")
    wl.sql("select brin_desummarize_range('t_brin_id', 0)")
    wl.sql("vacuum t_brin")


def toast(wl: Workload) -> None:
    wl.sql("create table t_toast (id int primary key, big text)")
    # external: stored out of line without compression, so every value really is toasted.
    wl.sql("alter table t_toast alter column big set storage external")
    wl.sql(
        "insert into t_toast select g, (select string_agg(md5(g::text || i::text), '') "
        "from generate_series(1, 3000) i) from generate_series(1, 40) g"
    )
    wl.sql("update t_toast set big = big || 'x' where id % 2 = 0")
    wl.sql("delete from t_toast where id % 3 = 0")


def copy_from_stdin(wl: Workload) -> None:
    wl.sql("create table t_copy (id int, name text, val float8)")
    with wl.conn.cursor() as cur, cur.copy("copy t_copy (id, name, val) from stdin") as copy:
        for i in range(30000):
            copy.write_row((i, f"name{i}", i * 1.5))
    # COPY FREEZE into a table created in the same transaction: frozen multi-inserts.
    with wl.conn.transaction():
        wl.sql("create table t_copy_frozen (id int, name text)")
        with (
            wl.conn.cursor() as cur,
            cur.copy("copy t_copy_frozen from stdin with (freeze)") as copy,
        ):
            for i in range(5000):
                copy.write_row((i, f"frozen{i}"))


def sequences(wl: Workload) -> None:
    wl.sql("create sequence s1 cache 1")
    wl.sql("select nextval('s1') from generate_series(1, 500)")
    wl.sql("create table t_serial (id bigserial primary key, v int)")
    wl.sql("insert into t_serial (v) select g from generate_series(1, 1000) g")
    wl.sql("select setval('s1', 100000)")
    wl.sql("alter sequence s1 restart")


def subtransactions(wl: Workload) -> None:
    wl.sql("create table t_sub (id int, note text)")
    for q in [
        "begin",
        "insert into t_sub values (1, 'top')",
        "savepoint a",
        "insert into t_sub values (2, 'rolled back')",
        "rollback to a",
        "insert into t_sub values (3, 'after rollback to')",
        "savepoint b",
        "insert into t_sub values (4, 'released')",
        "release b",
        "commit",
    ]:
        wl.sql(q)
    # Hundreds of subtransactions in one transaction, a third of them aborted: more than
    # PGPROC_MAX_CACHED_SUBXIDS, so xid ASSIGNMENT records are written.
    wl.sql(
        """
        do $$
        begin
          for i in 1..300 loop
            begin
              insert into t_sub values (i, 'sub');
              if i % 3 = 0 then raise exception 'roll back subxact %', i; end if;
            exception when raise_exception then null;
            end;
          end loop;
        end $$
        """
    )


def rollbacks(wl: Workload) -> None:
    wl.sql("begin")
    wl.sql("insert into t_sub select g, 'rolled back' from generate_series(1, 1000) g")
    wl.sql("rollback")


def multixacts(wl: Workload) -> None:
    wl.sql("create table t_mx (id int primary key, v int)")
    wl.sql("insert into t_mx select g, 0 from generate_series(1, 3000) g")
    c1 = wl.pg.connect(autocommit=False)
    c2 = wl.pg.connect(autocommit=False)
    try:
        # Two sessions share-lock the same rows: the rows' xmax becomes a multixact.
        c1.execute("select * from t_mx where id <= 50 for share").fetchall()
        c2.execute("select * from t_mx where id <= 50 for share").fetchall()
        c1.commit()
        c2.commit()
        # A key-share locker and a non-key updater of the same rows.
        c1.execute("select * from t_mx where id between 51 and 60 for key share").fetchall()
        c2.execute("update t_mx set v = v + 1 where id between 51 and 60")
        c1.commit()
        c2.commit()
    finally:
        c1.close()
        c2.close()
    # A row share-locked by a transaction and updated in one of its subtransactions gets a
    # multixact of its own: enough of them to start new offsets and members SLRU pages.
    wl.sql(
        """
        do $$
        begin
          for i in 100..2500 loop
            perform 1 from t_mx where id = i for share;
            begin
              update t_mx set v = v + 1 where id = i;
            exception when others then raise;
            end;
          end loop;
        end $$
        """
    )


def truncate_and_drop(wl: Workload) -> None:
    wl.sql("create table t_trunc (id int primary key, v text)")
    wl.sql("insert into t_trunc select g, 'v' from generate_series(1, 5000) g")
    wl.sql("truncate t_trunc")
    wl.sql("insert into t_trunc select g, 'w' from generate_series(1, 100) g")
    # VACUUM cuts trailing empty pages: an smgr TRUNCATE record.
    wl.sql("create table t_vtrunc (id int, v text)")
    wl.sql("insert into t_vtrunc select g, repeat('z', 200) from generate_series(1, 10000) g")
    wl.sql("delete from t_vtrunc where id > 100")
    wl.sql("vacuum t_vtrunc")
    wl.sql("create table t_drop (id int primary key, v text)")
    wl.sql("insert into t_drop select g, 'd' from generate_series(1, 1000) g")
    wl.sql("drop table t_drop")


def vacuums(wl: Workload) -> None:
    # Empty a key range so that whole btree pages get deleted.
    wl.sql("delete from t_heap where id between 5000 and 9000")
    wl.sql("vacuum t_heap")
    wl.sql("vacuum (freeze) t_heap")
    wl.sql("vacuum (freeze, analyze)")


def mapped_catalog_and_cluster(wl: Workload) -> None:
    wl.sql("vacuum full pg_class")  # a mapped catalog: relmap update
    wl.sql("cluster t_heap using t_heap_pkey")
    wl.sql("vacuum full t_gist")


def databases(wl: Workload) -> None:
    wl.sql("create database db_wal_log strategy = wal_log")
    wl.sql("create database db_file_copy strategy = file_copy")
    for db in ("db_wal_log", "db_file_copy"):
        with wl.pg.connect(dbname=db) as conn:
            conn.execute("create table t_in_db (id int primary key, v text)")
            conn.execute("insert into t_in_db select g, 'x' from generate_series(1, 1000) g")
    wl.sql("drop database db_file_copy")
    wl.sql("create database db_dropped template db_wal_log strategy = wal_log")
    wl.sql("drop database db_dropped")


def large_objects(wl: Workload) -> None:
    oid = wl.sql("select lo_from_bytea(0, decode(repeat(md5('x'), 10000), 'hex'))")[0][0]
    wl.sql("select lo_put(%s, 100000, decode(repeat('ab', 5000), 'hex'))", (oid,))
    other = wl.sql("select lo_from_bytea(0, 'small')")[0][0]
    wl.sql("select lo_unlink(%s)", (other,))


def prepared_transactions(wl: Workload) -> None:
    for gid, finish in (("p_commit", "commit prepared"), ("p_abort", "rollback prepared")):
        wl.sql("begin")
        wl.sql("insert into t_sub values (-1, %s)", (gid,))
        wl.sql(f"prepare transaction '{gid}'")
        wl.sql(f"{finish} '{gid}'")


def tablespace(wl: Workload, location: Path) -> None:
    wl.sql(f"create tablespace ts1 location '{location}'")
    wl.sql("create table t_ts (id int primary key, v text) tablespace ts1")
    wl.sql("insert into t_ts select g, 'ts' from generate_series(1, 2000) g")
    wl.sql("alter table t_ts set tablespace pg_default")
    wl.sql("create table t_ts2 (id int) tablespace ts1")
    wl.sql("insert into t_ts2 select generate_series(1, 100)")
    wl.sql("drop table t_ts2")
    wl.sql("drop tablespace ts1")


def unlogged_and_generic(wl: Workload) -> None:
    # Unlogged relations WAL-log only their init fork.
    wl.sql("create unlogged table t_unlogged (id int primary key, v text)")
    wl.sql("insert into t_unlogged select g, 'u' from generate_series(1, 1000) g")
    # bloom indexes write Generic WAL records.
    wl.sql("create extension bloom")
    wl.sql("create table t_bloom (a int, b int)")
    wl.sql("create index t_bloom_idx on t_bloom using bloom (a, b)")
    wl.sql("insert into t_bloom select g, g % 100 from generate_series(1, 5000) g")


def messages_and_origins(wl: Workload) -> None:
    wl.sql("select pg_logical_emit_message(true, 'test', repeat('m', 20000))")
    wl.sql("select pg_logical_emit_message(false, 'test', 'small')")
    wl.sql("select pg_create_restore_point('wal_decoder_test')")
    wl.sql("select pg_replication_origin_create('origin1')")
    wl.sql("select pg_replication_origin_advance('origin1', '0/12345')")
    wl.sql("select pg_replication_origin_drop('origin1')")


def compressed_images(wl: Workload, method: str) -> None:
    """After a checkpoint, the first change of every page logs a full-page image: compressed
    with `method`, as set for this session."""
    wl.sql(f"set wal_compression = {method}")
    wl.sql("checkpoint")
    wl.sql("update t_heap set n = n + 1 where id % 50 = 0")
    wl.sql("update t_copy set val = val + 1 where id % 100 = 0")
    wl.sql("checkpoint")
    wl.sql("select count(*) from t_gin")  # sets hint bits: FPI_FOR_HINT
    wl.sql("set wal_compression = off")


def consistency_check_images(wl: Workload) -> None:
    """wal_consistency_checking adds images that are not to be applied at redo."""
    wl.sql("set wal_consistency_checking = 'heap,btree'")
    wl.sql("update t_heap set n = n + 1 where id % 97 = 0")
    wl.sql("reset wal_consistency_checking")


def clog_page_boundary(wl: Workload) -> None:
    """Commits transactions until the xid counter enters a new CLOG page (32768 xids each)."""
    xid = int(wl.sql("select txid_current()")[0][0])
    n = 32768 - xid % 32768 + 100
    wl.sql(
        f"do $$ begin for i in 1..{n} loop perform pg_current_xact_id(); commit; end loop; end $$"
    )


def run_workload(wl: Workload, tablespace_dir: Path) -> None:
    steps = [
        ("heap_and_btree", lambda: heap_and_btree(wl)),
        ("hash", lambda: hash_index(wl)),
        ("switch_wal", lambda: wl.sql("select pg_switch_wal()")),
        ("gin", lambda: gin_index(wl)),
        ("gist", lambda: gist_index(wl)),
        ("spgist", lambda: spgist_index(wl)),
        ("brin", lambda: brin_index(wl)),
        ("toast", lambda: toast(wl)),
        ("copy", lambda: copy_from_stdin(wl)),
        ("checkpoint", lambda: wl.sql("checkpoint")),
        ("sequences", lambda: sequences(wl)),
        ("subtransactions", lambda: subtransactions(wl)),
        ("rollbacks", lambda: rollbacks(wl)),
        ("multixacts", lambda: multixacts(wl)),
        ("truncate_and_drop", lambda: truncate_and_drop(wl)),
        ("vacuums", lambda: vacuums(wl)),
        ("cross_segment", wl.cross_segment_boundary),
        ("mapped_catalog_and_cluster", lambda: mapped_catalog_and_cluster(wl)),
        ("databases", lambda: databases(wl)),
        ("large_objects", lambda: large_objects(wl)),
        ("prepared_transactions", lambda: prepared_transactions(wl)),
        ("tablespace", lambda: tablespace(wl, tablespace_dir)),
        ("unlogged_and_generic", lambda: unlogged_and_generic(wl)),
        ("messages_and_origins", lambda: messages_and_origins(wl)),
        ("fpi_pglz", lambda: compressed_images(wl, "pglz")),
        ("fpi_lz4", lambda: compressed_images(wl, "lz4")),
        ("fpi_zstd", lambda: compressed_images(wl, "zstd")),
        ("consistency_check_images", lambda: consistency_check_images(wl)),
        ("clog_page_boundary", lambda: clog_page_boundary(wl)),
        ("switch_wal_again", lambda: wl.sql("select pg_switch_wal()")),
        ("final_inserts", lambda: wl.sql("insert into t_sub values (0, 'last')")),
        ("final_checkpoint", lambda: wl.sql("checkpoint")),
    ]
    for name, fn in steps:
        with wl.step(name):
            fn()


# ---------------------------------------------------------------------------------------------
# Dumping


def pagectl_path(neon_binpath: Path) -> Path:
    path = neon_binpath / "pagectl"
    if not path.exists():
        pytest.fail(
            f"pagectl not built: {path} does not exist "
            "(`cargo build -p pagectl`, or set NEON_BIN to the directory holding it)"
        )
    return path


def run_pg_waldump(
    pg_bin: PgBin, segments: list[Path], args: list[str], name: str
) -> tuple[str, str | None]:
    """pg_waldump over `segments` (consecutive files of one directory); returns its stdout and
    the end-of-WAL message it stopped with."""
    res = pg_bin.run(
        ["pg_waldump", *args, segments[0], segments[-1]], name=name, check=False, timeout_s=600
    )
    end = pg_waldump_end_of_wal(res.returncode, res.stderr)
    return res.stdout, end


def dump_with_pg_waldump(
    pg_bin: PgBin,
    segments: list[Path],
    start: int | None = None,
    end: int | None = None,
    name: str = "pg_waldump",
) -> list[WalRecord]:
    args = ["--start", format_lsn(start)] if start is not None else []
    args += ["--end", format_lsn(end)] if end is not None else []
    out, stopped_with = run_pg_waldump(pg_bin, segments, args, name)
    records = parse_pg_waldump(out)
    log.info("%s: %d records, stopped with: %s", name, len(records), stopped_with)
    return records


def dump_with_pagectl(
    registry: ProcessRegistry,
    pagectl: Path,
    segments: list[Path],
    start: int | None = None,
    end: int | None = None,
    name: str = "pagectl-wal-dump",
    extra_args: list[str] | None = None,
) -> list[WalRecord]:
    args = list(extra_args or [])
    args += ["--start", format_lsn(start)] if start is not None else []
    args += ["--end", format_lsn(end)] if end is not None else []
    res = registry.run(name, [pagectl, "wal-dump", *args, *segments], timeout_s=600)
    records = parse_pagectl_wal_dump(res.stdout)
    log.info("%s: %d records", name, len(records))
    return records


def latest_checkpoint(pg_bin: PgBin, datadir: Path) -> int:
    out = pg_bin.run_capture(["pg_controldata", "-D", datadir])
    for line in out.splitlines():
        if line.startswith("Latest checkpoint location:"):
            return parse_lsn(line.split(":", 1)[1])
    raise AssertionError(f"no checkpoint location in pg_controldata output:\n{out}")


def switch_lsns(records: list[WalRecord]) -> set[int]:
    return {r.lsn for r in records if r.rmgr == "XLOG" and r.desc.startswith("SWITCH")}


def kinds(records: list[WalRecord]) -> set[tuple[str, str]]:
    return {(r.rmgr, r.desc.split(" ", 1)[0]) for r in records if r.desc}


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.mark.timeout(1800)
def test_wal_decoder_matches_pg_waldump(
    vanilla_pg: VanillaPostgres,
    stock_pg_bin: PgBin,
    process_registry: ProcessRegistry,
    neon_binpath: Path,
    test_output_dir: Path,
    report_summary: list[str],
):
    pg = vanilla_pg
    pg.configure(WAL_SETTINGS)
    pg.start()
    wl = Workload(pg)
    try:
        run_workload(wl, make_pg_user_dir(test_output_dir / "tblspc"))
    finally:
        wl.close()
    pg.stop()

    segments = wal_segments(pg.datadir / "pg_wal")
    assert len(segments) >= 3, f"expected WAL in several segments, got {segments}"
    log.info("WAL segments: %s .. %s (%d)", segments[0].name, segments[-1].name, len(segments))

    # pg_waldump, short format: what we compare against.
    expected = dump_with_pg_waldump(stock_pg_bin, segments)
    # pg_waldump -b: the same records with image details (compression method per image).
    detailed_out, _ = run_pg_waldump(stock_pg_bin, segments, ["-b"], "pg_waldump-b")
    detailed = parse_pg_waldump_detailed(detailed_out)
    compare_records(
        expected,
        [d.record for d in detailed],
        "pg_waldump",
        "pg_waldump -b",
        ranges=wl.ranges,
    )

    # The dump covers the whole WAL: it ends with the shutdown checkpoint of pg.stop().
    assert expected[-1].lsn == latest_checkpoint(stock_pg_bin, pg.datadir)
    assert expected[-1].rmgr == "XLOG" and expected[-1].desc.startswith("CHECKPOINT_SHUTDOWN")

    # The workload produced what the comparison is meant to cover.
    counts = rmgr_counts(expected)
    log.info("records per rmgr: %s", dict(sorted(counts.items())))
    missing_rmgrs = EXPECTED_RMGRS - set(counts)
    assert not missing_rmgrs, f"no records of {sorted(missing_rmgrs)}"
    missing_kinds = EXPECTED_KINDS - kinds(expected)
    assert not missing_kinds, f"no records of kinds {sorted(missing_kinds)}"
    forks = Counter(b.fork for r in expected for b in r.blocks)
    assert {"main", "fsm", "vm", "init"} <= set(forks), f"block references per fork: {forks}"
    methods = Counter(m for d in detailed for m in d.image_methods)
    log.info("full-page images per compression method: %s", dict(methods))
    for method in ("", "pglz", "lz4", "zstd"):
        assert methods[method] > 0, f"no full-page image compressed with {method!r}: {methods}"
    assert sum(d.verification_images for d in detailed) > 0, "no image for WAL verification"
    assert any(crosses_page(r) for r in expected), "no record crosses a WAL page boundary"
    assert any(crosses_segment(r) for r in expected), "no record crosses a segment boundary"
    assert len({r.lsn // WAL_SEGMENT_SIZE for r in expected}) >= 3
    assert len(expected) > MIN_RECORDS

    # Our decoder must agree, record by record.
    actual = dump_with_pagectl(process_registry, pagectl_path(neon_binpath), segments)
    compare_records(expected, actual, ranges=wl.ranges)
    check_end_lsns(actual, switch_lsns(expected))
    # And the typed decoders understand the main data of every one of these records.
    checked = dump_with_pagectl(
        process_registry,
        pagectl_path(neon_binpath),
        segments,
        extra_args=["--check-bodies"],
        name="pagectl-check-bodies",
    )
    compare_records(actual, checked, "pagectl", "pagectl --check-bodies")
    summary = (
        f"test_wal_decoder: pagectl and pg_waldump agree on {len(expected)} records "
        f"in {len(segments)} segments ({len(counts)} rmgrs)"
    )
    print(summary)
    report_summary.append(summary)


@pytest.mark.timeout(900)
def test_wal_decoder_dump_starting_mid_segment(
    vanilla_pg: VanillaPostgres,
    stock_pg_bin: PgBin,
    process_registry: ProcessRegistry,
    neon_binpath: Path,
    test_output_dir: Path,
    report_summary: list[str],
):
    """A dump whose first file begins with the tail of a record that started in the previous
    segment (not given): both tools must skip that tail and start at the first whole record.
    Then dumps from start LSNs in the middle of the first segment (--start, also with all of
    the segment before the start page zeroed) and up to end LSNs (--end) must agree too."""
    pg = vanilla_pg
    pg.configure(WAL_SETTINGS)
    pg.start()
    wl = Workload(pg)
    try:
        wl.sql("create table t (id int primary key, v text)")
        for round_no in range(2):
            wl.sql(
                "insert into t select g, md5(g::text) from generate_series(%s::int, %s::int) g",
                (round_no * 20000 + 1, (round_no + 1) * 20000),
            )
            wl.cross_segment_boundary()
            wl.sql("update t set v = v || 'u' where id % 5 = 0")
        wl.sql("checkpoint")
    finally:
        wl.close()
    pg.stop()

    segments = wal_segments(pg.datadir / "pg_wal")
    starts = [
        i
        for i, seg in enumerate(segments)
        if i > 0
        and read_page_header(seg).info & XLP_FIRST_IS_CONTRECORD
        and read_page_header(seg).rem_len > 0
    ]
    assert starts, "no segment begins with a continuation record"
    first = starts[-1]
    files = segments[first:]
    seg_start = segment_start_lsn(files[0])
    header = read_page_header(files[0])
    log.info(
        "dumping %d segments from %s, which begins with %d bytes of a continued record",
        len(files),
        files[0].name,
        header.rem_len,
    )

    expected = dump_with_pg_waldump(stock_pg_bin, files)
    assert expected, "pg_waldump found no record"
    assert expected[0].lsn >= seg_start + SIZE_OF_LONG_PAGE_HEADER + header.rem_len

    pagectl = pagectl_path(neon_binpath)
    actual = dump_with_pagectl(process_registry, pagectl, files)
    compare_records(expected, actual)
    check_end_lsns(actual, switch_lsns(expected))

    # Explicit start LSNs inside the first segment: exactly at a record, and one byte past one
    # (then the dump begins at the next record). Both tools, and the suffix of the full dump.
    in_first = [r for r in expected if r.lsn < seg_start + WAL_SEGMENT_SIZE]
    mid = in_first[len(in_first) // 2].lsn
    for start, name in ((mid, "start-at-record"), (mid + 1, "start-inside-record")):
        want = dump_with_pg_waldump(stock_pg_bin, files, start=start, name=f"pg_waldump-{name}")
        assert want and want[0].lsn >= start
        compare_records(
            want, [r for r in expected if r.lsn >= start], "pg_waldump --start", "pg_waldump"
        )
        got = dump_with_pagectl(
            process_registry, pagectl, files, start=start, name=f"pagectl-{name}"
        )
        compare_records(want, got, "pg_waldump --start", "pagectl --start")

    # A first file whose WAL really begins mid-segment, as in a segment a compute started on
    # from a basebackup: nothing valid before the page holding the start LSN but the segment's
    # long header. Both tools read it from the given start.
    zeroed_dir = make_pg_user_dir(test_output_dir / "wal_zeroed_prefix")
    first_copy = zeroed_dir / files[0].name
    data = bytearray(files[0].read_bytes())
    page_start = mid - mid % WAL_PAGE_SIZE
    assert page_start > seg_start
    data[SIZE_OF_LONG_PAGE_HEADER : page_start - seg_start] = bytes(
        page_start - seg_start - SIZE_OF_LONG_PAGE_HEADER
    )
    first_copy.write_bytes(bytes(data))
    zeroed_files = [first_copy]
    for f in files[1:]:
        (zeroed_dir / f.name).symlink_to(f)
        zeroed_files.append(zeroed_dir / f.name)
    want = dump_with_pg_waldump(stock_pg_bin, zeroed_files, start=mid, name="pg_waldump-zeroed")
    compare_records(
        want, [r for r in expected if r.lsn >= mid], "pg_waldump (zeroed)", "pg_waldump"
    )
    got = dump_with_pagectl(
        process_registry, pagectl, zeroed_files, start=mid, name="pagectl-zeroed"
    )
    compare_records(want, got, "pg_waldump (zeroed prefix)", "pagectl (zeroed prefix)")

    # An end LSN: both print the records that end at or before it.
    last = expected[len(expected) * 3 // 4]
    for end, name in ((last.lsn, "end-at-record"), (last.lsn + 1, "end-inside-record")):
        end_files = [f for f in files if segment_start_lsn(f) <= end]
        want = dump_with_pg_waldump(stock_pg_bin, end_files, end=end, name=f"pg_waldump-{name}")
        assert want and want[-1].lsn < last.lsn
        got = dump_with_pagectl(
            process_registry, pagectl, end_files, end=end, name=f"pagectl-{name}"
        )
        compare_records(want, got, "pg_waldump --end", "pagectl --end")

    report_summary.append(
        f"test_wal_decoder (mid-segment start): pagectl and pg_waldump agree on "
        f"{len(expected)} records from {files[0].name}"
    )


def test_pg_waldump_parsers():
    """The pg_waldump output parsers on lines in the exact PostgreSQL 15 formats."""
    short = (
        "rmgr: Heap        len (rec/tot):     54/    54, tx:        734, lsn: 0/016B5A50, "
        "prev 0/016B5A18, desc: INSERT off 2 flags 0x00, blkref #0: rel 1663/5/16384 blk 0\n"
        "rmgr: Heap2       len (rec/tot):     64/  8256, tx:          0, lsn: 0/01474710, "
        "prev 0/014745F8, desc: VISIBLE cutoff xid 682 flags 0x03, "
        "blkref #0: rel 1663/1/2619 fork vm blk 0 FPW, blkref #1: rel 1663/1/2619 blk 0\n"
        "rmgr: Transaction len (rec/tot):     82/    82, tx:        735, lsn: 0/016B5A88, "
        "prev 0/016B5A50, desc: COMMIT 2024-01-01 00:00:00.000000 UTC; inval msgs: catcache 7, "
        "relcache 16384\n"
        "rmgr: Heap        len (rec/tot):     72/  8244, tx:        736, lsn: 0/016B5B00, "
        "prev 0/016B5A88, desc: HOT_UPDATE off 1 xmax 736 flags 0x10 ; new off 3 xmax 0, "
        "blkref #0: rel 1663/5/16384 blk 3 FPW for WAL verification\n"
        "rmgr: LogicalMessage len (rec/tot):     67/    67, tx:          0, lsn: 1/00000028, "
        'prev 0/016B5A88, desc: MESSAGE non-transactional, prefix "t"; payload (5 bytes): 73\n'
    )
    recs = parse_pg_waldump(short)
    assert [r.rmgr for r in recs] == ["Heap", "Heap2", "Transaction", "Heap", "LogicalMessage"]
    assert recs[0].key() == (0x16B5A50, "Heap", 734, 54, recs[0].blocks)
    assert [str(b) for b in recs[1].blocks] == [
        "1663/1/2619 vm blk 0 FPI",
        "1663/1/2619 main blk 0",
    ]
    assert recs[2].blocks == () and "relcache 16384" in recs[2].desc
    assert [str(b) for b in recs[3].blocks] == ["1663/5/16384 main blk 3 FPI"]
    assert recs[4].lsn == 1 << 32 | 0x28

    detailed = (
        "rmgr: XLOG        len (rec/tot):     49/   137, tx:          1, lsn: 0/010000C0, "
        "prev 0/010000A0, desc: FPI \n"
        "\tblkref #0: rel 1663/1/6117 fork main blk 0 (FPW); hole: offset: 72, length: 8104\n"
        "rmgr: Heap        len (rec/tot):     59/   259, tx:        740, lsn: 0/01000150, "
        "prev 0/010000C0, desc: HOT_UPDATE off 1 xmax 740 ; new off 2 xmax 0\n"
        "\tblkref #0: rel 1663/5/16384 fork main blk 7 (FPW); hole: offset: 44, length: 7000, "
        "compression saved: 900, method: lz4\n"
        "\tblkref #1: rel 1663/5/16384 fork vm blk 0\n"
        "\tblkref #2: rel 1663/5/16385 fork main blk 9 (FPW for WAL verification); hole: "
        "offset: 40, length: 100\n"
    )
    drecs = parse_pg_waldump_detailed(detailed)
    assert [d.image_methods for d in drecs] == [("",), ("lz4", "")]
    assert [d.verification_images for d in drecs] == [0, 1]
    assert [str(b) for b in drecs[1].record.blocks] == [
        "1663/5/16384 main blk 7 FPI",
        "1663/5/16384 vm blk 0",
        "1663/5/16385 main blk 9 FPI",
    ]


def test_compare_records_reports_first_difference():
    from fixtures.waldump import BlockRef

    def rec(lsn, rmgr="Heap", blocks=()):
        return WalRecord(lsn, rmgr, 1, 50, tuple(blocks))

    a = [rec(0x100), rec(0x200), rec(0x300, blocks=[BlockRef("1663/5/1", "main", 3, False)])]
    compare_records(a, list(a))
    b = [rec(0x100), rec(0x200), rec(0x300, blocks=[BlockRef("1663/5/1", "vm", 3, False)])]
    with pytest.raises(AssertionError) as e:
        compare_records(a, b, ranges=[LsnRange("step-x", 0x250, 0x400)])
    msg = str(e.value)
    assert "record #2 differs (2 records agree before it" in msg
    assert "blocks: [1663/5/1 main blk 3] != [1663/5/1 vm blk 3]" in msg
    assert "workload step 'step-x'" in msg
    with pytest.raises(AssertionError, match="the first 2 agree; pagectl goes on with"):
        compare_records(a[:2], a)
