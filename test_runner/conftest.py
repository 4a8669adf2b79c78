"""Root conftest of the integration suite: loads the fixture modules and session-wide hooks."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("fixtures")

from fixtures.paths import PG_OS_USER, TEST_OUTPUT_DIR_KEY, output_root  # noqa: E402
from fixtures.procs import install_process_safety_net  # noqa: E402

pytest_plugins = [
    "fixtures.paths",
    "fixtures.ports",
    "fixtures.procs",
    "fixtures.pg",
    "fixtures.neon",
]


def pytest_configure(config: pytest.Config) -> None:
    install_process_safety_net()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"test output: {output_root()}",
        f"PostgreSQL OS user: {PG_OS_USER or '(current user)'}",
    ]


_SUMMARY_KEY = pytest.StashKey[list[str]]()


@pytest.fixture
def report_summary(request: pytest.FixtureRequest) -> list[str]:
    """Lines a test appends here are printed at the end of the run (e.g. how much it checked)."""
    return request.config.stash.setdefault(_SUMMARY_KEY, [])


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(_SUMMARY_KEY, [])
    if lines:
        terminalreporter.section("test summaries")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    path = item.stash.get(TEST_OUTPUT_DIR_KEY, None)
    if path is not None and report.failed:
        report.sections.append(("test output", f"logs and data of this test: {path}"))
    return report
