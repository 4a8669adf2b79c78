"""Importing a stock PostgreSQL 15 cluster into the pageserver and exporting it again.

Each test makes a stock source server, takes `pg_basebackup -Ft -X none` of it, runs the
MixedWorkload (or pgbench) on it, stops it cleanly and imports the base backup plus the WAL
written since into a fresh neon_local environment (`cargo neon timeline import`). A
`fullbackup` of the imported timeline, started with our PostgreSQL, must then have exactly the
source's state (fixtures.compare), also at an LSN in the middle of the WAL (a branch), after
the pageserver was killed with SIGKILL, and a flipped byte in a layer file must make the
backup fail with a checksum error rather than return a different page.

The import's end LSN is the end of the source's shutdown checkpoint record: after a clean
shutdown that record is the last one in the WAL, pg_control names its start, and pg_waldump
gives its length, so its end (EndRecPtr: MAXALIGNed, page headers counted) is a record
boundary that the WAL ingestion reaches exactly, with nothing of the source's state after it.
On a running server no LSN is the end of everything: `pg_current_wal_insert_lsn()` is the end
of the last record reserved so far (past the page header when that is a page start), but
background processes may append records after it and a reserved record may still be being
copied. That is good enough for the middle branch point (a record boundary, with all records
before it in the imported WAL), not for the end of the import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fixtures.compare import (
    assert_amcheck_clean,
    assert_same_fingerprint,
    assert_same_state,
    cluster_fingerprint,
    install_amcheck,
)
from fixtures.paths import make_pg_user_dir
from fixtures.pg import PgBin, VanillaPostgres
from fixtures.procs import ProcessRegistry, pid_alive
from fixtures.utils import format_lsn, parse_lsn, wait_until
from fixtures.waldump import parse_pg_waldump, record_end, segment_start_lsn, wal_segments
from fixtures.workload import WORKLOAD_SETTINGS, MixedWorkload

log = logging.getLogger("test_pageserver_import")

HEX32 = r"[0-9a-f]{32}"
SCALE = 0.05
MID_STEP = "multixacts"
WAL_SEGMENT_BYTES = 16 * 1024 * 1024

# The source keeps every WAL segment since the base backup (the import reads them from its
# pg_wal) and checkpoints only when told.
SOURCE_SETTINGS = {
    **WORKLOAD_SETTINGS,
    "wal_keep_size": "4GB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "1h",
}

# What a server restored from a fullbackup needs besides the connection settings: the
# pending prepared transaction needs max_prepared_transactions, and the WAL-logged settings
# recorded in pg_control should not go down.
RESTORED_SETTINGS = {**WORKLOAD_SETTINGS, "checkpoint_timeout": "1h"}

# Layer file names (pageserver/layers/FORMAT.md).
KEY_HEX = r"[0-9A-F]{36}"
LSN_HEX = r"[0-9A-F]{16}"
DELTA_NAME_RE = re.compile(rf"^({KEY_HEX})-({KEY_HEX})__({LSN_HEX})-({LSN_HEX})$")
IMAGE_NAME_RE = re.compile(rf"^({KEY_HEX})-({KEY_HEX})__({LSN_HEX})$")
KEY_MIN_HEX = "0" * 36
KEY_MAX_HEX = "F" * 36
LAYER_BLOCK_BYTES = 8192
SUMMARY_INDEX_START_OFFSET = 92  # u32 BE: first block of the index (end of the value area)
BLOB_HEADER_BYTES = 8  # u32 BE length, u32 BE crc32c

CHECKSUM_ERROR_RE = r"(?i)checksum|corrupt"


# ---------------------------------------------------------------------------------------------
# neon_local environment


def http(method: str, url: str, body: dict | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


@dataclass
class NeonEnv:
    """A neon_local repository with a running pageserver and one tenant."""

    repo_root: Path
    repo: Path
    registry: ProcessRegistry
    psql_bin: PgBin
    out_dir: Path
    pg_port: int
    http_port: int
    tenant: str = ""
    # Problems found on the way that do not stop the test (reported by assert_no_problems).
    problems: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ps_dir(self) -> Path:
        return self.repo / "pageserver_1"

    def cli(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.registry.run(
            name,
            ["cargo", "neon", *args],
            cwd=self.repo_root,
            env={"NEON_REPO_DIR": str(self.repo)},
            timeout_s=900,
            check=check,
        )

    def api(self, method: str, path: str, body: dict | None = None) -> object:
        status, answer = http(method, f"{self.base_url}{path}", body)
        assert 200 <= status < 300, f"{method} {path}: {status} {answer}"
        return answer

    def timeline_info(self, timeline: str) -> dict:
        info = self.api("GET", f"/v1/tenant/{self.tenant}/timeline/{timeline}")
        assert isinstance(info, dict)
        return info

    def assert_no_problems(self) -> None:
        assert not self.problems, "\n".join(self.problems)

    def timeline_dir(self, timeline: str) -> Path:
        return self.ps_dir / "tenants" / self.tenant / "timelines" / timeline

    def pageserver_pid(self) -> int:
        return int((self.ps_dir / "pageserver.pid").read_text().strip())

    def fullbackup(
        self, timeline: str, lsn: int, out: Path, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`fullbackup <tenant> <timeline> <lsn>` over the page service, into tar file `out`
        (psql writes the CopyOut data to its -o file; psql runs as the PostgreSQL user,
        who owns the test dir)."""
        return self.psql_bin.run(
            [
                "psql",
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg_port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-o",
                out,
                "-c",
                f"fullbackup {self.tenant} {timeline} {format_lsn(lsn)}",
            ],
            name=f"fullbackup-{out.stem}",
            check=check,
        )

    def import_timeline(self, timeline: str, branch: str, export: SourceExport) -> None:
        self.cli(
            f"import-{branch}",
            "timeline",
            "import",
            "--tenant-id",
            self.tenant,
            "--timeline-id",
            timeline,
            "--branch-name",
            branch,
            "--base-tarfile",
            str(export.base_tar),
            "--base-lsn",
            format_lsn(export.base_lsn),
            "--wal-tarfile",
            str(export.wal_tar),
            "--end-lsn",
            format_lsn(export.end_lsn),
        )


