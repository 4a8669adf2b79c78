"""The "same database state" machinery (fixtures.compare, fixtures.workload) on stock
PostgreSQL: a physical copy of a server that ran the MixedWorkload has its state, a change
to the copy is reported by name, and a point-in-time restore to an LSN recorded in the middle
of the workload has the state the source had at that LSN."""

from __future__ import annotations

import logging
import re

import pytest

from fixtures.compare import (
    assert_amcheck_clean,
    assert_same_fingerprint,
    assert_same_state,
    cluster_fingerprint,
    install_amcheck,
    sort_copy_blocks,
)
from fixtures.pg import VanillaPostgres
from fixtures.utils import wait_until
from fixtures.workload import PENDING_GID, WORKLOAD_SETTINGS, MixedWorkload

log = logging.getLogger("test_compare")

SCALE = 0.05
MID_STEP = "multixacts"

SOURCE_SETTINGS = {
    **WORKLOAD_SETTINGS,
    "wal_keep_size": "1GB",  # the point-in-time restore reads the source's pg_wal
    "max_wal_size": "1GB",
}


def basebackup_copy(src: VanillaPostgres, factory, name: str) -> VanillaPostgres:
    """`pg_basebackup -Fp -X stream` of `src` into a new, not started server `name`."""
    copy = factory(name)
    src.pg_bin.run(
        [
            "pg_basebackup",
            "-D",
            copy.datadir,
            "-Fp",
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            "127.0.0.1",
            "-p",
            str(src.port),
            "-U",
            src.user,
        ],
        name=f"{name}-basebackup",
    )
    # The copied postgresql.conf is the source's: the copy listens elsewhere.
    copy.configure({"port": copy.port, "unix_socket_directories": str(copy.socket_dir)})
    return copy


def test_copy_has_same_state_and_changes_are_named(vanilla_pg, vanilla_pg_factory):
    src = vanilla_pg
    src.configure(SOURCE_SETTINGS)
    src.start()
    # A copy from before the workload, restored to the middle LSN at the end.
    base = basebackup_copy(src, vanilla_pg_factory, "pitr")

    wl = MixedWorkload(src.connect, scale=SCALE, seed=7)
    try:
        wl.run(upto=MID_STEP)
        assert wl.done[-1] == MID_STEP and "databases" in wl.remaining()
        mid_lsn = src.safe_psql("select pg_current_wal_lsn()::text")[0][0]
        fp_mid = cluster_fingerprint(src)
        wl.run()
        assert not wl.remaining()
    finally:
        wl.close()
    install_amcheck(src)

    # A physical copy has the same state, and amcheck finds nothing wrong in it.
    copy = basebackup_copy(src, vanilla_pg_factory, "copy").start()
    assert_same_state(src, copy)
    checked = assert_amcheck_clean(copy, create_extension=False)
    assert checked["indexes"] > 100 and checked["tables"] > 50, checked

    fp_src = cluster_fingerprint(src)
    check_fingerprint_contents(fp_src)
    check_changes_are_named(fp_src, copy)

    # Point-in-time restore of the early backup to the middle LSN: the state at that LSN.
    src_wal = src.datadir / "pg_wal"
    src.stop()
    base.configure(
        {
            "restore_command": f"cp {src_wal}/%f %p",
            "recovery_target_lsn": mid_lsn,
            "recovery_target_inclusive": "off",
            "recovery_target_action": "promote",
        }
    )
    (base.datadir / "recovery.signal").touch()
    base.start()
    wait_until(
        lambda: not base.safe_psql("select pg_is_in_recovery()")[0][0],
        60,
        "the point-in-time restore to promote",
    )
    assert_same_fingerprint(fp_mid, cluster_fingerprint(base), ("source at mid", "pitr"))
    with pytest.raises(AssertionError, match=r"database db_wal_log is only in source at end"):
        assert_same_fingerprint(fp_src, cluster_fingerprint(base), ("source at end", "pitr"))


def check_fingerprint_contents(fp: dict) -> None:
    """The fingerprint covers what the workload made."""
    names = {d[0] for d in fp["databases"]}
    assert {"postgres", "template0", "template1", "db_wal_log", "db_file_copy"} <= names
    assert [g[0] for g in fp["prepared_xacts"]] == [PENDING_GID]
    db = fp["per_database"]["postgres"]
    assert "CREATE INDEX t_gist_p ON public.t_gist USING gist (p);" in db["schema"]
    assert "\\restrict" not in db["schema"] and "\\restrict" not in db["data"]
    assert db["row_counts"]["t_heap"] > 500
    assert "t_unlogged" not in db["row_counts"]
    assert db["sequences"]["s2"] == (3 + 7 * 32, True)  # 32 values WAL-logged ahead
    assert len(db["large_objects"]) == 2
    scans = db["index_scans"]
    for index in ("t_heap_pkey", "t_heap_v", "t_heap_n_mod", "t_hash_k", "t_gist_p", "t_brin_id"):
        assert scans[index]["used_index"], f"{index} not read through the index: {scans[index]}"
        assert scans[index]["rows"] > 0, scans[index]
    assert not scans["t_gin_arr"]["checked"]
    assert fp["per_database"]["db_file_copy"]["row_counts"]["t_in_db"] == 1000


