"""The README's pieces, in the README's order, each its own process against the test's stack:

    aether stack up
    aether replay --dataset ml-latest-small      (sized: --limit)
    aether index --dataset ml-latest-small       (sized: --limit, --content-map-items)
    aether worker &
    aether serve &
    aether recommend --user …

Issue 17 found ``aether serve`` exiting here ("…_item_embeddings.npz not found: run `aether
index` first"), and a new user's "trending now" slate in item-id string order. Checked: serve
starts on what ``aether index`` registered and promoted; a known user gets a personalised slate
from that release; a new user's trending items are the most popular of what was replayed, by the
popularity definition of ``features/FEATURES.md`` decayed to the replay's own last event time
(computed here from the ratings, independently of the worker and of serving).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cli_processes import Background, aether, start_worker, wait_until

from core.settings import Settings
from core.subprocesses import free_loopback_port
from interactions.movielens import load_movielens

# Seven processes on a shared 2-core machine: the stack's set-up alone can take minutes.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

RATINGS = 3000  # the first ratings of ml-latest-small, in event-time order
HOUR_MS = 3_600_000
HALF_LIFE_MS = 24 * HOUR_MS  # features/FEATURES.md: popularity
HORIZON_MS = 14 * 24 * HOUR_MS
LINE = re.compile(r"^\s*\d+\.\s+(\S+)\s+(-?[\d.]+)\s+\[(\w+)\]\s+(.*)$")


def reference_trending() -> list[tuple[str, float]]:
    """Every replayed item's log2 popularity at the replay's last event time, best first (ties
    by id): per item, hourly buckets of event weights (view 1, rating 1, click 2 for ratings ≥ 4)
    within 14 days of its own last event, decayed to that event, then to the common time."""
    ratings = load_movielens("ml-latest-small").ratings.iloc[:RATINGS]
    buckets: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    last: dict[str, int] = {}
    for item, rating, t in zip(
        ratings["item_id"], ratings["rating"], ratings["timestamp_ms"], strict=True
    ):
        weight = 2 + (2 if rating >= 4 else 0)
        buckets[item][int(t) // HOUR_MS] += weight
        last[item] = max(last.get(item, 0), int(t))
    popularity = {
        item: sum(
            mass * 2.0 ** (-(last[item] - b * HOUR_MS) / HALF_LIFE_MS)
            for b, mass in sorted(per_item.items())
            if b * HOUR_MS > last[item] - HORIZON_MS
        )
        for item, per_item in buckets.items()
    }
    now = max(last[i] for i, p in popularity.items() if p > 0)
    scores = {
        i: math.log2(p) - (now - last[i]) / HALF_LIFE_MS for i, p in popularity.items() if p > 0
    }
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclass
class Slate:
    model_version: str
    fallback: str
    items: list[tuple[str, str, str]]  # (item id, source, explanation)


def recommend_cli(settings: Settings, port: int, user: str, k: int = 10) -> Slate:
    """``aether recommend``, as the README has a person ask."""
    out = aether(
        settings, "recommend", "--user", user, "-k", str(k), "--address", f"127.0.0.1:{port}"
    )
    header = re.search(r"· model (\S+)(.*)$", out, flags=re.MULTILINE)
    assert header is not None, out
    items = [(m[1], m[3], m[4]) for line in out.splitlines() if (m := LINE.match(line)) is not None]
    return Slate(header[1], header[2].strip(), items)


def recommend(settings: Settings, port: int, user: str, k: int = 10) -> Slate:
    """The same through the SDK (no process start per call: for polling)."""
    from serving.client import RecommenderClient

    with RecommenderClient(f"127.0.0.1:{port}", timeout_s=30.0) as client:
        slate = client.recommend(user, k)
    return Slate(
        slate.model_version,
        ", ".join(slate.fallback_reasons),
        [(i.item_id, i.source, i.explanation) for i in slate.items],
    )


@dataclass
class ReadmeStack:
    settings: Settings
    port: int
    worker: Background
    serve: Background


@pytest.fixture(scope="module")
def readme_stack(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReadmeStack]:
    import uuid

    from retrieval.milvus_lite import release_milvus_lite
    from stack.redis_server import delete_namespace_keys

    tmp = tmp_path_factory.mktemp("readme")
    settings = Settings(
        namespace=f"t{uuid.uuid4().hex[:12]}",
        data_dir=tmp / ".aether",
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        MILVUS_URI=str(tmp / "milvus.db"),
    )
    port = free_loopback_port()
    worker = serve = None
    try:
        aether(settings, "stack", "up")
        aether(settings, "replay", "--dataset", "ml-latest-small", "--limit", str(RATINGS))
        indexed = aether(
            settings,
            *("index", "--dataset", "ml-latest-small", "--limit", str(RATINGS)),
            *("--content-map-items", "200"),
        )
        assert "promoted release 1" in indexed, indexed
        # Without embedding the replayed catalogue (9,742 titles, minutes of CPU on two cores);
        # the catalogue agent's embedding is tested in tests/integration/streams.
        worker = start_worker(settings, tmp / "worker.log")
        from streams.progress import wait_until_caught_up

        # Serve once the worker has caught up: its first catalogue then holds every replayed
        # item's row, and the first answer can be checked (every answer is an impression the
        # worker applies, which, until the stream side of issue 17 is fixed, takes the shown
        # items out of trending: tests/unit/serving/test_catalog_view.py).
        wait_until_caught_up(settings, 300)
        serve = Background.start(
            settings,
            tmp / "serve.log",
            "serve",
            "--port",
            str(port),
            "--metrics-port",
            "0",
            "--refresh-s",
            "1",
            # a request budget a loaded, shared machine keeps (the default 100 ms would let
            # Milvus time out into a flagged fallback now and then)
            env={"AETHER_SERVING__DEADLINE_MS": "3000"},
        )
        serve.wait_for_log("serving aetherrec.v1.Recommender", timeout_s=300)
        yield ReadmeStack(settings, port, worker, serve)
    finally:
        for process in (serve, worker):
            if process is not None:
                process.stop()
        release_milvus_lite(settings.milvus.uri)
        delete_namespace_keys(redis_url, settings.namespace)


def test_a_new_user_gets_what_is_really_trending(readme_stack: ReadmeStack) -> None:
    """Serving's trending order over the rows the worker wrote is the reference order, and the
    first answer of the server to a new user (nothing shown yet) leads with that head."""
    from features.store import FeastOnlineStore
    from retrieval.sources import best_first
    from serving.catalog_view import load_snapshot

    settings, port = readme_stack.settings, readme_stack.port
    reference = reference_trending()
    score = dict(reference)
    top = [item for item, _ in reference]
    store = FeastOnlineStore(settings.redis, settings.deployment)
    try:
        snapshot = load_snapshot(store, top)
    finally:
        store.close()
    serving_order = [item for item, _ in best_first(snapshot.popularity.items())]
    assert len(serving_order) == len(top)
    for ours, theirs in zip(serving_order[:50], top[:50], strict=True):
        assert abs(score[ours] - score[theirs]) < 1e-9, (serving_order[:10], top[:10])

    slate = recommend(settings, port, "newcomer")
    served = [item for item, _, _ in slate.items]
    trending = [item for item, _, explanation in slate.items if explanation == "trending now"]
    assert len(trending) >= 5, slate.items
    # The head of what was replayed is there; everything labelled trending is among the most
    # popular (the fresh source's votes reorder the head, so not exactly the first ten) …
    assert top[0] in served, (top[:10], slate.items)
    assert set(trending) <= set(top[:50]), (top[:50], slate.items)
    # … and not the item-id string order of the bug report.
    assert served != sorted(served)


def test_serve_answers_from_the_release_index_promoted(readme_stack: ReadmeStack) -> None:
    settings, port = readme_stack.settings, readme_stack.port
    known = str(load_movielens("ml-latest-small").ratings.iloc[0]["user_id"])
    wait_until(
        lambda: recommend(settings, port, known).model_version.endswith("@items_v1"),
        "the promoted release",
    )
    slate = recommend_cli(settings, port, known)
    assert slate.model_version == "retrieval-only@items_v1"  # no ranker trained in the README
    assert len(slate.items) == 10
    assert slate.fallback == ""  # the index answered: no source failed, nothing degraded
    history = set(
        load_movielens("ml-latest-small")
        .ratings.iloc[:RATINGS]
        .query("user_id == @known")["item_id"]
    )
    assert not history & {item for item, _, _ in slate.items}  # seen items are not offered again


def test_a_ranker_trained_from_the_log_is_promoted_and_swapped_in(
    readme_stack: ReadmeStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``aether train --from-log``: the worker's own offline log (exactly the replayed ratings it
    accepted), the same fit and validation as ``--dataset``, registered and promoted; the
    running server swaps to it."""
    import json

    import pandas as pd

    from lifecycle.from_log import log_interactions
    from lifecycle.registry import Registry

    settings, port = readme_stack.settings, readme_stack.port
    replayed = load_movielens("ml-latest-small").ratings.iloc[:RATINGS].reset_index(drop=True)
    logged = log_interactions(settings.deployment)
    pd.testing.assert_frame_equal(logged, replayed[logged.columns.tolist()], check_dtype=False)

    out = tmp_path_factory.mktemp("train") / "ranker.pt"
    printed = aether(
        settings,
        "train",
        "--from-log",
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--blocks",
        "1",
        "--max-length",
        "50",
        "--no-progress",
        "--out",
        str(out),
        "--promote",
    )
    figures = json.loads(next(line for line in printed.splitlines() if line.startswith("{")))
    assert figures["dataset"] == f"log:{settings.namespace}"
    assert figures["release"] == f"{figures['model_version']}@items_v1"
    assert figures["val_ndcg10"] is not None  # validated as `aether train --dataset` is
    known = str(replayed.iloc[0]["user_id"])
    wait_until(
        lambda: recommend(settings, port, known).model_version == figures["release"],
        "the server to swap to the ranker trained from the log",
        120,
    )
    # (read in this process: `aether registry list`'s own output is checked in
    # test_empty_deployment.py, and each `aether` process costs seconds of CPU)
    release = Registry.for_deployment(settings.deployment).promoted()
    assert release is not None and (release.serial, release.label) == (2, figures["release"])
