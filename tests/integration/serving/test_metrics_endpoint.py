"""``aether serve``'s Prometheus endpoint, scraped over HTTP from the real server (a child
process on real Redis/Feast, Milvus Lite and Kafka): every metric of docs/metrics.md's Server
section is there with the contract's type and labels and values that match what the client saw,
and ``promtool check metrics`` accepts the output."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from metrics_scrape import by_label, families, promtool_check_metrics, scrape, value

from benchmarks.serve_server import child_env
from benchmarks.serve_stores import Prepared
from core.errors import SchemaError
from core.settings import Settings
from core.subprocesses import free_loopback_port

pytestmark = pytest.mark.integration

EXPERIMENTS = """\
version: 1
experiments:
  - name: ranker
    salt: metrics-test
    arms:
      - {name: a, weight: 1, params: {ranker: sasrec}}
      - {name: b, weight: 1, params: {ranker: popularity}}
"""
# docs/metrics.md, Server: name (as the parser names it: counters without _total) → type, labels.
CONTRACT = {
    "aether_recommend_requests": ("counter", {"status"}),
    "aether_recommend_seconds": ("histogram", set()),
    "aether_recommend_cpu_seconds": ("counter", set()),
    "aether_recommend_stage_seconds": ("histogram", {"stage"}),
    "aether_recommend_stage_cpu_seconds": ("counter", {"stage"}),
    "aether_recommend_fallbacks": ("counter", {"reason"}),
    "aether_recommend_candidates": ("counter", {"source"}),
    "aether_recommend_slate_items": ("counter", {"source"}),
    "aether_recommend_top_score": ("histogram", set()),
    "aether_breaker_state": ("gauge", {"dependency"}),
    "aether_serving_batch_size": ("histogram", {"stage"}),
    "aether_impressions_published": ("counter", {"arm"}),
    "aether_impressions_failed": ("counter", {"reason"}),
    "aether_model_info": ("gauge", {"model_version"}),
    "aether_catalogue_refresh_seconds": ("histogram", {"pass"}),
    "aether_catalogue_refresh_step_seconds": ("histogram", {"step"}),
}
STAGES = {"features", "user_vector", "retrieval", "ranking", "rerank", "explore"}
STAGES |= {"explanation", "impression"}
SOURCES = {"ann", "cooccurrence", "popular", "fresh"}


def wait_for_line(log_path: Path, text: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log_path.read_text(errors="replace"):
        assert process.poll() is None, log_path.read_text(errors="replace")
        assert time.monotonic() < deadline, log_path.read_text(errors="replace")
        time.sleep(0.5)


def published_slates(text: str) -> float:
    family = families(text)["aether_impressions_published"]
    return sum(by_label(family, "aether_impressions_published_total", "arm").values())


def test_the_server_exports_the_contract_metrics(
    settings: Settings, tiny_stores: Prepared, tmp_path: Path, promtool: str
) -> None:
    from serving.client import RecommenderClient

    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(EXPERIMENTS)
    port, metrics_port = free_loopback_port(), free_loopback_port()
    log_path = tmp_path / "serve.log"
    env = {**child_env(settings), "AETHER_SERVING__EXPERIMENTS_FILE": str(experiments)}
    argv = [str(Path(sys.executable).parent / "aether"), "serve", "--port", str(port)]
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            [*argv, "--metrics-port", str(metrics_port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    users = [*tiny_stores.user_ids[:12], "metrics-new-1", "metrics-new-2"]
    try:
        wait_for_line(log_path, f"metrics on 127.0.0.1:{metrics_port}", serve, 180)
        with RecommenderClient(f"127.0.0.1:{port}", timeout_s=5.0) as client:
            slates = [client.recommend(user, 4) for user in users]
            with pytest.raises(SchemaError):
                client.recommend("", 4)  # INVALID_ARGUMENT
            # The producer hands delivery reports over on its next poll, i.e. the next request:
            # ask on until every slate above is reported delivered.
            while published_slates(scrape(metrics_port)) < len(users) and len(slates) < 60:
                slates.append(client.recommend(users[len(slates) % len(users)], 4))
        text = scrape(metrics_port)
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(60)
    assert code == 0, log_path.read_text(errors="replace")

    promtool_check_metrics(promtool, text, tmp_path, "server")
    found = families(text)
    for name, (kind, labels) in CONTRACT.items():
        assert name in found, f"{name} is not exported"
        assert found[name].type == kind, (name, found[name].type)
        for sample in found[name].samples:
            assert set(sample.labels) - {"le"} <= labels, (name, sample.labels)

    def samples(name: str, sample: str, label: str) -> dict[str, float]:
        return by_label(found[name], sample, label)

    answered = len(slates)
    requests = samples("aether_recommend_requests", "aether_recommend_requests_total", "status")
    assert requests == {"OK": answered, "INVALID_ARGUMENT": 1}
    # Every answered request ran the whole pipeline and each stage of it once; the sources run
    # on the retrieval pool (one that overran the request's budget may still be running).
    assert value(found["aether_recommend_seconds"], "aether_recommend_seconds_count") == answered
    calls = samples(
        "aether_recommend_stage_seconds", "aether_recommend_stage_seconds_count", "stage"
    )
    assert {stage: calls[stage] for stage in STAGES} == dict.fromkeys(STAGES, answered)
    for source in (*SOURCES, "fallback"):  # 60 items < 200 candidates: the fallback is asked
        assert 0 < calls[f"source_{source}"] <= answered, source
    cpu = samples(
        "aether_recommend_stage_cpu_seconds", "aether_recommend_stage_cpu_seconds_total", "stage"
    )
    assert set(cpu) == set(calls) and all(seconds >= 0 for seconds in cpu.values())
    # What was served, counted exactly as the client saw it.
    served = Counter(item.source for slate in slates for item in slate.items)
    slots = samples("aether_recommend_slate_items", "aether_recommend_slate_items_total", "source")
    assert slots == {source: float(n) for source, n in served.items()}
    reasons = Counter(r.split(":")[0] for slate in slates for r in slate.fallback_reasons)
    fallbacks = samples("aether_recommend_fallbacks", "aether_recommend_fallbacks_total", "reason")
    assert fallbacks == {reason: float(n) for reason, n in reasons.items()}
    candidates = samples(
        "aether_recommend_candidates", "aether_recommend_candidates_total", "source"
    )
    assert set(candidates) <= SOURCES and sum(candidates.values()) >= sum(served.values())
    # No ranker checkpoint: retrieval order, which is not a score, so no top score.
    assert value(found["aether_recommend_top_score"], "aether_recommend_top_score_count") == 0
    breakers = samples("aether_breaker_state", "aether_breaker_state", "dependency")
    assert set(breakers) == {"features", "seen_items", "posteriors", "ann", "cooccurrence"}
    assert set(breakers.values()) <= {0.0, 1.0, 2.0}
    arms = Counter(slate.experiment_arm for slate in slates)
    published = samples("aether_impressions_published", "aether_impressions_published_total", "arm")
    assert set(arms) == {"ranker=a", "ranker=b"} and set(published) <= set(arms)
    assert len(users) <= sum(published.values()) <= answered
    assert all(published[arm] <= arms[arm] for arm in published)
    # Micro-batching is on by default: every request's feature read and user vector went
    # through a batch (one request at a time here, so batches of one), and each ANN search of
    # a user with a vector, each co-occurrence read of a user with a history and each
    # exploration pool's posterior read.
    batched = samples("aether_serving_batch_size", "aether_serving_batch_size_sum", "stage")
    batches = samples("aether_serving_batch_size", "aether_serving_batch_size_count", "stage")
    assert set(batched) == {"features", "user_vector", "ann", "cooccurrence", "posteriors"}
    assert batched["features"] == batched["user_vector"] == answered
    for stage in ("ann", "cooccurrence", "posteriors"):
        assert 0 < batched[stage] <= answered, stage
    assert all(0 < batches[stage] <= batched[stage] for stage in batched)
    info = samples("aether_model_info", "aether_model_info", "model_version")
    assert info == {"retrieval-only": 1.0}


def test_a_taken_port_leaves_the_process_running_without_metrics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging
    import socket

    from core.metrics_exporter import SERVER_PORT, start_metrics_exporter
    from core.settings import MetricsSettings

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="core.metrics_exporter"):
            url = start_metrics_exporter(MetricsSettings(port=port), default_port=SERVER_PORT)
    assert url is None
    assert f"127.0.0.1:{port}" in caplog.text and "AETHER_METRICS__PORT" in caplog.text
    assert start_metrics_exporter(MetricsSettings(port=0), default_port=SERVER_PORT) is None

    free = free_loopback_port()
    url = start_metrics_exporter(MetricsSettings(port=free - 1), default_port=0, offset=1)
    assert url == f"http://127.0.0.1:{free}/metrics"
    import serving.server_metrics  # noqa: F401  the process-wide registry holds them

    assert "# TYPE aether_recommend_requests_total counter" in scrape(free)
