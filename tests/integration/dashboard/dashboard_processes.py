"""Real Prometheus exporters shaped like the worker and a server (docs/metrics.md's families),
and the broker helpers of the dashboard's tests.

Each :class:`ExportedProcess` has its own ``CollectorRegistry`` served by prometheus_client's own
HTTP server on a free loopback port, so the dashboard scrapes real ``/metrics`` pages over HTTP
with the contract's names, types and labels; :meth:`WorkerMetrics.advance` and
:meth:`ServerMetrics.advance` move the counters and histograms as a running process would.
"""

from __future__ import annotations

import random
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from core.settings import Settings
from core.subprocesses import free_loopback_port

EVENT_TYPES = ("view", "click", "rating", "dismiss")
ARMS = ("control", "treatment")
SOURCES = ("ann", "popular", "cooccurrence")


class ExportedProcess:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._server: WSGIServer | None = None
        self.url = ""

    def serve(self) -> str:
        for _attempt in range(3):  # another process may take the free port first
            port = free_loopback_port()
            try:
                self._server, _thread = start_http_server(port, "127.0.0.1", self.registry)
            except OSError:
                continue
            self.url = f"http://127.0.0.1:{port}/metrics"
            return self.url
        raise RuntimeError("could not start a metrics exporter on a free port")

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class WorkerMetrics(ExportedProcess):
    def __init__(self, namespace: str = "aether") -> None:
        super().__init__()
        self.events_topic = f"{namespace}.events"
        r = self.registry
        self.events = Counter(
            "aether_stream_events", "source events", ["topic", "outcome"], registry=r
        )
        self.by_type = Counter(
            "aether_stream_events_by_type", "applied by type", ["event_type"], registry=r
        )
        self.lag_records = Gauge("aether_stream_consumer_lag_records", "lag", ["topic"], registry=r)
        self.lag_seconds = Gauge(
            "aether_stream_consumer_lag_seconds", "event-time lag", ["topic"], registry=r
        )
        self.freshness = Histogram(
            "aether_stream_freshness_seconds",
            "freshness",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=r,
        )
        self.impressions = Counter("aether_bandit_impressions", "slots", ["arm"], registry=r)
        self.rewards = Counter("aether_bandit_rewards", "clicks", ["arm"], registry=r)
        self.dismissals = Counter("aether_bandit_dismissals", "dismissals", ["arm"], registry=r)
        self.detections = Counter(
            "aether_drift_detections", "detections", ["signal", "segment", "detector"], registry=r
        )
        self.statistic = Gauge(
            "aether_drift_statistic", "estimate", ["signal", "segment"], registry=r
        )

    def advance(self, rng: random.Random, *, ctr: dict[str, float]) -> None:
        for event_type, count in zip(EVENT_TYPES, (400, 40, 30, 8), strict=True):
            n = count + rng.randrange(10)
            self.by_type.labels(event_type=event_type).inc(n)
            self.events.labels(topic=self.events_topic, outcome="applied").inc(n)
            self.events.labels(topic=f"{self.events_topic}-repartitioned", outcome="applied").inc(n)
        self.lag_records.labels(topic=self.events_topic).set(rng.randrange(50))
        self.lag_seconds.labels(topic=self.events_topic).set(rng.random() * 3)
        for _ in range(50):
            self.freshness.observe(rng.expovariate(1 / 0.08))
        for arm in ARMS:
            shown = 1000
            self.impressions.labels(arm=arm).inc(shown)
            self.rewards.labels(arm=arm).inc(round(shown * ctr[arm]))
            self.dismissals.labels(arm=arm).inc(round(shown * 0.01))
            self.statistic.labels(signal="ctr", segment=f"arm={arm}").set(ctr[arm])
            self.statistic.labels(signal="dismiss_rate", segment=f"arm={arm}").set(0.01)
        self.statistic.labels(signal="exposure_gini", segment="all").set(0.61)
        self.statistic.labels(signal="catalogue_coverage", segment="all").set(0.23)
        self.statistic.labels(signal="cold_slot_share", segment="all").set(0.04)

    def detect(self, signal: str, segment: str) -> None:
        self.detections.labels(signal=signal, segment=segment, detector="ADWIN(delta=0.002)").inc()


class ServerMetrics(ExportedProcess):
    def __init__(self, model_version: str = "sasrec-v7") -> None:
        super().__init__()
        r = self.registry
        self.requests = Counter("aether_recommend_requests", "calls", ["status"], registry=r)
        self.latency = Histogram(
            "aether_recommend_seconds",
            "pipeline",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.top_score = Histogram(
            "aether_recommend_top_score",
            "top score",
            buckets=(0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5),
            registry=r,
        )
        self.candidates = Counter(
            "aether_recommend_candidates", "by source", ["source"], registry=r
        )
        self.slots = Counter("aether_recommend_slate_items", "by source", ["source"], registry=r)
        Gauge("aether_model_info", "serving now", ["model_version"], registry=r).labels(
            model_version=model_version
        ).set(1)

    def advance(self, rng: random.Random, *, score_mean: float) -> None:
        for _ in range(200):
            self.requests.labels(status="OK").inc()
            self.latency.observe(rng.lognormvariate(-5.0, 0.6))
            self.top_score.observe(max(0.0, rng.gauss(score_mean, 0.4)))
        for source, share in zip(SOURCES, (0.6, 0.3, 0.1), strict=True):
            self.candidates.labels(source=source).inc(round(200 * 200 * share))
            self.slots.labels(source=source).inc(round(200 * 10 * share))


def create_topics(settings: Settings, names: list[str]) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    futures = admin.create_topics([NewTopic(n, 1, 1) for n in names], operation_timeout=15)
    for future in futures.values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def publish(settings: Settings, topic: str, records: list[tuple[str, str]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value.encode())
    assert producer.flush(30) == 0, "records left unsent"
