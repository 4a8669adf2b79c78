"""Starting our PostgreSQL from a pageserver-style base backup taken at an arbitrary LSN, with no
checkpoint record in its WAL (`neon.signal`, patch vendor/postgres-v15/patches/0010-*).

The tests emulate what the pageserver does (docs: neon-internals §4.2-4.5): from a cleanly shut
down cluster they build a data directory whose pg_control has checkPoint = 0 and
checkPointCopy.redo = the backup LSN (the end of the last record), whose pg_wal holds one
generated segment with nothing but page headers, and whose neon.signal names the record before
the backup LSN (`PREV LSN: X/Y`, `none` or `invalid`).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from fixtures.paths import chown_to_pg_user
from fixtures.pg import PgBin, VanillaPostgres
from fixtures.utils import format_lsn, parse_lsn, wait_until
from fixtures.waldump import (
    SIZE_OF_LONG_PAGE_HEADER,
    SIZE_OF_SHORT_PAGE_HEADER,
    WAL_PAGE_SIZE,
    WAL_SEGMENT_SIZE,
    XLP_FIRST_IS_CONTRECORD,
    XLP_LONG_HEADER,
    next_record_start,
    parse_pg_waldump,
    pg_waldump_end_of_wal,
    record_end,
)

XLOG_PAGE_MAGIC = 0xD110  # PostgreSQL 15
TIMELINE = 1
ROWS = 1000
READ_WRITE_FATAL = "cannot start in read-write mode from this base backup"
NEON_START_LOG = "without a checkpoint record"

# ControlFileData (src/include/catalog/pg_control.h), PostgreSQL 15 on a 64-bit platform.
CTRL_STATE = 16  # DBState (int)
CTRL_CHECKPOINT = 32  # XLogRecPtr checkPoint
CTRL_REDO = 40  # checkPointCopy.redo: the first field of CheckPoint
CTRL_FLOAT_FORMAT = 208  # double floatFormat = 1234567.0
CTRL_XLOG_SEG_SIZE = 228
CTRL_CRC = 288  # pg_crc32c crc, over every byte before it
DB_SHUTDOWNED = 1

_PREV_RE = re.compile(r"lsn: ([0-9A-F]+/[0-9A-F]+), prev ([0-9A-F]+/[0-9A-F]+),")


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as PostgreSQL's pg_crc32c."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def rewrite_pg_control(path: Path, start_lsn: int) -> None:
    """What generate_pg_control does: checkPoint = 0, checkPointCopy.redo = the start LSN,
    state shut down, CRC recomputed. Checks the layout assumptions on the original first."""
    data = bytearray(path.read_bytes())
    assert struct.unpack_from("<I", data, CTRL_CRC)[0] == crc32c(data[:CTRL_CRC]), (
        "pg_control CRC is not where this test expects it"
    )
    assert struct.unpack_from("<d", data, CTRL_FLOAT_FORMAT)[0] == 1234567.0
    assert struct.unpack_from("<I", data, CTRL_XLOG_SEG_SIZE)[0] == WAL_SEGMENT_SIZE
    assert struct.unpack_from("<i", data, CTRL_STATE)[0] == DB_SHUTDOWNED
    struct.pack_into("<Q", data, CTRL_CHECKPOINT, 0)
    struct.pack_into("<Q", data, CTRL_REDO, start_lsn)
    struct.pack_into("<I", data, CTRL_CRC, crc32c(data[:CTRL_CRC]))
    path.write_bytes(bytes(data))


def segment_name(lsn: int, tli: int = TIMELINE) -> str:
    segno = lsn // WAL_SEGMENT_SIZE
    per_xlogid = 0x100000000 // WAL_SEGMENT_SIZE
    return f"{tli:08X}{segno // per_xlogid:08X}{segno % per_xlogid:08X}"


def generate_wal_segment(start_lsn: int, sysid: int, tli: int = TIMELINE) -> bytes:
    """What generate_wal_segment does: zeros, a long page header on the first page, and a
    short one on the page of `start_lsn` if that is a later page; the page that holds the start
    says it begins with the rest of a record that ends at the start (XLP_FIRST_IS_CONTRECORD,
    xlp_rem_len = the bytes before the start)."""
    seg_start = start_lsn - start_lsn % WAL_SEGMENT_SIZE
    offset = start_lsn - seg_start
    buf = bytearray(WAL_SEGMENT_SIZE)
    rem = offset - SIZE_OF_LONG_PAGE_HEADER if offset < WAL_PAGE_SIZE else 0
    info = XLP_LONG_HEADER | (XLP_FIRST_IS_CONTRECORD if rem > 0 else 0)
    struct.pack_into("<HHIQI", buf, 0, XLOG_PAGE_MAGIC, info, tli, seg_start, rem)
    struct.pack_into("<QII", buf, 24, sysid, WAL_SEGMENT_SIZE, WAL_PAGE_SIZE)
    if offset >= WAL_PAGE_SIZE:
        page = offset - offset % WAL_PAGE_SIZE
        rem = offset - page - SIZE_OF_SHORT_PAGE_HEADER
        info = XLP_FIRST_IS_CONTRECORD if rem > 0 else 0
        struct.pack_into("<HHIQI", buf, page, XLOG_PAGE_MAGIC, info, tli, seg_start + page, rem)
    return bytes(buf)


def controldata(pg_bin: PgBin, datadir: Path) -> dict[str, str]:
    out = pg_bin.run_capture(["pg_controldata", "-D", datadir], name="pg_controldata")
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


@dataclass
class Backup:
    pg: VanillaPostgres  # the compute, not started
    start_lsn: int  # the backup LSN: where new WAL goes
    prev_lsn: int  # start of the record that ends at start_lsn (the shutdown checkpoint)


def take_backup(
    pg_bin: PgBin,
    vanilla_pg_factory,
    name: str,
    switch_wal: bool = False,
    prev: str = "lsn",
    with_segment: bool = True,
) -> Backup:
    """Makes a cluster with table t (ROWS rows), shuts it down cleanly, and builds a base backup
    at the end of its shutdown checkpoint record for a new server `name`. `switch_wal` starts a
    new segment first (so the backup LSN is on a segment's first page). `prev`: "lsn" (the
    checkpoint record's start), "none" or "invalid". `with_segment=False` leaves pg_wal empty."""
    src = vanilla_pg_factory(f"{name}-src", pg_bin=pg_bin).init()
    src.start()
    src.safe_psql("create table t (id int primary key, v text)")
    src.safe_psql(f"insert into t select g, 'row ' || g from generate_series(1, {ROWS}) g")
    if switch_wal:
        src.safe_psql("select pg_switch_wal()")
    src.stop()

    ckpt = parse_lsn(controldata(pg_bin, src.datadir)["Latest checkpoint location"])
    src_segment = src.datadir / "pg_wal" / segment_name(ckpt)
    out = pg_bin.run_capture(
        ["pg_waldump", "-n", "1", "-s", format_lsn(ckpt), src_segment], name="pg_waldump-src"
    )
    (rec,) = parse_pg_waldump(out)
    assert rec.lsn == ckpt and "CHECKPOINT_SHUTDOWN" in rec.desc, rec
    start_lsn = next_record_start(record_end(rec))

    compute = vanilla_pg_factory(name, pg_bin=pg_bin)
    shutil.copytree(src.datadir, compute.datadir, symlinks=True)
    for f in (compute.datadir / "pg_wal").iterdir():
        if f.is_file():
            f.unlink()
    sysid = struct.unpack_from("<Q", (compute.datadir / "global/pg_control").read_bytes())[0]
    if with_segment:
        segment = compute.datadir / "pg_wal" / segment_name(start_lsn)
        segment.write_bytes(generate_wal_segment(start_lsn, sysid))
    rewrite_pg_control(compute.datadir / "global/pg_control", start_lsn)
    value = {"lsn": format_lsn(ckpt), "none": "none", "invalid": "invalid"}[prev]
    (compute.datadir / "neon.signal").write_text(f"PREV LSN: {value}\n")
    for root, dirs, files in os.walk(compute.datadir):
        for n in dirs + files:
            chown_to_pg_user(Path(root) / n)
    chown_to_pg_user(compute.datadir)
    compute.configure(
        {
            "port": compute.port,
            "unix_socket_directories": str(compute.socket_dir),
            # No timed checkpoint: the tests decide when the first checkpoint happens.
            "checkpoint_timeout": "1h",
        }
    )

    fields = controldata(pg_bin, compute.datadir)
    assert fields["Latest checkpoint location"] == "0/0"
    assert parse_lsn(fields["Latest checkpoint's REDO location"]) == start_lsn
    return Backup(compute, start_lsn, ckpt)


class LogCursor:
    """Reads what a server logged since the last call (its log is appended across restarts)."""

    def __init__(self, pg: VanillaPostgres):
        self.path = pg.log_path
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def new_text(self) -> str:
        with open(self.path, errors="replace") as f:
            f.seek(self.offset)
            text = f.read()
        self.offset += len(text.encode())
        return text


def table_stats(pg: VanillaPostgres) -> tuple[int, int]:
    return pg.safe_psql("select count(*), coalesce(sum(id), 0) from t")[0]


def expected_stats(n: int) -> tuple[int, int]:
    return (n, n * (n + 1) // 2)


def checkpoint_lsns(pg: VanillaPostgres) -> tuple[int, int]:
    row = pg.safe_psql("select checkpoint_lsn::text, redo_lsn::text from pg_control_checkpoint()")
    return parse_lsn(row[0][0]), parse_lsn(row[0][1])


def insert_rows(pg: VanillaPostgres, first: int, last: int) -> None:
    pg.safe_psql(f"insert into t select g, 'row ' || g from generate_series({first}, {last}) g")


def waldump_from(pg_bin: PgBin, datadir: Path, start_lsn: int) -> str:
    """pg_waldump from `start_lsn` to the end of the WAL; returns its output."""
    segment = datadir / "pg_wal" / segment_name(start_lsn)
    res = pg_bin.run(
        ["pg_waldump", "-s", format_lsn(start_lsn), segment], name="pg_waldump", check=False
    )
    pg_waldump_end_of_wal(res.returncode, res.stderr)
    return res.stdout


def test_crc32c():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@pytest.mark.parametrize(
    "case",
    ["prev-lsn-later-page", "prev-none-first-page", "prev-lsn-no-segment"],
)
def test_read_write_start(case: str, pg_bin: PgBin, vanilla_pg_factory):
    """A read-write start from the backup: sees the data, writes after the backup LSN with the
    right prev-link, recovers from crashes before and after its first checkpoint."""
    prev = "none" if "prev-none" in case else "lsn"
    first_page = case.endswith("first-page")
    with_segment = not case.endswith("no-segment")
    b = take_backup(
        pg_bin,
        vanilla_pg_factory,
        "compute",
        switch_wal=first_page,
        prev=prev,
        with_segment=with_segment,
    )
    on_first_page = b.start_lsn % WAL_SEGMENT_SIZE < WAL_PAGE_SIZE
    assert on_first_page == first_page, f"backup LSN {format_lsn(b.start_lsn)}"
    pg = b.pg
    signal_file = pg.datadir / "neon.signal"
    log = LogCursor(pg)

    pg.start()
    text = log.new_text()
    assert f"starting from a base backup at {format_lsn(b.start_lsn)} {NEON_START_LOG}" in text
    assert "redo starts at" not in text
    if not with_segment:
        assert "wrote the first page header of WAL segment" in text
    assert table_stats(pg) == expected_stats(ROWS)
    assert pg.safe_psql("select pg_is_in_recovery()") == [(False,)]
    assert pg.safe_psql("select timeline_id from pg_control_checkpoint()") == [(TIMELINE,)]
    # No checkpoint yet: pg_control still points to none, and the signal file is in force.
    assert checkpoint_lsns(pg) == (0, b.start_lsn)
    insert_rows(pg, ROWS + 1, 2 * ROWS)
    pg.safe_psql("update t set v = 'updated' where id % 10 = 0")
    assert signal_file.exists()

    # A crash before the first checkpoint: crash recovery replays from the backup LSN.
    pg.stop("immediate")
    pg.start()
    text = log.new_text()
    assert NEON_START_LOG in text
    assert f"redo starts at {format_lsn(b.start_lsn)}" in text
    assert table_stats(pg) == expected_stats(2 * ROWS)
    assert pg.safe_psql("select count(*) from t where v = 'updated'") == [(2 * ROWS // 10,)]
    # The end-of-recovery checkpoint made the signal file obsolete.
    ckpt, redo = checkpoint_lsns(pg)
    assert ckpt > b.start_lsn and redo > b.start_lsn
    assert not signal_file.exists()
    assert (pg.datadir / "neon.signal.done").exists()

    # From now on an ordinary server: crash recovery from its own checkpoint.
    insert_rows(pg, 2 * ROWS + 1, 3 * ROWS)
    pg.stop("immediate")
    pg.start()
    text = log.new_text()
    assert NEON_START_LOG not in text
    assert "redo starts at" in text
    assert table_stats(pg) == expected_stats(3 * ROWS)
    pg.restart("fast")
    assert table_stats(pg) == expected_stats(3 * ROWS)
    pg.stop()

    # The WAL after the backup LSN is readable, and its first record links to the record
    # that ends at the backup LSN (none: no link).
    out = waldump_from(pg_bin, pg.datadir, b.start_lsn)
    records = parse_pg_waldump(out)
    assert records and records[0].lsn == b.start_lsn, out[:500]
    m = _PREV_RE.search(out.splitlines()[0])
    assert m is not None
    want_prev = b.prev_lsn if prev == "lsn" else 0
    assert parse_lsn(m[2]) == want_prev
    inserts = sum(1 for r in records if r.rmgr == "Heap" and r.desc.startswith("INSERT"))
    assert inserts >= 2 * ROWS
    assert [r.lsn for r in records] == sorted(r.lsn for r in records)


def test_clean_shutdown_retires_signal_file(pg_bin: PgBin, vanilla_pg_factory):
    """The shutdown checkpoint after a start from the backup makes neon.signal obsolete: the
    next start is an ordinary one."""
    b = take_backup(pg_bin, vanilla_pg_factory, "compute")
    pg = b.pg
    log = LogCursor(pg)
    pg.start()
    insert_rows(pg, ROWS + 1, 2 * ROWS)
    pg.stop()
    assert not (pg.datadir / "neon.signal").exists()
    assert (pg.datadir / "neon.signal.done").exists()
    fields = controldata(pg_bin, pg.datadir)
    assert parse_lsn(fields["Latest checkpoint location"]) > b.start_lsn
    assert fields["Database cluster state"] == "shut down"
    log.new_text()
    pg.start()
    text = log.new_text()
    assert NEON_START_LOG not in text and "neon.signal" not in text
    assert table_stats(pg) == expected_stats(2 * ROWS)


def test_prev_invalid_starts_read_only(pg_bin: PgBin, vanilla_pg_factory):
    """PREV LSN: invalid: a read-write start fails clearly; a hot standby start works."""
    b = take_backup(pg_bin, vanilla_pg_factory, "ro", prev="invalid")
    pg = b.pg
    pg_control_before = (pg.datadir / "global/pg_control").read_bytes()

    res = pg_bin.run(["postgres", "-D", pg.datadir], name="postgres-rw", check=False, timeout_s=60)
    assert res.returncode != 0
    assert f"FATAL:  {READ_WRITE_FATAL}" in res.stderr, res.stderr
    # It failed before changing anything.
    assert (pg.datadir / "global/pg_control").read_bytes() == pg_control_before
    assert (pg.datadir / "neon.signal").exists()

    (pg.datadir / "standby.signal").write_text("")
    chown_to_pg_user(pg.datadir / "standby.signal")
    pg.configure({"hot_standby": True})
    log = LogCursor(pg)
    pg.start()
    assert NEON_START_LOG in log.new_text()
    assert pg.safe_psql("select pg_is_in_recovery()") == [(True,)]
    assert table_stats(pg) == expected_stats(ROWS)
    assert pg.safe_psql("select pg_last_wal_replay_lsn()::text") == [(format_lsn(b.start_lsn),)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="read-only transaction"):
        pg.safe_psql("insert into t values (0, 'x')")

    # A restart as a standby is the same start again.
    pg.restart("fast")
    assert table_stats(pg) == expected_stats(ROWS)

    # Promotion without having replayed anything would need the unknown prev-link: refused.
    pg_bin.run(["pg_ctl", "promote", "--no-wait", "-D", pg.datadir], name="pg_ctl-promote")
    proc = pg.proc
    assert proc is not None
    wait_until(lambda: not proc.is_running(), 60, "the standby to exit on promotion")
    assert f"FATAL:  {READ_WRITE_FATAL}" in proc.log_text()

    # Without standby.signal, the (crash) recovery from the backup cannot go read-write either.
    (pg.datadir / "standby.signal").unlink()
    res = pg_bin.run(["postgres", "-D", pg.datadir], name="postgres-rw2", check=False, timeout_s=60)
    assert res.returncode != 0
    assert f"FATAL:  {READ_WRITE_FATAL}" in res.stderr, res.stderr


def test_standby_promotion_stays_on_timeline(pg_bin: PgBin, vanilla_pg_factory):
    """A standby started from a backup with a known prev LSN can be promoted: it writes on
    timeline 1, after the backup LSN, with the right prev-link."""
    b = take_backup(pg_bin, vanilla_pg_factory, "replica")
    pg = b.pg
    (pg.datadir / "standby.signal").write_text("")
    chown_to_pg_user(pg.datadir / "standby.signal")
    pg.configure({"hot_standby": True})
    log = LogCursor(pg)
    pg.start()
    assert pg.safe_psql("select pg_is_in_recovery()") == [(True,)]
    assert pg.safe_psql("select pg_promote(wait => true)") == [(True,)]
    assert pg.safe_psql("select pg_is_in_recovery()") == [(False,)]
    text = log.new_text()
    assert "staying on timeline ID 1" in text
    assert "selected new timeline ID" not in text
    assert not (pg.datadir / "standby.signal").exists()
    assert not list((pg.datadir / "pg_wal").glob("*.history"))
    insert_rows(pg, ROWS + 1, 2 * ROWS)
    pg.stop("immediate")
    pg.start()
    assert table_stats(pg) == expected_stats(2 * ROWS)
    assert pg.safe_psql("select timeline_id from pg_control_checkpoint()") == [(TIMELINE,)]
    pg.stop()

    out = waldump_from(pg_bin, pg.datadir, b.start_lsn)
    first = out.splitlines()[0]
    assert "END_OF_RECOVERY" in first and "tli 1; prev tli 1" in first, first
    m = _PREV_RE.search(first)
    assert m is not None and parse_lsn(m[1]) == b.start_lsn and parse_lsn(m[2]) == b.prev_lsn


@pytest.mark.parametrize(
    "content, message",
    [
        ("PREV LSN: banana\n", 'invalid previous-record LSN "banana"'),
        ("LSN: 0/0\n", 'invalid data in file "neon.signal"'),
        ("PREV LSN: none trailing\n", 'invalid data in file "neon.signal"'),
        ("PREV LSN: FFFF/0\n", "invalid previous-record LSN FFFF/0"),
    ],
)
def test_invalid_signal_file(content: str, message: str, pg_bin: PgBin, vanilla_pg_factory):
    b = take_backup(pg_bin, vanilla_pg_factory, "bad")
    (b.pg.datadir / "neon.signal").write_text(content)
    res = pg_bin.run(["postgres", "-D", b.pg.datadir], name="postgres", check=False, timeout_s=60)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr


def test_vanilla_start_unchanged(pg_bin: PgBin, vanilla_pg_factory):
    """Without neon.signal our build behaves like stock PostgreSQL (crash recovery, pgbench);
    a neon.signal in a data directory whose pg_control has a checkpoint is ignored."""
    pg = vanilla_pg_factory("plain", pg_bin=pg_bin).init()
    log = LogCursor(pg)
    pg.start()
    conn = ["-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, "postgres"]
    pg_bin.run(["pgbench", "-i", "-s", "1", *conn], name="pgbench-init")
    pg_bin.run(["pgbench", "-c", "2", "-t", "200", *conn], name="pgbench")
    before = pg.safe_psql("select sum(abalance), count(*) from pgbench_accounts")
    pg.stop("immediate")
    pg.start()
    assert "redo starts at" in log.new_text()
    assert pg.safe_psql("select sum(abalance), count(*) from pgbench_accounts") == before
    pg.stop()

    (pg.datadir / "neon.signal").write_text("PREV LSN: 0/1000028\n")
    chown_to_pg_user(pg.datadir / "neon.signal")
    pg.start()
    text = log.new_text()
    assert 'ignoring file "neon.signal"' in text
    assert NEON_START_LOG not in text
    assert not (pg.datadir / "neon.signal").exists()
    assert (pg.datadir / "neon.signal.done").exists()
    assert pg.safe_psql("select sum(abalance), count(*) from pgbench_accounts") == before
