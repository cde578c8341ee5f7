"""The live-vs-frozen headline of ``aether demo``: ``aether bench live``'s protocol on the stack the
demo has already built (docs/benchmarks/live.md §3).

The demo has what the benchmark would otherwise build a second time: a temporal cut ``T``, a
worker that has applied exactly the ratings before ``T``, a ranker fitted on them, its index and a
live gRPC server. This module adds the rest, in the demo's order:

1. ``freeze`` — once the worker has caught up with the past, the live namespace's Redis keys are
   copied to ``<ns>_frozen`` (``benchmarks.live_stack.clone_online_state``, as the benchmark
   does): the online state as of ``T``, with no worker after it.
2. ``serve_frozen`` — once the release is promoted, a second pipeline in the same process on the
   frozen namespace: the live deployment's registry folder copied (the same release), the same
   Milvus Lite client (one per file and process), its own gRPC server.
3. ``headline_plan`` (pure) — which ratings after ``T`` are replayed and which are requests: those
   of every user who is warm at ``T``, rates after it and is **not** in the closed loop (the loop
   scores its slates against its users' ratings after ``T``: publishing those first would hand
   the loop its answers and empty its slates of them). Titles outside the catalogue at ``T``
   (the new titles the loop publishes later among them) and rare items are left out, as the
   benchmark leaves out rare items; the replay ends with the last request.
4. ``run_headline`` — ``benchmarks.live_replay.replay`` with the demo's producer, the two servers
   and the live online store; ``benchmarks.live_figures`` scores it; one line, labelled a small
   sample, and a plot. The loop runs afterwards on event times after the last replayed rating
   (``Headline.replayed_until_ms``), so none of its events is late against the worker's
   watermarks (DESIGN.md §4).

Both arms serve as ``aether serve`` does (the demo's settings: its exploration slot and deadline),
unlike the benchmark, which turns exploration off and widens the deadline; fallbacks are counted.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from benchmarks.live_figures import arm_figures, over_replay_time
from benchmarks.live_replay import ReplayLog, Request, plan_requests
from core.settings import Settings, checked_namespace

if TYPE_CHECKING:
    from retrieval.index import ItemIndex
    from serving.build_pipeline import ServingApp
    from serving.server import RunningServer

FROZEN_SUFFIX = "_frozen"


def frozen_settings(settings: Settings) -> Settings:
    """The frozen deployment: the live one's settings on namespace ``<ns>_frozen``."""
    namespace = checked_namespace(f"{settings.namespace}{FROZEN_SUFFIX}")
    return settings.model_copy(update={"namespace": namespace})


def freeze(settings: Settings, user_ids: Iterable[str] = ()) -> int:
    """Copy the live namespace's online state (Feast rows, stream state, transitions, posteriors,
    the seen sets of ``user_ids``) to the frozen namespace, replacing an earlier copy. Call it
    while nothing writes the live namespace: once the worker has applied exactly the past.
    Returns the keys copied."""
    from benchmarks.live_stack import clone_online_state
    from stack.redis_server import delete_namespace_keys

    url = settings.redis.url.get_secret_value()
    frozen = frozen_settings(settings).namespace
    delete_namespace_keys(url, frozen, cluster=settings.redis.cluster)
    return clone_online_state(url, settings.namespace, frozen, user_ids)


def serve_frozen(settings: Settings, index: ItemIndex) -> tuple[ServingApp, RunningServer]:
    """The frozen deployment's pipeline and gRPC server, in this process: the live deployment's
    promoted release (its registry folder copied: same model, same Milvus collection, same
    content map), the frozen namespace's online state, ``index``'s Milvus client. Closing the
    app closes ``index``: close it with the live one, at the end."""
    from lifecycle.registry import registry_dir
    from serving.build_pipeline import build_serving_app
    from serving.server import start_server
    from streams.topics import ensure_topics

    frozen = frozen_settings(settings)
    target = registry_dir(frozen.deployment)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(registry_dir(settings.deployment), target)
    ensure_topics(frozen)  # its impressions go to <ns>_frozen.impressions, which nobody reads
    app = build_serving_app(frozen, index=index)
    server = start_server(app.pipeline, frozen.serving.model_copy(update={"port": 0}))
    return app, server


def headline_plan(
    ratings: pd.DataFrame,
    cutoff_ms: int,
    *,
    catalogue: Collection[str],
    loop_users: Collection[str],
    events_per_user: int,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[Request]]:
    """The ratings after ``cutoff_ms`` to replay and the requests among them (module docstring,
    step 3): no rating of a ``loop_users`` user, only ``catalogue`` items with ≥ 5 ratings, up to
    the last request; every eligible user is asked (``plan_requests``, which needs a user warm at
    the cut-off). ``ratings`` in the loader's event-time order."""
    from interactions.sequences import filter_rare_items

    kept = filter_rare_items(ratings)  # as the benchmark: items with < 5 ratings in all
    kept = kept[kept["item_id"].isin(set(catalogue)) & ~kept["user_id"].isin(set(loop_users))]
    future, requests = plan_requests(
        kept, cutoff_ms, users=len(kept), events_per_user=events_per_user, seed=seed
    )
    end = requests[-1].position + 1 if requests else 0
    return future.iloc[:end].reset_index(drop=True), requests


@dataclass
class Headline:
    figures: dict[str, Any]
    log: ReplayLog
    replayed_until_ms: int  # the newest event time the replay may have published
    line: str  # the headline (``headline_line``)
    details: str  # what goes with it (``headline_details``)


