"""Benchmark of the online feature store on the configured Redis.

Measures, in a throw-away namespace (its keys are deleted afterwards):

* read latency of 1 user row and of 200 item rows, through the direct Redis path
  (``read_path="redis"``, the serving default; item rows warm in its decoded-row memo, and cold)
  and through Feast's ``get_online_features``;
* write throughput of 1,000-row batches through ``FeastOnlineStore`` (atomic newer-wins writes),
  next to Feast's own ``push`` of the same 1,000 rows for comparison.

    aether bench features --json artifacts/features_bench.json

``measure(settings, json_path)`` is what ``aether bench features`` calls; it writes one flat JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from benchmarks.machine import machine_description
from benchmarks.output import print_figures
from core.settings import Settings, load_settings
from features.rows import ItemFeatureRow, UserFeatureRow
from features.schema import ACTIVITY_COUNT_FEATURES, USER_PUSH_SOURCE
from features.store import FeastOnlineStore, apply_repo

T0 = 1_700_000_000_000


def _user_rows(
    n: int, t: int, rng: np.random.Generator, sequence_length: int
) -> list[UserFeatureRow]:
    rows = []
    for u in range(n):
        recent = tuple(f"i{i}" for i in rng.integers(0, 10_000, sequence_length))
        dismissed = tuple(f"i{i}" for i in rng.integers(0, 10_000, 5))
        rows.append(
            UserFeatureRow(
                user_id=f"u{u}",
                event_time_ms=t,
                recent_items=recent,
                dismissed_items=dismissed,
                activity_counts={
                    name: int(rng.integers(0, 50)) for name in ACTIVITY_COUNT_FEATURES[::2]
                },
                recent_interactions=recent,  # as many items: what a full row carries
            )
        )
    return rows


def _item_rows(n: int, t: int, rng: np.random.Generator) -> list[ItemFeatureRow]:
    return [
        ItemFeatureRow(
            item_id=f"i{i}",
            event_time_ms=t,
            popularity=float(rng.random() * 100),
            impressions=int(rng.integers(0, 10_000)),
            clicks=int(rng.integers(0, 500)),
            ctr=float(rng.random()),
            created_time_ms=T0 - int(rng.integers(0, 10**10)),
            title=f"Item {i} (1995)",
            categories=("Comedy", "Drama"),
            available=True,
        )
        for i in range(n)
    ]


def _latencies_ms(
    read: Callable[[list[str]], Any], requests: list[list[str]], label: str
) -> dict[str, float]:
    """Time ``read(ids)`` once per pre-drawn request (drawing ids is not timed)."""
    for ids in requests[:20]:  # warm connections, the registry cache, the script cache
        read(ids)
    samples = []
    for ids in tqdm(requests, desc=label, leave=False):
        start = time.perf_counter()
        read(ids)
        samples.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": float(np.percentile(samples, 50)),
        "p99_ms": float(np.percentile(samples, 99)),
        "mean_ms": float(np.mean(samples)),
    }


def _push_frame(rows: list[UserFeatureRow]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user_id": [r.user_id for r in rows],
            "event_timestamp": pd.to_datetime([r.event_time_ms for r in rows], unit="ms", utc=True),
            "created_timestamp": pd.Timestamp(0, unit="ms", tz="UTC"),
            "event_time_ms": [r.event_time_ms for r in rows],
            "recent_items": [list(r.recent_items) for r in rows],
            "dismissed_items": [list(r.dismissed_items) for r in rows],
            "recent_interactions": [list(r.recent_interactions) for r in rows],
        }
    )
    for name in ACTIVITY_COUNT_FEATURES:
        frame[name] = pd.array([r.activity_counts.get(name) for r in rows], dtype="Int64")
    return frame


def measure(
    settings: Settings,
    json_path: Path | None,
    *,
    repeats: int = 300,
    write_batches: int = 10,
    seed: int = 0,
    machine: str | None = None,
) -> dict[str, Any]:
    """Measure and write the figures; returns them too."""
    rng = np.random.default_rng(seed)
    namespace = f"bench_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as data_dir:
        bench = settings.model_copy(update={"namespace": namespace, "data_dir": Path(data_dir)})
        feast = apply_repo(bench.redis, bench.deployment)
        direct = FeastOnlineStore(bench.redis, bench.deployment, read_path="redis", store=feast)
        via_sdk = FeastOnlineStore(bench.redis, bench.deployment, read_path="feast", store=feast)
        n_users, n_items = 1_000, 10_000
        users = _user_rows(n_users, T0, rng, settings.stream.sequence_length)
        try:
            figures = _measure(direct, via_sdk, feast, users, n_items, rng, repeats, write_batches)
        finally:
            direct.delete_users([u.user_id for u in users])
            direct.delete_items(f"i{i}" for i in range(n_items))
            direct.close()
            via_sdk.close()
    figures.update(
        {
            "redis_address": settings.redis.url.get_secret_value().split("@")[-1],
            "user_sequence_length": settings.stream.sequence_length,
            "repeats": repeats,
            "machine": machine or machine_description(),
        }
    )
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return figures


def _measure(
    direct: FeastOnlineStore,
    via_sdk: FeastOnlineStore,
    feast: Any,
    users: list[UserFeatureRow],
    n_items: int,
    rng: np.random.Generator,
    repeats: int,
    write_batches: int,
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    # Writes: every batch newer than the last, so each row is really written.
    seconds = []
    for batch in range(write_batches):
        rows = [
            UserFeatureRow(
                u.user_id,
                T0 + batch,
                u.recent_items,
                u.dismissed_items,
                u.activity_counts,
                u.recent_interactions,
            )
            for u in users
        ]
        start = time.perf_counter()
        direct.write_users(rows)
        seconds.append(time.perf_counter() - start)
    figures["write_users_1000_batch_p50_ms"] = float(np.median(seconds) * 1000)
    figures["write_users_rows_per_s"] = float(len(users) / np.median(seconds))
    items = _item_rows(n_items, T0, rng)
    start = time.perf_counter()
    for first in range(0, n_items, 1000):
        direct.write_items(items[first : first + 1000])
    figures["write_items_rows_per_s"] = float(n_items / (time.perf_counter() - start))

    frame = _push_frame(
        [
            UserFeatureRow(
                u.user_id,
                T0 + write_batches + 1,
                u.recent_items,
                u.dismissed_items,
                u.activity_counts,
                u.recent_interactions,
            )
            for u in users
        ]
    )
    feast.push(USER_PUSH_SOURCE, frame.iloc[:10])  # warm-up
    start = time.perf_counter()
    feast.push(USER_PUSH_SOURCE, frame)
    figures["feast_push_users_1000_ms"] = float((time.perf_counter() - start) * 1000)

    user_requests = [[users[int(i)].user_id] for i in rng.integers(len(users), size=repeats)]
    item_requests = [
        [f"i{i}" for i in rng.choice(n_items, 200, replace=False)] for _ in range(repeats)
    ]
    for path, store in (("redis", direct), ("feast", via_sdk)):
        one_user = _latencies_ms(store.read_users, user_requests, f"{path}: 1 user")
        items_200 = _latencies_ms(store.read_items, item_requests, f"{path}: 200 items")
        figures.update({f"read_1_user_{path}_{k}": v for k, v in one_user.items()})
        figures.update({f"read_200_items_{path}_{k}": v for k, v in items_200.items()})
    # The direct path memoises decoded item rows; a fresh store per request shows the cost
    # when none of the 200 rows has been seen (just after start, or after every item changed).
    cold = _latencies_ms(
        lambda ids: FeastOnlineStore(
            direct.redis_settings, direct.deployment, client=direct.client
        ).read_items(ids),
        item_requests,
        "redis: 200 items, cold",
    )
    figures.update({f"read_200_items_redis_cold_{k}": v for k, v in cold.items()})
    return figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--repeats", type=int, default=300)


def command(args: argparse.Namespace) -> int:
    figures = measure(load_settings(), args.json, repeats=args.repeats)
    print_figures(figures)
    return 0
