"""pgbench TPC-B on a compute: the balance invariant holds after the run, after restarting the
endpoint, and when the pageserver is killed -9 and restarted in the middle of the run (the
compute reconnects once it is back)."""

from __future__ import annotations

import logging
import re

from fixtures.neon import Endpoint, NeonEnv
from fixtures.pg import PgBin
from fixtures.utils import wait_until

log = logging.getLogger("test_pgbench")

SCALE = 10
CLIENTS = 4
DURATION_S = 60


def check_tpcb_invariant(ep: Endpoint) -> int:
    """Sum of account, teller and branch balances each equal the sum of history deltas;
    returns the number of history rows."""
    rows = ep.safe_psql(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts),"
        " (SELECT sum(tbalance) FROM pgbench_tellers),"
        " (SELECT sum(bbalance) FROM pgbench_branches),"
        " (SELECT coalesce(sum(delta), 0) FROM pgbench_history),"
        " (SELECT count(*) FROM pgbench_history)"
    )
    accounts, tellers, branches, history, n = rows[0]
    assert accounts == tellers == branches == history, rows
    return n


def test_pgbench_invariant_with_restarts(neon_env: NeonEnv, pg_bin: PgBin):
    env = neon_env
    ep = env.endpoints.create_start("main", settings={"shared_buffers": "16MB"})
    pg_bin.run(["pgbench", "-i", "-s", str(SCALE), "-q", ep.connstr()], name="pgbench-init")
    assert check_tpcb_invariant(ep) == 0

    bench = env.registry.start(
        "pgbench-run",
        [
            str(pg_bin.path("pgbench")),
            "-c",
            str(CLIENTS),
            "-T",
            str(DURATION_S),
            "-P",
            "5",
            "--no-vacuum",
            ep.connstr(),
        ],
    )

    # Once transactions flow, kill the pageserver and bring it back.
    wait_until(
        lambda: ep.safe_psql("SELECT count(*) FROM pgbench_history")[0][0] > 200,
        120,
        "pgbench to commit some transactions",
    )
    env.pageserver_restart(immediate=True)
    after_restart = ep.safe_psql("SELECT count(*) FROM pgbench_history")[0][0]
    wait_until(
        lambda: ep.safe_psql("SELECT count(*) FROM pgbench_history")[0][0] > after_restart + 200,
        120,
        "pgbench to go on after the pageserver restart",
    )
    rc = bench.wait(timeout_s=DURATION_S + 120)
    out = bench.log_text()
    assert rc == 0, out[-3000:]
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m, out[-3000:]
    processed = int(m.group(1))
    assert re.search(r"number of failed transactions: 0\b", out) or "failed" not in out, out[-2000:]

    n = check_tpcb_invariant(ep)
    assert n == processed, (n, processed)
    ep.stop()
    ep.start()
    assert check_tpcb_invariant(ep) == n
