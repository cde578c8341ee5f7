"""CPU the worker's drift monitors add per record (``streams.drift_steps``), without a broker.

Synthetic records of one partition go through ``DriftSteps.user_records`` in batches, on the
in-memory state port, as the ``interactions`` agent hands them over (events already decoded by
its steps, so the monitors do not decode them again): dense events (100 ms apart), events 10 s
apart (one per window) and sparse historic data (7 h apart, as a MovieLens replay has per
partition), and slates of ten items. Each figure is process CPU time per record, serialising the
monitor state once per batch included; the worker's own cost per event is in
``docs/benchmarks/ingest.md``.

    aether bench drift-steps [--records 20000] [--batch 200] [--max-gap-windows N] [--json PATH]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_description
from benchmarks.output import print_figures, write_json
from events import decode, decode_interaction, encode
from events.models import Impression, ImpressionItem, Interaction
from monitoring import MonitorConfig
from streams.drift_steps import DriftConfig, DriftSteps
from streams.handlers import SourceRecord
from streams.state_port import InMemoryStateStore
from streams.topics import TopicNames

TOPICS = TopicNames(*(f"bench.{name}" for name in TopicNames.__dataclass_fields__))
T0 = 1_600_000_000_000
TYPES = ("view", "click", "rating", "dismiss")
SOURCES = ("ann", "cooccurrence", "popular", "fresh")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=20_000, help="records per stream")
    parser.add_argument("--batch", type=int, default=200, help="records per batch")
    parser.add_argument(
        "--max-gap-windows",
        type=int,
        default=MonitorConfig().max_gap_windows,
        help="empty windows fed per silence (the monitor's setting; default: its default)",
    )
    parser.add_argument("--json", type=Path, default=None)


def command(args: argparse.Namespace) -> int:
    n, batch = args.records, args.batch
    config = DriftConfig(
        topics=TOPICS, user_monitor=MonitorConfig(max_gap_windows=args.max_gap_windows)
    )
    figures: dict[str, Any] = {
        "drift_steps_events_dense_us": cost(config, events(n, 100), batch),
        "drift_steps_events_10s_apart_us": cost(config, events(n, 10_000), batch),
        "drift_steps_events_7h_apart_us": cost(config, events(n, 7 * 3_600_000), batch),
        "drift_steps_slates_us": cost(config, slates(n // 4, 400), batch),
        "records": n,
        "batch": batch,
        "max_gap_windows": args.max_gap_windows,
        "machine": machine_description(),
    }
    print_figures(figures)
    write_json(args.json, figures)
    return 0


def events(n: int, gap_ms: int) -> list[SourceRecord]:
    rng = random.Random(0)
    out = []
    for k in range(n):
        event = Interaction(
            event_id=f"e{k}",
            event_type=rng.choice(TYPES),
            user_id=f"u{k % 300}",
            item_id=f"i{rng.randrange(2_000)}",
            event_time=T0 + gap_ms * k,
        )
        out.append(SourceRecord(TOPICS.events, 0, k, encode(event), b"u"))
    return out


def slates(n: int, gap_ms: int) -> list[SourceRecord]:
    rng = random.Random(1)
    out = []
    for k in range(n):
        items = tuple(
            ImpressionItem(
                item_id=f"i{rng.randrange(2_000)}",
                position=p,
                score=rng.random(),
                source=rng.choice(SOURCES),
                propensity=1.0,
            )
            for p in range(10)
        )
        slate = Impression(
            request_id=f"r{k}",
            user_id=f"u{k % 300}",
            items=items,
            model_version="m",
            event_time=T0 + gap_ms * k,
        )
        out.append(SourceRecord(TOPICS.impressions, 0, k, encode(slate), b"u"))
    return out


def cost(config: DriftConfig, records: list[SourceRecord], batch: int) -> float:
    """CPU µs per record, the records handed over decoded (as the worker's steps do)."""
    decoded = {(r.topic, r.partition, r.offset): _decoded(r) for r in records}
    steps, store = DriftSteps(config), InMemoryStateStore()
    started = time.process_time()
    for start in range(0, len(records), batch):
        effects = steps.user_records(store, records[start : start + batch], None, None, decoded)
        store.commit(effects.commit)
    return round((time.process_time() - started) / len(records) * 1e6, 1)


def _decoded(record: SourceRecord) -> Interaction | Impression:
    if record.topic == TOPICS.events:
        return decode_interaction(record.value)
    return decode(record.value, Impression)