def headline_line(dataset: str, figures: dict[str, Any]) -> str:
    """The one line the demo prints (``figures``: ``benchmarks.live_figures.arm_figures``)."""
    f = figures
    gain = f["live_gain_over_frozen"]
    low, high = f["live_gain_over_frozen_ci95_low"], f["live_gain_over_frozen_ci95_high"]
    versus = (
        f"live over frozen {gain:+.0%} (95 % CI {low:+.0%} … {high:+.0%})"
        if all(math.isfinite(v) for v in (gain, low, high))
        else "live over frozen undefined (frozen found no target)"
    )
    return (
        f"HEADLINE live vs frozen features, {dataset}, SMALL SAMPLE ({f['live_users']} users, "
        f"{f['live_requests']} requests; the ML-1M figures are in docs/benchmarks/live.md): "
        f"NDCG@10 live {f['live_ndcg10']:.3f} / frozen {f['frozen_ndcg10']:.3f} / popular "
        f"{f['popular_ndcg10']:.3f}; {versus}"
    )


def headline_details(figures: dict[str, Any]) -> str:
    """The line under the headline: the later requests (where streaming can show), fallbacks,
    and whether the replay stopped early."""
    f, nan = figures, float("nan")
    stopped = (
        f" (stopped early: {f['live_requests']} of {f['requests_planned']} requests asked)"
        if f.get("replay_stopped_early")
        else ""
    )
    return (
        f"      on each user's later requests (their earlier ones already in the live row): "
        f"live {f.get('live_ndcg10_later_requests', nan):.3f} / frozen "
        f"{f.get('frozen_ndcg10_later_requests', nan):.3f}; fallbacks live {f['live_fallbacks']}"
        f" / frozen {f['frozen_fallbacks']} / popular {f['popular_fallbacks']}; replay "
        f"{f['replay_seconds']:.0f} s{stopped}"
    )


def run_headline(
    settings: Settings,
    producer: Any,
    *,
    dataset: str,
    ratings: pd.DataFrame,
    cutoff_ms: int,
    catalogue: Collection[str],
    loop_users: Collection[str],
    live_address: str,
    frozen_address: str,
    events_per_user: int = 3,
    max_seconds: float | None = None,
    plot: Path | None = None,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> Headline:
    """Replay, ask, score (module docstring, step 4). The live worker must be running and caught
    up with the past, the frozen server started after ``freeze``; ``producer`` publishes the
    replay to the live deployment's events topic. With ``plot``, also writes the plot there and
    the figures next to it (``.json``)."""
    from benchmarks.live import plot_arms, replay_log
    from benchmarks.output import write_json
    from evaluation.baselines import CatalogueIndex, popularity_counts
    from features.store import FeastOnlineStore
    from interactions.replay import rating_events
    from interactions.sequences import events_before, user_sequences
    from serving.client import RecommenderClient
    from streams.progress import wait_until_caught_up

    future, requests = headline_plan(
        ratings,
        cutoff_ms,
        catalogue=catalogue,
        loop_users=loop_users,
        events_per_user=events_per_user,
        seed=seed,
    )
    replayed_until = int(future["timestamp_ms"].max()) if len(future) else cutoff_ms
    say(
        f"      replaying the {len(future):,} ratings after the cut-off of every user outside the "
        f"closed loop (to {pd.Timestamp(replayed_until, unit='ms'):%Y-%m-%d}); {len(requests)} are "
        f"requests, each warm user's first {events_per_user} "
        f"({len({r.user_id for r in requests})} users): before a request's events go to Kafka, "
        "the live server, the frozen one and the popular slate are asked for 10 items"
    )
    topic = settings.topic("events")
    live_store = FeastOnlineStore(settings.redis, settings.deployment)
    watch_store = FeastOnlineStore(settings.redis, settings.deployment)  # the watch thread's own
    clients = {
        role: RecommenderClient(address, timeout_s=5.0)
        for role, address in (("live", live_address), ("frozen", frozen_address))
    }
    try:
        log = replay_log(
            future,
            list(rating_events(dataset, future)),
            requests,
            producer=producer,
            topic=topic,
            clients=clients,
            read_live_rows=live_store.read_users,
            read_watched_rows=watch_store.read_users,
            max_exclude=settings.serving.max_exclude,
            max_seconds=max_seconds,
        )
        wait_until_caught_up(settings, 300)  # the loop starts on the replay applied
    finally:
        for client in clients.values():
            client.close()
        live_store.close()
        watch_store.close()

    past = events_before(ratings, cutoff_ms)
    items = CatalogueIndex(sorted(set(catalogue)))
    popularity = popularity_counts(user_sequences(past), items)
    figures, ranks = arm_figures(log, items.items, popularity, past["user_id"].nunique(), seed=seed)
    figures.update(
        {
            "dataset": dataset,
            "cutoff_ms": cutoff_ms,
            "events_per_user": events_per_user,
            "replayed_until_ms": replayed_until,
            "replay_stopped_early": log.stopped_early,
            "requests_planned": len(requests),
        }
    )
    figures = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in figures.items()}
    if plot is not None:
        write_json(plot.with_suffix(".json"), figures)
        if figures["live_requests"]:
            served = [s for s in log.served if all(a in s.answers for a in ranks)]
            days, by_arm = over_replay_time(served, ranks, bins=min(4, len(served)))
            plot_arms(days, by_arm, figures, plot, note="SMALL SAMPLE")
    return Headline(
        figures, log, replayed_until, headline_line(dataset, figures), headline_details(figures)
    )
