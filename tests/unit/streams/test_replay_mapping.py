"""MovieLens ratings → events (interactions.replay) and event-time pacing (streams.publish)."""

from __future__ import annotations

import pandas as pd

from events import decode, decode_interaction
from events.models import CatalogItem
from interactions.replay import ReplayMessage, catalog_events, rating_events
from streams.publish import publish

RATINGS = pd.DataFrame(
    {
        "user_id": ["1", "1", "2"],
        "item_id": ["10", "11", "10"],
        "rating": [5.0, 2.0, 3.0],
        "timestamp_ms": [1_000_000_000_000, 1_000_000_001_000, 1_000_000_002_000],
    }
)
ITEMS = pd.DataFrame(
    {
        "item_id": ["10", "11", "12"],
        "title": ["A (1995)", "B", "C"],
        "categories": [("Drama",), (), ("Comedy", "Drama")],
    }
)


def test_each_rating_maps_to_view_rating_and_click_or_dismiss() -> None:
    events = [decode_interaction(m.value) for m in rating_events("ml", RATINGS)]
    assert [(e.user_id, e.item_id, e.event_type.value) for e in events] == [
        ("1", "10", "view"),
        ("1", "10", "rating"),
        ("1", "10", "click"),
        ("1", "11", "view"),
        ("1", "11", "rating"),
        ("1", "11", "dismiss"),
        ("2", "10", "view"),
        ("2", "10", "rating"),
    ]
    assert events[1].value == 5.0 and events[0].event_id == "ml:1:10:view"
    assert len({e.event_id for e in events}) == len(events)


def test_replay_is_deterministic_and_limit_takes_the_first_ratings() -> None:
    assert list(rating_events("ml", RATINGS)) == list(rating_events("ml", RATINGS))
    assert {m.key for m in rating_events("ml", RATINGS, limit=2)} == {b"1"}


def test_catalog_items_are_created_at_their_first_rating() -> None:
    items = [decode(m.value, CatalogItem) for m in catalog_events("ml", RATINGS, ITEMS)]
    by_id = {i.item_id: i for i in items}
    assert by_id["11"].event_time_ms == 1_000_000_001_000
    assert by_id["12"].event_time_ms == 1_000_000_000_000  # never rated: the dataset's start
    assert by_id["12"].categories == ("Comedy", "Drama")


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append((topic, value))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_publish_paces_by_event_time_with_the_speed_factor() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    messages = [ReplayMessage(b"k", b"v", t) for t in (0, 10_000, 30_000)]
    producer = FakeProducer()
    sent = publish(
        producer,  # type: ignore[arg-type]
        "t",
        messages,
        speed=10.0,
        progress=False,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert sent == 3 and len(producer.sent) == 3
    assert sleeps == [1.0, 2.0]  # 10 s and 20 s of event time at 10×
