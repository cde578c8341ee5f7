"""The dashboard warns once per outage of a scrape target, and not while a target that has never
answered is still starting (``dashboard.server.STARTUP_GRACE_S``): the demo starts the dashboard
seconds before the worker's and the server's ``/metrics`` are up."""

from __future__ import annotations

import logging

import pytest

from core.errors import DependencyUnavailable
from dashboard.scrape import ScrapeTarget
from dashboard.server import STARTUP_GRACE_S, DashboardConfig, DashboardServer


class _Target:
    """A scraper whose target is down until told otherwise."""

    def __init__(self) -> None:
        self.up = False

    def __call__(self, target: ScrapeTarget, timeout_s: float) -> dict[object, float]:
        if not self.up:
            raise DependencyUnavailable("metrics", f"{target.url}: Connection refused")
        return {}


def _warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum("scrape of" in r.getMessage() for r in caplog.records)


def test_a_starting_target_is_not_warned_about_an_outage_is_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    scraper = _Target()
    server = DashboardServer(
        DashboardConfig(targets=(ScrapeTarget("worker", "http://127.0.0.1:1/metrics"),)),
        clock=lambda: now[0],
        scraper=scraper,
    )
    caplog.set_level(logging.WARNING, logger="dashboard.server")

    server.scrape_once()  # the worker is starting: down, shown as down, not logged
    assert _warnings(caplog) == 0
    assert server.state.health["worker"].up is False

    now[0] += STARTUP_GRACE_S + 1  # never came up: now it is worth a warning, once
    server.scrape_once()
    server.scrape_once()
    assert _warnings(caplog) == 1

    scraper.up = True
    server.scrape_once()
    assert server.state.health["worker"].up is True
    scraper.up = False  # a target that was up goes down: warned at once, once
    server.scrape_once()
    server.scrape_once()
    assert _warnings(caplog) == 2


def test_a_target_that_answered_during_the_grace_is_warned_about_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    scraper = _Target()
    server = DashboardServer(
        DashboardConfig(targets=(ScrapeTarget("server-0", "http://127.0.0.1:1/metrics"),)),
        clock=lambda: now[0],
        scraper=scraper,
    )
    caplog.set_level(logging.WARNING, logger="dashboard.server")
    scraper.up = True
    server.scrape_once()
    scraper.up = False
    now[0] += 1.0
    server.scrape_once()
    assert _warnings(caplog) == 1