def start_neon_env(
    process_registry: ProcessRegistry,
    repo_root: Path,
    neon_binpath: Path,
    out_dir: Path,
    port_distributor,
    stock_pg_bin: PgBin,
) -> NeonEnv:
    """`init`, `start` and `tenant create` in a fresh repository under the test dir; the
    pageserver's log is checked for errors at teardown and it is stopped whatever happens."""
    for binary in ("pageserver", "neon_local"):
        if not (neon_binpath / binary).exists():
            pytest.fail(f"{neon_binpath / binary} is not built (cargo build)")
    env = NeonEnv(
        repo_root=repo_root,
        repo=out_dir / "repo",
        registry=process_registry,
        psql_bin=stock_pg_bin,
        out_dir=out_dir,
        pg_port=port_distributor.get(),
        http_port=port_distributor.get(),
    )
    env.cli(
        "init",
        "init",
        f"--pageserver-pg-port={env.pg_port}",
        f"--pageserver-http-port={env.http_port}",
    )
    process_registry.register_daemon_log(env.ps_dir / "pageserver.log")
    process_registry.add_cleanup(lambda: neon_local_stop_quietly(repo_root, env.repo))
    env.cli("start", "start")
    created = env.cli("tenant-create", "tenant", "create", "--set-default").stdout
    m = re.search(rf"tenant ({HEX32}) successfully created", created)
    assert m, created
    env.tenant = m.group(1)
    return env


def neon_local_stop_quietly(repo_root: Path, repo: Path) -> None:
    subprocess.run(
        ["cargo", "neon", "stop", "--mode", "immediate"],
        cwd=repo_root,
        env=dict(os.environ, NEON_REPO_DIR=str(repo)),
        capture_output=True,
        timeout=600,
    )


def new_timeline_id() -> str:
    return os.urandom(16).hex()


# ---------------------------------------------------------------------------------------------
# The source: base backup, WAL, end LSN


@dataclass
class SourceExport:
    """What the import takes: the base backup tar and its start LSN, a tar of the WAL
    segments from there, and the end LSN (a record boundary) up to which to ingest."""

    base_tar: Path
    base_lsn: int
    wal_tar: Path
    end_lsn: int
    # Where the last record (the shutdown checkpoint) starts: the prev LSN at end_lsn.
    last_record_lsn: int


