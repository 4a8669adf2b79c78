"""neon_local drives the pageserver: init, start, tenant create, timeline create/branch/list,
restart keeps everything, stop leaves no process; the HTTP API answers errors as JSON."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fixtures.procs import pid_alive

HEX32 = r"[0-9a-f]{32}"
LSN = r"[0-9A-F]+/[0-9A-F]+"


def neon_local(process_registry, repo_root: Path, repo_dir: Path, name: str, *args: str):
    return process_registry.run(
        name,
        ["cargo", "neon", *args],
        cwd=repo_root,
        env={"NEON_REPO_DIR": str(repo_dir)},
        timeout_s=600,
    )


def http(method: str, url: str, body: dict | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_pageserver_via_neon_local(
    process_registry, repo_root: Path, neon_binpath: Path, test_output_dir: Path, port_distributor
):
    if not (neon_binpath / "pageserver").exists():
        pytest.fail(f"{neon_binpath / 'pageserver'} is not built (cargo build -p pageserver)")
    repo = test_output_dir / "repo"
    http_port, pg_port = port_distributor.get(), port_distributor.get()

    def run(name: str, *args: str):
        return neon_local(process_registry, repo_root, repo, name, *args)

    run(
        "init",
        "init",
        f"--pageserver-pg-port={pg_port}",
        f"--pageserver-http-port={http_port}",
    )
    ps_dir = repo / "pageserver_1"
    process_registry.register_daemon_log(ps_dir / "pageserver.log")
    # Whatever happens, do not leave the daemon behind.
    process_registry.add_cleanup(lambda: neon_local_stop_quietly(repo_root, repo))

    start = run("start", "start")
    assert "pageserver started" in start.stdout
    assert "is running" in run("ps-status", "pageserver", "status").stdout

    created = run("tenant-create", "tenant", "create", "--set-default").stdout
    m = re.search(rf"tenant ({HEX32}) successfully created", created)
    assert m, created
    tenant = m.group(1)
    assert tenant in run("tenant-list", "tenant", "list").stdout

    run("branch", "timeline", "branch", "--branch-name", "b1")
    run("create", "timeline", "create", "--branch-name", "other")
    failed = process_registry.run(
        "branch-dup",
        ["cargo", "neon", "timeline", "branch", "--branch-name", "b1"],
        cwd=repo_root,
        env={"NEON_REPO_DIR": str(repo)},
        check=False,
    )
    assert failed.returncode != 0 and "already exists" in failed.stderr

    tree = run("list", "timeline", "list").stdout
    lines = tree.splitlines()
    assert len(lines) == 3, tree
    assert re.fullmatch(rf"\(L\) main \[{HEX32}\]", lines[0]), tree
    assert re.fullmatch(rf"┗━ @{LSN}: b1 \[{HEX32}\]", lines[1]), tree
    assert re.fullmatch(rf"\(L\) other \[{HEX32}\]", lines[2]), tree

    # The API itself: JSON errors, timeline details.
    base = f"http://127.0.0.1:{http_port}"
    assert http("GET", f"{base}/v1/status") == (200, {"id": 1})
    status, body = http("GET", f"{base}/v1/tenant/nothex")
    assert status == 400 and "msg" in body
    status, body = http("GET", f"{base}/v1/tenant/{'0' * 32}")
    assert status == 404 and "msg" in body
    status, timelines = http("GET", f"{base}/v1/tenant/{tenant}/timeline")
    assert status == 200 and len(timelines) == 3
    root = next(t for t in timelines if t["timeline_id"] in lines[0])
    assert root["current_logical_size"] > 0
    assert root["disk_consistent_lsn"] == root["last_record_lsn"]

    # Restart: everything is still there.
    run("ps-stop", "pageserver", "stop")
    pid_file = ps_dir / "pageserver.pid"
    old_pid = int(pid_file.read_text().strip())
    assert not pid_alive(old_pid)
    run("ps-start", "pageserver", "start")
    assert run("list-again", "timeline", "list").stdout == tree
    assert "restarted" in run("ps-restart", "pageserver", "restart").stdout
    assert run("list-restarted", "timeline", "list").stdout == tree

    new_pid = int(pid_file.read_text().strip())
    run("stop", "stop")
    assert not pid_alive(new_pid)


def neon_local_stop_quietly(repo_root: Path, repo: Path) -> None:
    import subprocess

    subprocess.run(
        ["cargo", "neon", "stop", "--mode", "immediate"],
        cwd=repo_root,
        env=dict(os.environ, NEON_REPO_DIR=str(repo)),
        capture_output=True,
        timeout=600,
    )
