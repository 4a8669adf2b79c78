"""Tests of the harness itself: polling, ports, the process registry, the daemon-log check,
the PostgreSQL fixtures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fixtures.paths import PG_OS_USER, pg_user_can_write
from fixtures.pg import VanillaPostgres
from fixtures.ports import PortAllocator, port_is_free
from fixtures.procs import (
    DaemonLogErrors,
    ProcessRegistry,
    _our_children,
    pid_alive,
    scan_log_for_errors,
)
from fixtures.utils import AbortWait, WaitTimeout, format_lsn, parse_lsn, wait_until


def test_wait_until_returns_the_value():
    calls = []

    def pred():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return "ready"

    assert wait_until(pred, 5, "three calls") == "ready"
    assert len(calls) == 3


def test_wait_until_times_out_with_a_clear_message():
    def pred():
        raise ConnectionError("connection refused")

    with pytest.raises(WaitTimeout) as e:
        wait_until(pred, 0.2, "the moon to rise")
    msg = str(e.value)
    assert "timed out after 0.2s" in msg
    assert "the moon to rise" in msg
    assert "ConnectionError: connection refused" in msg


def test_wait_until_abort():
    def pred():
        raise AbortWait("process died")

    started = time.monotonic()
    with pytest.raises(AbortWait):
        wait_until(pred, 30, "never")
    assert time.monotonic() - started < 5


def test_lsn_helpers():
    assert parse_lsn("0/16B5A50") == 0x16B5A50
    assert parse_lsn("0/016B5A50") == 0x16B5A50
    assert parse_lsn("1/0") == 1 << 32
    assert format_lsn(0x1_016B5A50) == "1/16B5A50"


def test_port_allocator_skips_busy_ports():
    busy_port = PortAllocator().get()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", busy_port))
        busy.listen()
        alloc = PortAllocator(start=busy_port)
        got = alloc.get()
        assert got != busy_port
        assert port_is_free(got)
        assert alloc.get() != got


def test_output_dir_is_fresh_and_writable_by_postgres(test_output_dir: Path, request):
    assert test_output_dir.name == request.node.name
    assert list(test_output_dir.iterdir()) == []
    assert pg_user_can_write(test_output_dir)


def _wait_for_pid_in(path: Path, what: str) -> int:
    def read():
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines():
            if line.startswith("PID "):
                return int(line.split()[1])
        return None

    return wait_until(read, 10, what)


def test_registry_stops_and_kills_everything(test_output_dir: Path):
    registry = ProcessRegistry(test_output_dir)
    polite = registry.start("polite", ["sleep", "600"])
    # A shell that ignores SIGTERM, with a child that ignores it too.
    stubborn = registry.start(
        "stubborn",
        ["bash", "-c", 'trap "" TERM; sleep 600 & echo "PID $!"; wait'],
    )
    child = _wait_for_pid_in(stubborn.log_path, "the stubborn child to start")
    # A daemon that detaches from its parent (new session, parent exits): an orphan.
    registry.start(
        "detacher",
        ["bash", "-c", 'setsid bash -c \'trap "" TERM; exec sleep 600\' & echo "PID $!"'],
    )
    orphan = _wait_for_pid_in(test_output_dir / "detacher.log", "the detached daemon to start")
    assert all(pid_alive(p) for p in (polite.pid, stubborn.pid, child, orphan))

    started = time.monotonic()
    problems = registry.stop_all(timeout_s=1)
    assert time.monotonic() - started < 15
    for pid in (polite.pid, stubborn.pid, child, orphan):
        assert not pid_alive(pid), f"pid {pid} survived the teardown"
    # ... and reaped: no zombie children left either.
    assert not {child, orphan} & _our_children()
    assert polite.returncode == -signal.SIGTERM
    assert any("stubborn" in p for p in problems), problems
    assert any(str(orphan) in p for p in problems), problems


def test_registry_run_captures_output(test_output_dir: Path):
    registry = ProcessRegistry(test_output_dir)
    res = registry.run("echo", ["bash", "-c", "echo out; echo err >&2"])
    assert res.stdout == "out\n" and res.stderr == "err\n"
    assert (test_output_dir / "echo.stdout").read_text() == "out\n"
    with pytest.raises(AssertionError, match="exited with 3"):
        registry.run("fail", ["bash", "-c", "echo boom >&2; exit 3"])
    with pytest.raises(AssertionError, match="did not finish"):
        registry.run("slow", ["sleep", "60"], timeout_s=0.3)
    assert registry.run("nocheck", ["false"], check=False).returncode == 1


def test_runs_as_postgres_user(test_output_dir: Path):
    registry = ProcessRegistry(test_output_dir)
    res = registry.run("id", ["id", "-un"], as_pg_user=True)
    assert res.stdout.strip() == (PG_OS_USER or subprocess.getoutput("id -un"))


FAKE_DAEMON_LOG = """\
2026-01-01T00:00:00.000001Z  INFO pageserver: starting
2026-01-01T00:00:00.000002Z  WARN pageserver: slow disk
2026-01-01T00:00:00.000003Z ERROR page_service: could not connect to safekeeper 127.0.0.1:5454
2026-01-01T00:00:00.000004Z  INFO pageserver: errors: 0, ERRORS: 0
2026-01-01T00:00:00.000005Z ERROR walreceiver: timeline 1234 not found
thread 'main' panicked at pageserver/src/lib.rs:10:5:
2026-01-01T00:00:00.000006Z  INFO pageserver: PANIC: oh no
"""


def test_daemon_log_scan(test_output_dir: Path):
    log = test_output_dir / "pageserver.log"
    log.write_text(FAKE_DAEMON_LOG)
    found = scan_log_for_errors(log, [])
    assert [n for n, _ in found] == [3, 5, 6, 7]
    found = scan_log_for_errors(log, [r"could not connect to safekeeper", r"PANIC: oh no"])
    assert [n for n, _ in found] == [5, 6]
    assert scan_log_for_errors(test_output_dir / "missing.log", []) == []


def test_daemon_log_check_fails_unless_allowed(test_output_dir: Path):
    registry = ProcessRegistry(test_output_dir)
    # A "daemon" that logs an error and exits, and a log registered by path.
    proc = registry.start(
        "fake-daemon",
        ["bash", "-c", "echo '2026-01-01T00:00:00Z ERROR fake: disk on fire'"],
        daemon_log=True,
    )
    proc.wait(10)
    other = test_output_dir / "other-daemon.log"
    other.write_text("thread 'x' panicked at src/main.rs:1:1:\nboom\n")
    registry.register_daemon_log(other)
    # Not a daemon of ours: its errors are not checked.
    registry.start("postgres-like", ["bash", "-c", "echo '2026 ERROR:  relation missing'"]).wait(10)
    registry.stop_all()

    with pytest.raises(DaemonLogErrors) as e:
        registry.check_daemon_logs([])
    msg = str(e.value)
    assert "2 unexpected error line(s)" in msg
    assert "fake-daemon.log:2: 2026-01-01T00:00:00Z ERROR fake: disk on fire" in msg
    assert "other-daemon.log:1:" in msg
    assert "relation missing" not in msg

    registry.check_daemon_logs([r"disk on fire", r"panicked at src/main\.rs"])


def test_vanilla_pg(vanilla_pg: VanillaPostgres, test_output_dir: Path):
    vanilla_pg.configure({"shared_buffers": "16MB", "application_name": "it's quoted"})
    vanilla_pg.start()
    assert vanilla_pg.safe_psql("select 1") == [(1,)]
    assert vanilla_pg.safe_psql("show shared_buffers") == [("16MB",)]
    assert vanilla_pg.safe_psql("show application_name") == [("it's quoted",)]
    assert vanilla_pg.safe_psql("show listen_addresses") == [("127.0.0.1",)]
    vanilla_pg.safe_psql("create table t (x int); insert into t values (1), (2)")
    with vanilla_pg.connect() as conn:
        assert conn.execute("select sum(x) from t").fetchone() == (3,)

    # The postmaster runs as the PostgreSQL OS user, with its data and socket in the test dir.
    assert vanilla_pg.proc is not None
    status = Path(f"/proc/{vanilla_pg.proc.pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert uid == (os.stat(vanilla_pg.datadir).st_uid)
    assert vanilla_pg.datadir.is_relative_to(test_output_dir)
    assert (vanilla_pg.socket_dir / f".s.PGSQL.{vanilla_pg.port}").exists()

    vanilla_pg.restart()
    assert vanilla_pg.safe_psql("select count(*) from t") == [(2,)]
    pid = vanilla_pg.proc.pid
    vanilla_pg.stop()
    assert not pid_alive(pid)
    assert "database system is shut down" in vanilla_pg.log_path.read_text()


def test_vanilla_pg_bad_config_fails_fast(vanilla_pg: VanillaPostgres):
    vanilla_pg.configure({"shared_buffers": "not-a-size"})
    started = time.monotonic()
    with pytest.raises(AbortWait, match="exited with"):
        vanilla_pg.start()
    assert time.monotonic() - started < 30


def test_vanilla_pg_with_a_long_path(vanilla_pg_factory):
    """A data directory deep enough that its socket path would not fit in sun_path."""
    pg = vanilla_pg_factory("p" * 100).init()
    assert not pg.socket_dir.is_relative_to(pg.base_dir)
    pg.start()
    assert pg.safe_psql("select 2") == [(2,)]
    assert (pg.base_dir / "sock").resolve() == pg.socket_dir.resolve()


@pytest.mark.skipif(PG_OS_USER is None, reason="only root hands directories to another user")
def test_output_root_falls_back_when_repo_is_private(tmp_path: Path, monkeypatch):
    """A clone the PostgreSQL user cannot enter still gets usable per-test directories."""
    import fixtures.paths as paths

    private = tmp_path / "private"
    fake_repo = private / "repo"
    fake_repo.mkdir(parents=True)
    private.chmod(0o700)
    monkeypatch.setattr(paths, "REPO_ROOT", fake_repo)
    monkeypatch.delenv("NEON_TEST_OUTPUT", raising=False)
    root = paths.output_root()
    try:
        assert pg_user_can_write(root)
        assert (fake_repo / "test_output").is_symlink()
        assert (fake_repo / "test_output").resolve() == root.resolve()
        assert paths.output_root() == root  # stable on a second call
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