def start_source(vanilla_pg: VanillaPostgres, extra: dict | None = None) -> VanillaPostgres:
    vanilla_pg.configure({**SOURCE_SETTINGS, **(extra or {})})
    vanilla_pg.start()
    # amcheck in every database before the backup: databases created later inherit it from
    # template1, and the restored copies can be checked as they are.
    install_amcheck(vanilla_pg)
    return vanilla_pg


def take_base_backup(src: VanillaPostgres, out_dir: Path) -> tuple[Path, int]:
    """`pg_basebackup -Ft -X none`: returns base.tar and the backup's start LSN (the redo
    point of its checkpoint, from backup_manifest's WAL-Ranges)."""
    target = out_dir / "basebackup"
    src.pg_bin.run(
        [
            "pg_basebackup",
            "-D",
            target,
            "-Ft",
            "-X",
            "none",
            "-c",
            "fast",
            "-h",
            "127.0.0.1",
            "-p",
            str(src.port),
            "-U",
            src.user,
        ],
        name="pg_basebackup",
    )
    manifest = json.loads((target / "backup_manifest").read_text())
    (wal_range,) = manifest["WAL-Ranges"]
    base_lsn = parse_lsn(wal_range["Start-LSN"])
    with tarfile.open(target / "base.tar") as tar:
        label = tar.extractfile("backup_label")
        assert label is not None
        text = label.read().decode()
    m = re.search(r"START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)", text)
    assert m and parse_lsn(m.group(1)) == base_lsn, (text, wal_range)
    return target / "base.tar", base_lsn


def controldata(pg_bin: PgBin, datadir: Path) -> dict[str, str]:
    out = pg_bin.run_capture(["pg_controldata", "-D", datadir], name="pg_controldata")
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def stop_and_find_end_lsn(src: VanillaPostgres) -> tuple[int, int]:
    """Stops the source cleanly and returns the start and the end of its shutdown checkpoint
    record, the last record of its WAL (see the module doc)."""
    src.stop("fast")
    fields = controldata(src.pg_bin, src.datadir)
    assert fields["Database cluster state"] == "shut down", fields
    ckpt = parse_lsn(fields["Latest checkpoint location"])
    out = src.pg_bin.run_capture(
        ["pg_waldump", "-p", src.datadir / "pg_wal", "-s", format_lsn(ckpt), "-n", "1"],
        name="pg_waldump-checkpoint",
    )
    (rec,) = parse_pg_waldump(out)
    assert rec.lsn == ckpt and "CHECKPOINT_SHUTDOWN" in rec.desc, rec
    # Nothing follows it.
    after = src.pg_bin.run(
        ["pg_waldump", "-p", src.datadir / "pg_wal", "-s", format_lsn(ckpt)],
        name="pg_waldump-tail",
        check=False,
    )
    assert len(parse_pg_waldump(after.stdout)) == 1, after.stdout[-2000:]
    return ckpt, record_end(rec)


def tar_wal(src: VanillaPostgres, base_lsn: int, end_lsn: int, out: Path) -> Path:
    """The segments holding [base_lsn, end_lsn), flat in a tar (as pg_basebackup's pg_wal.tar).
    Segments named after the end are recycled files with old contents: left out."""
    first = base_lsn - base_lsn % WAL_SEGMENT_BYTES
    last = (end_lsn - 1) - (end_lsn - 1) % WAL_SEGMENT_BYTES
    segments = [
        s for s in wal_segments(src.datadir / "pg_wal") if first <= segment_start_lsn(s) <= last
    ]
    expected = (last - first) // WAL_SEGMENT_BYTES + 1
    assert len(segments) == expected, (
        f"pg_wal lacks segments between {format_lsn(base_lsn)} and {format_lsn(end_lsn)}: "
        f"{[s.name for s in segments]}"
    )
    with tarfile.open(out, "w") as tar:
        for s in segments:
            tar.add(s, arcname=s.name)
    log.info("WAL tar %s: %d segments", out, len(segments))
    return out


def export_source(
    src: VanillaPostgres, base_tar: Path, base_lsn: int, out_dir: Path
) -> SourceExport:
    """Stops the source, tars its WAL since the base backup; returns what the import needs
    and starts the source again (for the comparisons; it writes no WAL that matters)."""
    last_record_lsn, end_lsn = stop_and_find_end_lsn(src)
    wal_tar = tar_wal(src, base_lsn, end_lsn, out_dir / "pg_wal.tar")
    src.start()
    log.info("export: base LSN %s, end LSN %s", format_lsn(base_lsn), format_lsn(end_lsn))
    return SourceExport(base_tar, base_lsn, wal_tar, end_lsn, last_record_lsn)


