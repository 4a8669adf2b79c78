"""PostgreSQL's own regression suite (parallel_schedule of 15.x) against a running endpoint.

The suite comes from our install (share/postgresql/regress, copied by build-postgres.sh). Files
in test_runner/pg_regress/expected/ are our committed alternative expected outputs
(`<test>_N.out`, which pg_regress accepts besides `<test>.out`); test_runner/pg_regress/README.md
gives the reason for each in one line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fixtures.neon import NeonEnv
from fixtures.paths import chown_to_pg_user
from fixtures.pg import PgBin

OVERLAY = Path(__file__).resolve().parent.parent / "pg_regress" / "expected"


def prepare_inputdir(pg_distrib_dir: Path, workdir: Path) -> Path:
    """A copy of the suite (readable by the server: COPY reads data/ server-side), with our
    alternative expected files laid over it."""
    src = pg_distrib_dir / "v15" / "share" / "postgresql" / "regress"
    assert (src / "parallel_schedule").exists(), f"{src} is missing: rebuild with `make postgres`"
    inputdir = workdir / "suite"
    shutil.copytree(src, inputdir)
    for alt in sorted(OVERLAY.glob("*.out")):
        shutil.copy(alt, inputdir / "expected" / alt.name)
    chown_to_pg_user(inputdir)
    for p in inputdir.rglob("*"):
        chown_to_pg_user(p)
    return inputdir


def test_pg_regress(
    neon_env: NeonEnv,
    pg_bin: PgBin,
    pg_distrib_dir: Path,
    test_output_dir: Path,
    allowed_errors: list[str],
):
    # The compute's log echoes failing statements, and the suite's SQL has "-- ERROR" comments.
    allowed_errors.append(r".*-- ERROR.*")
    env = neon_env
    ep = env.endpoints.create_start("main")
    inputdir = prepare_inputdir(pg_distrib_dir, test_output_dir)
    outputdir = test_output_dir / "regress_out"
    outputdir.mkdir()
    chown_to_pg_user(outputdir)
    bindir = pg_distrib_dir / "v15" / "bin"
    res = pg_bin.run(
        [
            "pg_regress",
            f"--inputdir={inputdir}",
            f"--outputdir={outputdir}",
            f"--bindir={bindir}",
            f"--dlpath={pg_distrib_dir / 'v15' / 'lib' / 'postgresql'}",
            f"--schedule={inputdir / 'parallel_schedule'}",
            "--host=127.0.0.1",
            f"--port={ep.port}",
            "--user=cloud_admin",
            "--max-concurrent-tests=20",
        ],
        name="pg_regress",
        check=False,
        timeout_s=1800,
    )
    diffs = outputdir / "regression.diffs"
    detail = diffs.read_text(errors="replace")[:20000] if diffs.exists() else res.stdout[-5000:]
    assert res.returncode == 0, f"pg_regress failed:\n{res.stdout[-3000:]}\n{detail}"
    assert "All" in res.stdout and "tests passed" in res.stdout, res.stdout[-3000:]
