"""Releases swap under a running server: real gRPC, Redis/Feast, Milvus Lite and the registry.

How a mixed-version response is detected: the two releases are two rankers with their own item
embeddings indexed (``aether index --ranker-checkpoint``), over *different* item sets (A knows
i0..i39, B knows i20..i59) and with different weights. A response is *consistent with* a release
when its ``model_version`` is that release's label, every item is in that release's vocabulary
and every score is that release's model score for the user's history. A mixed response — one
version's label with the other's candidates or scores, or candidates from one index scored by
the other model — is consistent with neither, and is counted.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from live_stores import catalogue, quiet_settings, register_pair, write_rows
from prometheus_client import REGISTRY

from core.settings import Settings
from lifecycle.publish import promote
from lifecycle.registry import Registry
from serving.build_pipeline import build_serving_app
from serving.client import RecommenderClient
from serving.server import start_server

pytestmark = pytest.mark.integration

ITEMS = [f"i{n}" for n in range(60)]
USERS = {f"u{n}": tuple(f"i{20 + (3 * n + j) % 20}" for j in range(5)) for n in range(12)}


def test_a_promoted_release_swaps_in_under_load_without_errors_or_mixed_responses(
    settings: Settings, make_topics, tmp_path: Path
) -> None:
    settings = quiet_settings(settings, max_concurrent_rpcs=64)
    make_topics(settings)
    write_rows(settings, ITEMS, USERS)
    registry = Registry.for_deployment(settings.deployment)
    catalog = catalogue(ITEMS)
    a = register_pair(settings, registry, tmp_path / "a.pt", ITEMS[:40], 1, catalog, promote=True)
    b = register_pair(settings, registry, tmp_path / "b.pt", ITEMS[20:], 2, catalog, promote=False)
    versions = {pair.label: pair for pair in (a, b)}
    # the premise: the two versions disagree on every user's scores
    for history in USERS.values():
        shared = ITEMS[20:40]
        assert np.abs(a.ranker.score(history, shared) - b.ranker.score(history, shared)).max() > 0.1

    app = build_serving_app(settings)
    assert app.live.release.label == a.label
    running = start_server(app.pipeline, settings.serving.model_copy(update={"port": 0}))
    app.start_refreshing(0.2)
    answers: list[tuple[str, str, tuple[tuple[str, float], ...]]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop(worker: int) -> None:
        users = list(USERS)
        with RecommenderClient(running.address, timeout_s=30.0) as client:
            n = worker
            while not stop.is_set():
                user = users[n % len(users)]
                n += 1
                try:
                    slate = client.recommend(user, 8)
                except Exception as exc:  # every failed call is counted
                    with lock:
                        errors.append(exc)
                    continue
                with lock:
                    answers.append(
                        (
                            user,
                            slate.model_version,
                            tuple((i.item_id, i.score) for i in slate.items),
                        )
                    )

    def labels() -> Counter[str]:
        with lock:
            return Counter(label for _, label, _ in answers)

    threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    try:
        _wait(lambda: labels()[a.label] >= 300, "300 answers of release A")
        promote(
            settings.milvus,
            settings.deployment,
            model=b.ranker.model_version,
            index=b.published.index.version,
            registry=registry,
        )
        _wait(
            lambda: labels()[b.label] >= 300 and sum(labels().values()) >= 1000,
            "300 answers of release B, 1000 in all",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        running.stop(0)
        app.close()

    assert not errors, errors[:3]
    counts = labels()
    assert set(counts) == {a.label, b.label} and sum(counts.values()) >= 1000
    expected_scores: dict[tuple[str, str], dict[str, float]] = {}
    mixed = []
    for user, label, items in answers:
        pair = versions.get(label)
        if pair is None:
            mixed.append((user, label, items))
            continue
        known = set(pair.ranker.vocabulary.item_ids)
        key = (label, user)
        if key not in expected_scores:
            scores = pair.ranker.score(USERS[user], sorted(known))
            expected_scores[key] = dict(zip(sorted(known), scores.tolist(), strict=True))
        expected = expected_scores[key]
        consistent = len(items) == 8 and all(
            item in known and abs(score - expected[item]) <= 1e-3 * max(1.0, abs(score))
            for item, score in items
        )
        if not consistent:
            mixed.append((user, label, items))
    assert not mixed, mixed[:3]
    # once B served, A never came back: the swap is one-way
    first_b = next(n for n, (_, label, _) in enumerate(answers) if label == b.label)
    assert all(label == b.label for _, label, _ in answers[first_b + 60 :])
    assert REGISTRY.get_sample_value("aether_model_info", {"model_version": b.label}) == 1.0
    assert REGISTRY.get_sample_value("aether_model_info", {"model_version": a.label}) is None


def _wait(predicate, what: str, timeout_s: float = 300.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