# ---------------------------------------------------------------------------------------------
# Restoring a fullbackup


def restore_fullbackup(
    env: NeonEnv,
    timeline: str,
    lsn: int,
    pg_bin: PgBin,
    factory,
    name: str,
    expect_prev: str,
) -> VanillaPostgres:
    """A fullbackup of `timeline` at `lsn` extracted into a new server `name` of our
    PostgreSQL, started. The tar carries pg_control with no checkpoint record to start from
    and neon.signal naming the record before `lsn`: our PostgreSQL (patch 0010) starts from
    exactly that point, so neon.signal stays (it must say `PREV LSN: <expect_prev>`). The tar
    has no postgresql.conf: we write one."""
    pg: VanillaPostgres = factory(name, pg_bin=pg_bin)
    tar_path = env.out_dir / f"{name}.tar"
    env.fullbackup(timeline, lsn, tar_path)
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
    assert "global/pg_control" in names and "neon.signal" in names, sorted(names)[:50]
    make_pg_user_dir(pg.datadir, mode=0o700)
    pg_bin.run(["/bin/tar", "-xf", tar_path, "-C", pg.datadir], name=f"{name}-untar")
    signal_text = (pg.datadir / "neon.signal").read_text().strip()
    assert signal_text == f"PREV LSN: {expect_prev}", signal_text
    missing = reset_unlogged_main_forks(pg_bin, pg.datadir, name)
    if missing:
        env.problems.append(
            f"fullbackup {name} lacks the main fork of {len(missing)} unlogged relations "
            f"(only <rel>_init is in the tar; PostgreSQL does not recreate it on a start "
            f"from a shut-down pg_control): {missing[:10]}"
        )
    pg.configure(
        {
            "port": pg.port,
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(pg.socket_dir),
            "fsync": "off",
            "log_line_prefix": "%m [%p] %q%a ",
            **RESTORED_SETTINGS,
        }
    )
    return pg.start()


def reset_unlogged_main_forks(pg_bin: PgBin, datadir: Path, name: str) -> list[str]:
    """The relation files `<rel>_init` whose main fork `<rel>` is missing. Those get the main
    fork PostgreSQL would make at the end of crash recovery (a copy of the init fork), so that
    the rest of the test still checks everything else; the caller reports them."""
    missing = []
    for init in sorted(datadir.glob("base/*/*_init")):
        main = init.with_name(init.name.removesuffix("_init"))
        if not main.exists():
            missing.append(str(main.relative_to(datadir)))
            pg_bin.run(["/bin/cp", init, main], name=f"{name}-reset-unlogged")
    return missing


