"""The demo's headline step (``benchmarks.live_headline``) on real components: a real broker and
``aether worker``, Redis/Feast, Milvus Lite, a registered release, the live and frozen pipelines
in this process behind real gRPC servers, on a small slice of ml-latest-small.

Checks what the demo relies on: the frozen state stays as of the cut-off while the live one
follows the replay, every request is answered by the three arms, no closed-loop user's rating is
replayed, and an event stamped where the loop's clock starts after the replay is applied by the
worker (not late), where the loop's old clock (the cut-off) would be late. Never timings or a
particular accuracy."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from aether.demo_loop import closed_loop_users, feedback_events, loop_start_ms, split_at_quantile
from aether.demo_operators import worker_counters
from benchmarks.live_headline import freeze, frozen_settings, run_headline, serve_frozen
from benchmarks.live_replay import ARMS
from benchmarks.live_stack import start_worker, stop
from core.settings import Settings
from core.subprocesses import free_loopback_port
from events import encode
from features.store import FeastOnlineStore, apply_repo
from interactions.movielens import load_movielens
from interactions.replay import catalog_events, rating_events
from interactions.sequences import filter_rare_items, leave_one_out
from lifecycle.publish import publish_index, register_checkpoint
from ranker.fit import fit_and_save
from ranker.train import TrainConfig
from retrieval.index import ItemIndex
from retrieval.item_vectors import ranker_item_vectors
from retrieval.movielens_catalog import catalog_from_movielens
from serving.build_pipeline import build_serving_app
from serving.seen_items import RedisSeenItems
from serving.server import start_server
from stack.redis_server import delete_namespace_keys
from streams.progress import wait_until_caught_up
from streams.publish import make_producer, producer_for, publish

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.solo]

# ml-latest-small's first 40 users and five more who rate after the demo's cut-off.
SLICE = {str(u) for u in range(1, 41)} | {"112", "475", "511", "601", "15"}


def wait_for(predicate: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_the_headline_compares_a_live_and_a_frozen_deployment_and_the_loop_comes_after(
    settings: Settings, make_topics: Callable[[Settings], list[str]], tmp_path: Path
) -> None:
    data = load_movielens("ml-latest-small")
    _, _, cutoff = split_at_quantile(data.ratings, 0.9)  # the demo's cut-off, on the full data
    ratings = data.ratings[data.ratings["user_id"].isin(SLICE)]
    past, future = (
        ratings[ratings["timestamp_ms"] < cutoff],
        ratings[ratings["timestamp_ms"] >= cutoff],
    )
    items = data.items[data.items["item_id"].isin(set(ratings["item_id"]))]
    catalogue_messages = [
        m for m in catalog_events("ml-latest-small", ratings, items) if m.event_time_ms < cutoff
    ]
    catalogue = {m.key.decode() for m in catalogue_messages}
    liked: dict[str, set[str]] = defaultdict(set)
    for row in future.itertuples(index=False):
        if row.rating >= 4:
            liked[row.user_id].add(row.item_id)
    loop_users = closed_loop_users(liked, set(past["user_id"]), 2, seed=0)

    make_topics(settings)
    apply_repo(settings.redis, settings.deployment)
    metrics_port = free_loopback_port()
    worker = start_worker(settings, tmp_path / "worker.log", metrics_port)
    index = app = frozen_app = server = frozen_server = None
    frozen_namespace = frozen_settings(settings).namespace
    try:
        producer = make_producer(settings.kafka.bootstrap_servers)
        publish(producer, settings.topic("items"), catalogue_messages, progress=False)
        publish(
            producer,
            settings.topic("events"),
            rating_events("ml-latest-small", past),
            progress=False,
        )
        wait_until_caught_up(settings, 120)
        assert freeze(settings, past["user_id"].unique()) > 0
        # The seen sets (keyed by a hash of namespace and user) are re-keyed for the frozen one.
        seen_client = redis.Redis.from_url(settings.redis.url.get_secret_value())
        first = past.iloc[0]
        assert RedisSeenItems(seen_client, frozen_namespace).seen_among(
            str(first.user_id), [str(first.item_id), "no-such-item"]
        ) == {str(first.item_id)}
        seen_client.close()

        checkpoint = tmp_path / "ranker.pt"
        fit_and_save(
            leave_one_out(filter_rare_items(past)),
            "ml-latest-small",
            checkpoint,
            {"max_length": 50},
            TrainConfig(epochs=1, seed=0, progress=False),  # any ranker: accuracy is not checked
        )
        model, _ = register_checkpoint(settings.milvus, settings.deployment, checkpoint)
        index = ItemIndex.from_settings(settings.milvus, settings.deployment)
        publish_index(
            settings.milvus,
            settings.deployment,
            ranker_item_vectors(checkpoint),
            catalog_from_movielens(items, past),
            model=model.version,
            progress=False,
            index=index,
        )
        app = build_serving_app(settings, index=index)
        server = start_server(app.pipeline, settings.serving.model_copy(update={"port": 0}))
        frozen_app, frozen_server = serve_frozen(settings, index)

        plot = tmp_path / "demo-live.png"
        headline = run_headline(
            settings,
            producer,
            dataset="ml-latest-small",
            ratings=ratings,
            cutoff_ms=cutoff,
            catalogue=catalogue,
            loop_users=loop_users,
            live_address=server.address,
            frozen_address=frozen_server.address,
            events_per_user=2,
            plot=plot,
            say=lambda _: None,
        )
        served = headline.log.served
        figures = headline.figures
        assert figures["live_requests"] == len(served) > 0
        assert figures["requests_with_a_failed_arm"] == 0
        assert not {s.request.user_id for s in served} & set(loop_users)
        for s in served:
            assert set(s.answers) == set(ARMS)
            assert all(len(a.items) == 10 for a in s.answers.values())
        assert "SMALL SAMPLE" in headline.line and f"{len(served)} requests" in headline.line
        assert plot.stat().st_size > 0 and plot.with_suffix(".json").stat().st_size > 0

        # The live rows follow the replay; the frozen ones stay as of the cut-off.
        user, target = served[-1].request.user_id, served[-1].request.item_id
        live_row = FeastOnlineStore(settings.redis, settings.deployment).read_users([user])[user]
        frozen_store = FeastOnlineStore(settings.redis, frozen_settings(settings).deployment)
        frozen_row = frozen_store.read_users([user])[user]
        shown = set(live_row.recent_items) | set(live_row.dismissed_items)
        assert target in shown
        assert target not in set(frozen_row.recent_items) | set(frozen_row.dismissed_items)
        assert headline.replayed_until_ms >= served[-1].request.event_time_ms

        late = (worker_counters(metrics_port) or {}).get("late")
        assert late == 0  # the past, then the future, in order

        # A click stamped where the loop's clock starts after the replay is applied; stamped from
        # the cut-off, as the loop's clock started before the headline, it is late. (Keyed by the
        # last request's user: a partition the replay moved past cutoff + 1 h.)
        assert served[-1].request.event_time_ms > cutoff + 3_600_000 + 60_000
        unrated = sorted(catalogue - set(ratings.loc[ratings["user_id"] == user, "item_id"]))
        old, fresh = unrated[0], unrated[1]
        start = loop_start_ms(cutoff, headline.replayed_until_ms)
        feedback = producer_for(settings)
        for item, at_ms in ((old, cutoff + 3_600_000), (fresh, start + 3_600_000)):
            events, _, _ = feedback_events(user, [item], f"r-{item}", {item}, set(), at_ms)
            for event in events:
                feedback.produce(settings.topic("events"), key=user.encode(), value=encode(event))
        assert feedback.flush(30) == 0
        store = FeastOnlineStore(settings.redis, settings.deployment)
        assert wait_for(lambda: fresh in store.read_users([user])[user].recent_items)
        assert old not in store.read_users([user])[user].recent_items
        # (counted as its batch is accounted for, just after the rows are written)
        assert wait_for(lambda: (worker_counters(metrics_port) or {}).get("late") == 1)
    finally:
        for running in (frozen_server, server):
            if running is not None:
                running.stop(1)
        for built in (frozen_app, app):
            if built is not None:
                built.close()
        if index is not None:
            index.close()
        stop(worker)
        delete_namespace_keys(settings.redis.url.get_secret_value(), frozen_namespace)
