"""The dashboard process: a scraper thread, the topic reader and a small HTTP server.

Paths: ``/`` the page, ``/api/status`` the same data as JSON, ``/metrics`` the dashboard's own
metrics (``aether_dashboard_requests_total{path}``, ``aether_dashboard_scrape_errors_total
{target}``; docs/metrics.md). The standard library's ``ThreadingHTTPServer`` is enough for a
page a few operators open: no web framework, nothing to vendor.

The page is computed on request from what the scraper and the reader hold (a few hundred
rounds); nothing on the request path talks to another process, so a process that hangs cannot
hang the page.

    with DashboardServer(config) as dashboard:   # or .start() / .stop()
        print(dashboard.url)
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from core.errors import AetherError, DependencyUnavailable
from dashboard.drift_log import DriftLog
from dashboard.exposure_view import ExposureTracker
from dashboard.page import render_page
from dashboard.scrape import SCRAPE_TIMEOUT_S, ScrapeTarget, scrape
from dashboard.series import Round, ScrapeRing
from dashboard.topic_reader import TopicReader, TopicReaderConfig
from dashboard.view import TargetState, build_view

log = logging.getLogger(__name__)

PATHS = ("/", "/api/status", "/metrics")  # the bounded values of the ``path`` label (+ "other")


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    host: str = "127.0.0.1"
    port: int = 8050  # 0: any free port (tests)
    targets: tuple[ScrapeTarget, ...] = ()
    topics: TopicReaderConfig | None = None  # None: no drift log or exposure (no broker)
    events_topic: str | None = None  # the ``topic`` label of events/s; None: applied by type
    interval_s: float = 5.0
    history_rounds: int = 180  # 15 min at 5 s
    window_rounds: int = 12  # "now" = the last minute at 5 s
    refresh_s: int = 5  # the page's meta refresh; 0: none
    scrape_timeout_s: float = SCRAPE_TIMEOUT_S
    exposure_reference_slots: int = 2_000
    exposure_window_slots: int = 2_000


# A target that has never answered is not warned about for this long: the dashboard usually
# starts beside the worker and the server, whose /metrics come up seconds later.
STARTUP_GRACE_S = 30.0


@dataclass
class _TargetHealth:
    up: bool | None = None
    error: str | None = None
    last_success: float | None = None
    warned: bool = False  # this outage was logged (one warning per outage)


@dataclass
class DashboardState:
    """What the threads share; each part guards itself (the ring by ``lock``)."""

    ring: ScrapeRing
    drift: DriftLog
    exposure: ExposureTracker
    health: dict[str, _TargetHealth] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _IPv6HTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: a non-finite figure is ``null`` (no data), like on the page."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class DashboardServer:
    def __init__(
        self,
        config: DashboardConfig,
        *,
        clock: Callable[[], float] = time.time,
        scraper: Callable[[ScrapeTarget, float], Any] = scrape,
    ) -> None:
        self.config = config
        self._clock = clock
        self._started = clock()
        self._scrape = scraper
        self.state = DashboardState(
            ScrapeRing(config.history_rounds),
            DriftLog(),
            ExposureTracker(config.exposure_reference_slots, config.exposure_window_slots),
            {t.name: _TargetHealth() for t in config.targets},
        )
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aether_dashboard_requests",
            "Page, JSON and metrics requests to the dashboard",
            ["path"],
            registry=self.registry,
        )
        self.scrape_errors = Counter(
            "aether_dashboard_scrape_errors",
            "Failed scrapes of a worker's or server's /metrics",
            ["target"],
            registry=self.registry,
        )
        for target in config.targets:  # export 0 before the first failure: rate() needs it
            self.scrape_errors.labels(target=target.name)
        self.topics = (
            TopicReader(config.topics, self.state.drift, self.state.exposure)
            if config.topics is not None
            else None
        )
        self._http: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._http is None:
            raise RuntimeError("the dashboard is not started")
        address = self._http.server_address
        host, port = str(address[0]), int(address[1])
        if host in ("0.0.0.0", "::"):  # listening everywhere: this machine reaches it on loopback
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def start(self) -> DashboardServer:
        try:
            server_class = _IPv6HTTPServer if ":" in self.config.host else ThreadingHTTPServer
            self._http = server_class((self.config.host, self.config.port), self._handler())
        except OSError as exc:
            raise DependencyUnavailable(
                "dashboard port",
                f"cannot listen on {self.config.host}:{self.config.port} ({exc.strerror or exc}); "
                "choose another with --port",
            ) from exc
        self._http.daemon_threads = True
        self._threads = [
            threading.Thread(target=self._http.serve_forever, name="dashboard-http", daemon=True),
            threading.Thread(target=self._scrape_loop, name="dashboard-scrape", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if self.topics is not None:
            self.topics.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.topics is not None:
            self.topics.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def serve_until_interrupted(self) -> None:
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    # -- scraping -----------------------------------------------------------------------------

    def _scrape_loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.scrape_once()
            self._stop.wait(max(0.0, self.config.interval_s - (time.monotonic() - started)))

    def scrape_once(self) -> None:
        """Scrape every target once and add the round (the scraper thread calls it; tests too)."""
        results: dict[str, Any] = {}
        for target in self.config.targets:
            health = self.state.health[target.name]
            try:
                results[target.name] = self._scrape(target, self.config.scrape_timeout_s)
            except AetherError as exc:
                results[target.name] = None
                self.scrape_errors.labels(target=target.name).inc()
                starting = (
                    health.last_success is None and self._clock() - self._started < STARTUP_GRACE_S
                )
                if not health.warned and not starting:
                    log.warning("scrape of %s failed: %s", target.url, exc)
                    health.warned = True
                health.up, health.error = False, str(exc)
                continue
            health.up, health.error, health.last_success = True, None, self._clock()
            health.warned = False
        with self.state.lock:
            self.state.ring.add(Round.of(self._clock(), results))

    # -- the view -----------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        with self.state.lock:
            ring = ScrapeRing(self.state.ring.capacity)
            for round_ in self.state.ring.rounds:
                ring.add(round_)
        topics = self.config.topics
        return build_view(
            ring,
            targets=[
                TargetState(t.name, t.url, h.up, h.error, h.last_success)
                for t in self.config.targets
                for h in (self.state.health[t.name],)
            ],
            drift=self.state.drift.newest_first(),
            drift_skipped=self.state.drift.skipped,
            exposure=self.state.exposure.snapshot(),
            window_rounds=self.config.window_rounds,
            interval_s=self.config.interval_s,
            computed_at=self._clock(),
            drift_topic=topics.drift_topic if topics else "(no broker configured)",
            events_topic=self.config.events_topic,
            topics_error=self.topics.problem if self.topics else None,
        )

    # -- HTTP ---------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "aether-dashboard"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                dashboard.requests.labels(path=path if path in PATHS else "other").inc()
                try:
                    if path == "/":
                        body = render_page(dashboard.view(), refresh_s=dashboard.config.refresh_s)
                        self._send(200, "text/html; charset=utf-8", body.encode())
                    elif path == "/api/status":
                        body = json.dumps(json_safe(dashboard.view()), allow_nan=False)
                        self._send(200, "application/json", body.encode())
                    elif path == "/metrics":
                        self._send(200, CONTENT_TYPE_LATEST, generate_latest(dashboard.registry))
                    else:
                        self._send(404, "text/plain; charset=utf-8", b"not found\n")
                except Exception:  # a page bug must show as a 500, not kill the thread silently
                    log.exception("dashboard request %s failed", path)
                    self._send(500, "text/plain; charset=utf-8", b"internal error; see the log\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), format % args)

        return Handler