@contextlib.contextmanager
def timed(timings: dict[str, float], what: str) -> Iterator[None]:
    """Records in `timings` how long the block took (seconds)."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        timings[what] = round(time.monotonic() - t0, 1)


def report_timings(
    report_summary: list[str], test: str, timings: dict[str, float], extra: str = ""
) -> None:
    parts = ", ".join(f"{k} {v}s" for k, v in timings.items())
    report_summary.append(f"{test}: {parts}{extra}")


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.fixture
def neon_env(
    process_registry, repo_root, neon_binpath, test_output_dir, port_distributor, stock_pg_bin
) -> Iterator[NeonEnv]:
    env = start_neon_env(
        process_registry, repo_root, neon_binpath, test_output_dir, port_distributor, stock_pg_bin
    )
    yield env
    # Before the registry's teardown, so that it finds no orphaned pageserver to kill.
    neon_local_stop_quietly(repo_root, env.repo)


def check_imported_lsns(info: dict, export: SourceExport) -> None:
    """The timeline ends where the source's WAL does, after the source's last record."""
    assert parse_lsn(info["last_record_lsn"]) == export.end_lsn, info
    assert info["prev_record_lsn"] is not None, info
    assert parse_lsn(info["prev_record_lsn"]) == export.last_record_lsn, info


def import_workload_source(
    vanilla_pg: VanillaPostgres,
    env: NeonEnv,
    timings: dict[str, float],
    mid_step: str | None = None,
) -> tuple[VanillaPostgres, SourceExport, str, tuple[int, dict] | None]:
    """The common part: source, base backup, MixedWorkload (with a fingerprint and the insert
    LSN after `mid_step`), export, import into a new timeline. Returns the running source,
    the export, the timeline id and (mid LSN, mid fingerprint) if asked."""
    with timed(timings, "source+basebackup"):
        src = start_source(vanilla_pg)
        base_tar, base_lsn = take_base_backup(src, env.out_dir)
    mid = None
    with timed(timings, "workload"):
        wl = MixedWorkload(src.connect, scale=SCALE, seed=11)
        try:
            if mid_step is not None:
                wl.run(upto=mid_step)
                mid_lsn = parse_lsn(src.safe_psql("select pg_current_wal_insert_lsn()::text")[0][0])
                mid = (mid_lsn, cluster_fingerprint(src))
            wl.run()
            assert not wl.remaining()
        finally:
            wl.close()
    with timed(timings, "export"):
        export = export_source(src, base_tar, base_lsn, env.out_dir)
    timeline = new_timeline_id()
    with timed(timings, "import"):
        env.import_timeline(timeline, "imported", export)
    check_imported_lsns(env.timeline_info(timeline), export)
    return src, export, timeline, mid


def test_import_and_fullbackup_matches_source(
    vanilla_pg, vanilla_pg_factory, neon_env, pg_bin, report_summary
):
    timings: dict[str, float] = {}
    src, export, timeline, _ = import_workload_source(vanilla_pg, neon_env, timings)
    with timed(timings, "fullbackup+start"):
        restored = restore_fullbackup(
            neon_env,
            timeline,
            export.end_lsn,
            pg_bin,
            vanilla_pg_factory,
            "restored",
            expect_prev=format_lsn(export.last_record_lsn),
        )
    with timed(timings, "compare"):
        assert_same_state(src, restored)
    with timed(timings, "amcheck"):
        checked = assert_amcheck_clean(restored, create_extension=False)
    assert checked["indexes"] > 100 and checked["tables"] > 50, checked
    report_timings(report_summary, "test_import_and_fullbackup_matches_source", timings)
    neon_env.assert_no_problems()


def test_branch_at_middle_lsn(vanilla_pg, vanilla_pg_factory, neon_env, pg_bin, report_summary):
    timings: dict[str, float] = {}
    src, export, timeline, mid = import_workload_source(
        vanilla_pg, neon_env, timings, mid_step=MID_STEP
    )
    assert mid is not None
    mid_lsn, fp_mid = mid
    assert export.base_lsn < mid_lsn < export.end_lsn
    neon_env.cli(
        "branch-mid",
        "timeline",
        "branch",
        "--branch-name",
        "mid",
        "--ancestor-branch-name",
        "imported",
        "--ancestor-start-lsn",
        format_lsn(mid_lsn),
    )
    timelines = neon_env.api("GET", f"/v1/tenant/{neon_env.tenant}/timeline")
    assert isinstance(timelines, list)
    (branch,) = [t for t in timelines if t.get("ancestor_timeline_id") == timeline]
    assert parse_lsn(branch["ancestor_lsn"]) == mid_lsn, branch
    with timed(timings, "fullbackup+start"):
        at_mid = restore_fullbackup(
            neon_env,
            branch["timeline_id"],
            mid_lsn,
            pg_bin,
            vanilla_pg_factory,
            "at_mid",
            expect_prev="none",  # a branch point: the compute starts writing with no xl_prev
        )
    with timed(timings, "compare"):
        assert_same_fingerprint(fp_mid, cluster_fingerprint(at_mid), ("source at mid", "branch"))
        # The end state is different (the second half of the workload is not there).
        with pytest.raises(AssertionError, match=r"database db_wal_log is only in source"):
            assert_same_fingerprint(
                cluster_fingerprint(src), cluster_fingerprint(at_mid), ("source", "branch")
            )
    with timed(timings, "amcheck"):
        assert_amcheck_clean(at_mid, create_extension=False)
    report_timings(report_summary, "test_branch_at_middle_lsn", timings)
    neon_env.assert_no_problems()


def test_pageserver_kill9_after_import(
    vanilla_pg, vanilla_pg_factory, neon_env, pg_bin, report_summary
):
    timings: dict[str, float] = {}
    src, export, timeline, _ = import_workload_source(vanilla_pg, neon_env, timings)
    pid = neon_env.pageserver_pid()
    assert pid_alive(pid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 30, f"pageserver pid {pid} to die of SIGKILL")
    with timed(timings, "restart"):
        neon_env.cli("ps-start", "pageserver", "start")
    assert neon_env.pageserver_pid() != pid
    # The import returned: all of it is durable.
    info = neon_env.timeline_info(timeline)
    check_imported_lsns(info, export)
    assert parse_lsn(info["disk_consistent_lsn"]) == export.end_lsn, info
    with timed(timings, "fullbackup+start"):
        restored = restore_fullbackup(
            neon_env,
            timeline,
            export.end_lsn,
            pg_bin,
            vanilla_pg_factory,
            "after_kill",
            expect_prev=format_lsn(export.last_record_lsn),
        )
    with timed(timings, "compare"):
        assert_same_state(src, restored)
    assert_amcheck_clean(restored, create_extension=False)
    report_timings(report_summary, "test_pageserver_kill9_after_import", timings)
    neon_env.assert_no_problems()


# -- layers and checksums -----------------------------------------------------------------------

PGBENCH_SCALE = 20
# Small layers: many L0s from a ~400 MB import, compacted into L1s and images.
SMALL_LAYERS_CONFIG = {
    "checkpoint_distance": 16 * 1024 * 1024,
    "compaction_threshold": 3,
    "compaction_upper_limit": 40,
    "compaction_target_size": 16 * 1024 * 1024,
    "image_creation_threshold": 1,
    "compaction_period": "0s",  # only the compactions this test asks for
    "gc_period": "0s",
}


@dataclass(frozen=True)
class LayerFile:
    path: Path
    kind: str  # "delta" or "image"
    key_start: str
    key_end: str
    lsn_start: int
    lsn_end: int  # exclusive; image: lsn + 1

    @property
    def is_l0(self) -> bool:
        return (
            self.kind == "delta" and self.key_start == KEY_MIN_HEX and self.key_end == KEY_MAX_HEX
        )


def list_layers(timeline_dir: Path) -> list[LayerFile]:
    layers = []
    for p in sorted(timeline_dir.iterdir()):
        if m := DELTA_NAME_RE.match(p.name):
            layers.append(LayerFile(p, "delta", m[1], m[2], int(m[3], 16), int(m[4], 16)))
        elif m := IMAGE_NAME_RE.match(p.name):
            lsn = int(m[3], 16)
            layers.append(LayerFile(p, "image", m[1], m[2], lsn, lsn + 1))
    return layers


def classify_layers(layers: list[LayerFile]) -> dict[str, list[LayerFile]]:
    """L0 deltas (whole key space), L1 deltas (the other deltas) and image layers."""
    return {
        "L0": [x for x in layers if x.is_l0],
        "L1": [x for x in layers if x.kind == "delta" and not x.is_l0],
        "image": [x for x in layers if x.kind == "image"],
    }


def layer_counts(kinds: dict[str, list[LayerFile]]) -> dict[str, int]:
    return {k: len(v) for k, v in kinds.items()}


def value_blobs(path: Path) -> list[tuple[int, int]]:
    """(offset, payload length) of each blob in a layer file's value area (FORMAT.md: blobs
    back to back from block 1 up to index_start_blk, zero padding after the last one)."""
    data = path.read_bytes()
    index_start = int.from_bytes(data[SUMMARY_INDEX_START_OFFSET : SUMMARY_INDEX_START_OFFSET + 4])
    end = index_start * LAYER_BLOCK_BYTES
    assert LAYER_BLOCK_BYTES <= end <= len(data), (path, index_start, len(data))
    blobs, pos = [], LAYER_BLOCK_BYTES
    while pos + BLOB_HEADER_BYTES <= end:
        length = int.from_bytes(data[pos : pos + 4])
        crc = int.from_bytes(data[pos + 4 : pos + 8])
        if length == 0 and crc == 0:
            break  # padding (an empty blob's CRC is not 0)
        assert pos + BLOB_HEADER_BYTES + length <= end, (path, pos, length)
        blobs.append((pos, length))
        pos += BLOB_HEADER_BYTES + length
    return blobs


def test_layers_and_checksum(vanilla_pg, neon_env, stock_pg_bin, allowed_errors, report_summary):
    timings: dict[str, float] = {}
    env = neon_env
    status, answer = http(
        "PUT",
        f"{env.base_url}/v1/tenant/config",
        {"tenant_id": env.tenant, "config": SMALL_LAYERS_CONFIG},
    )
    assert status == 200, answer

    src = start_source(vanilla_pg)
    base_tar, base_lsn = take_base_backup(src, env.out_dir)
    pgbench = ["pgbench", "-h", "127.0.0.1", "-p", str(src.port), "-U", src.user]
    with timed(timings, "pgbench"):
        stock_pg_bin.run(
            [*pgbench, "-i", "-s", str(PGBENCH_SCALE), "postgres"], name="pgbench-init"
        )
        src.safe_psql("update pgbench_accounts set abalance = abalance + 1 where aid % 7 = 0")
        src.safe_psql("update pgbench_branches set bbalance = bbalance + 1")
    export = export_source(src, base_tar, base_lsn, env.out_dir)
    wal_mb = (export.end_lsn - export.base_lsn) / 1024 / 1024
    timeline = new_timeline_id()
    with timed(timings, f"import {wal_mb:.0f}MB WAL"):
        env.import_timeline(timeline, "imported", export)
    check_imported_lsns(env.timeline_info(timeline), export)

    tl_api = f"/v1/tenant/{env.tenant}/timeline/{timeline}"
    with timed(timings, "checkpoint"):
        env.api("PUT", f"{tl_api}/checkpoint")
    before = classify_layers(list_layers(env.timeline_dir(timeline)))
    # The import rolled a layer every checkpoint_distance bytes of WAL: L0 deltas.
    min_l0 = int(wal_mb * 1024 * 1024 // SMALL_LAYERS_CONFIG["checkpoint_distance"]) // 2
    assert len(before["L0"]) >= max(min_l0, 2), layer_counts(before)
    with timed(timings, "compact"):
        outcomes = [env.api("PUT", f"{tl_api}/compact") for _ in range(3)]
    log.info("compaction outcomes: %s", outcomes)
    layers = list_layers(env.timeline_dir(timeline))
    kinds = classify_layers(layers)
    counts = {"before compaction": layer_counts(before), "after": layer_counts(kinds)}
    log.info("layers: %s", counts)
    assert kinds["L1"] and kinds["image"], (counts, outcomes, [x.path.name for x in layers])
    # Compaction merged the L0s it took into L1s: fewer L0s than before.
    assert len(kinds["L0"]) < len(before["L0"]), counts

    # A reference backup before any damage.
    good = env.out_dir / "good.tar"
    env.fullbackup(timeline, export.end_lsn, good)
    good_sha = hashlib.sha256(good.read_bytes()).hexdigest()

    # Flip one byte inside a page image of the newest image layer: a fullbackup at its LSN
    # reads every page from the newest image (no deltas above it after the last compaction).
    newest = max(kinds["image"], key=lambda x: x.lsn_start)
    newer_deltas = [x for x in layers if x.kind == "delta" and x.lsn_end - 1 > newest.lsn_start]
    log.info("newest image %s; deltas above it: %s", newest.path.name, newer_deltas)
    pages = [(off, n) for off, n in value_blobs(newest.path) if n >= LAYER_BLOCK_BYTES]
    assert pages, f"no page-sized value in {newest.path}"
    off, n = pages[len(pages) // 2]
    victim = off + BLOB_HEADER_BYTES + n // 2
    env.cli("ps-stop", "pageserver", "stop")
    with open(newest.path, "r+b") as f:
        f.seek(victim)
        byte = f.read(1)
        f.seek(victim)
        f.write(bytes([byte[0] ^ 0x5A]))
    log.info("flipped byte %d of %s", victim, newest.path)
    env.cli("ps-start", "pageserver", "start")

    allowed_errors.append(CHECKSUM_ERROR_RE)
    bad = env.out_dir / "bad.tar"
    res = env.fullbackup(timeline, export.end_lsn, bad, check=False)
    if res.returncode == 0:
        same = hashlib.sha256(bad.read_bytes()).hexdigest() == good_sha
        raise AssertionError(
            "fullbackup of a damaged layer succeeded: "
            + (
                "with the same content (the damaged value was not read: test setup problem)"
                if same
                else "WITH DIFFERENT CONTENT (a corrupt page was returned silently)"
            )
        )
    assert re.search(CHECKSUM_ERROR_RE, res.stderr), res.stderr
    # The daemon is still up and answers.
    assert http("GET", f"{env.base_url}/v1/status")[0] == 200
    report_timings(report_summary, "test_layers_and_checksum", timings, f"; layers {counts}")