def check_changes_are_named(fp_src: dict, copy: VanillaPostgres) -> None:
    """Each change to the copy fails the comparison with a message naming it; undoing the
    change makes the states equal again."""
    names = ("source", "copy")

    def assert_differs(match: str) -> None:
        with pytest.raises(AssertionError, match=match) as e:
            assert_same_fingerprint(fp_src, cluster_fingerprint(copy), names)
        log.info("reported difference: %s", str(e.value)[:2000])

    def assert_same() -> None:
        assert_same_fingerprint(fp_src, cluster_fingerprint(copy), names)

    old_v = copy.safe_psql("select v from t_heap where id = 3")[0][0]
    copy.safe_psql("update t_heap set v = 'changed' where id = 3")
    assert_differs(r"(?s)pg_dump --data-only differs.*\n\+3\tchanged\t")
    assert_differs(r"index scan of t_heap_v: source \{.*\} != copy")
    copy.safe_psql("update t_heap set v = %s where id = 3", params=(old_v,))
    assert_same()

    copy.safe_psql("drop index t_hash_k")
    assert_differs(r"(?s)--schema-only differs.*\n-CREATE INDEX t_hash_k ON public.t_hash")
    assert_differs(r"index scan of t_hash_k: source \{.*\} != copy <missing>")
    copy.safe_psql("create index t_hash_k on t_hash using hash (k)")
    assert_same()

    copy.safe_psql("select nextval('s2')")
    assert_differs(r"sequence s2: source \(227, True\) != copy \(\d+, True\)")
    # What a restore of the source would have: its WAL-logged value.
    logged, called = fp_src["per_database"]["postgres"]["sequences"]["s2"]
    copy.safe_psql("select setval('s2', %s, %s)", params=(logged, called))
    assert_same()

    copy.safe_psql(f"commit prepared '{PENDING_GID}'")
    assert_differs(r"prepared transactions differ: source \[\('wl_pending'")


def test_sort_copy_blocks():
    dump = "SET x = 1;\nCOPY public.t (a) FROM stdin;\nb\na\nb\n\\.\nCOPY public.u (a) FROM stdin;\n\\.\nz\ny"
    assert sort_copy_blocks(dump) == (
        "SET x = 1;\nCOPY public.t (a) FROM stdin;\na\nb\nb\n\\.\n"
        "COPY public.u (a) FROM stdin;\n\\.\nz\ny"
    )


def test_amcheck_reports_corruption(vanilla_pg: VanillaPostgres):
    """Two swapped line pointers on a btree leaf page: bt_index_check reports the index."""
    pg = vanilla_pg.start()
    pg.safe_psql("create table t (id int, v text)")
    pg.safe_psql("insert into t select g, md5(g::text) from generate_series(1, 2000) g")
    pg.safe_psql("create index t_v on t (v)")
    install_amcheck(pg)
    assert_amcheck_clean(pg)
    path = pg.datadir / pg.safe_psql("select pg_relation_filepath('t_v')")[0][0]
    heap_path = pg.datadir / pg.safe_psql("select pg_relation_filepath('t')")[0][0]
    pg.stop()

    page_size, page_header_size, line_pointer_size = 8192, 24, 4
    leaf = 1  # block 0 is the metapage; 1 is the leftmost leaf of a sorted build
    with open(path, "r+b") as f:
        f.seek(leaf * page_size + page_header_size + line_pointer_size)  # items 2 and 3
        items = f.read(2 * line_pointer_size)
        f.seek(leaf * page_size + page_header_size + line_pointer_size)
        f.write(items[line_pointer_size:] + items[:line_pointer_size])
    # And the xmin of the first tuple of the table from the future.
    with open(heap_path, "r+b") as f:
        f.seek(page_header_size)
        line_pointer = int.from_bytes(f.read(line_pointer_size), "little")
        f.seek(line_pointer & 0x7FFF)  # lp_off
        f.write((0xFFFFFFF0).to_bytes(4, "little"))
    pg.start()
    with pytest.raises(AssertionError) as e:
        assert_amcheck_clean(pg)
    log.info("amcheck said: %s", e.value)
    assert re.search(r"bt_index_check\(t_v\): .*invariant violated", str(e.value))
    assert re.search(r"verify_heapam\(t\): \(0, 1, None, 'xmin 4294967280 ", str(e.value))
