"""The Faust worker on the real broker and Redis: features, dead letters, order-insensitivity,
crash recovery and group membership changes (docs/architecture.md, event-time rules).

Tests that only feed a running worker take a ``lane`` of the session's shared worker; those that
kill, add or stop workers start their own (``start_worker``)."""

from __future__ import annotations

import random

import orjson
import pytest
from streams_harness import (
    Lane,
    consumed,
    encoded,
    make_events,
    produce,
    read_topic,
    reference,
    reference_transitions,
    store_matches,
    stored_transitions,
    wait_for,
)

from core.settings import Settings
from features.offline import OfflineEventLog
from features.store import FeastOnlineStore

pytestmark = pytest.mark.integration


def malformed(t0: int) -> dict[str, bytes]:
    """Payloads the worker must dead-letter, by the reason it must give."""
    return {
        "invalid_json": b'{"event_id": "x", ',
        "not_an_object": b'"just a string"',
        "invalid_field": orjson.dumps(
            {
                "event_id": "w1",
                "event_type": "view",
                "user_id": 7,
                "item_id": "i1",
                "event_time": t0,
            }
        ),
        "missing_field": orjson.dumps({"event_id": "m1", "event_type": "view", "event_time": t0}),
        "too_large": orjson.dumps(
            {
                "event_id": "big",
                "event_type": "view",
                "user_id": "u0",
                "item_id": "x" * 70_000,
                "event_time": t0,
            }
        ),
        "unknown_event_type": orjson.dumps(
            {
                "event_id": "t1",
                "event_type": "teleport",
                "user_id": "u0",
                "item_id": "i1",
                "event_time": t0,
            }
        ),
        "bad_event_time": orjson.dumps(
            {
                "event_id": "p1",
                "event_type": "view",
                "user_id": "u0",
                "item_id": "i1",
                "event_time": "1970-01-01T00:00:00Z",
            }
        ),
        "invalid_utf8": b'{"event_id": "\xff\xfe", "user_id": "u0"}',
    }


def test_events_become_features_and_bad_input_goes_to_dead_letters_or_late_events(
    lane: Lane,
) -> None:
    settings, t0, u0, i0 = lane.settings, lane.t0, lane.id("u0"), lane.id("i0")
    events = make_events(40, seed=1, users=2, tag=lane.tag, t0=t0)
    # After the valid events: a far-future event (dead letter), a straggler beyond the lateness
    # behind u0's partition watermark (late topic) and odd unicode (applied).
    future = {**events[0], "event_id": lane.id("fut"), "event_time": "2150-01-01T00:00:00Z"}
    straggler = {**events[0], "event_id": lane.id("late"), "event_time": t0 - 3_600_000}
    unicode_event = {
        **events[-1],
        "event_id": lane.id("ü-🙂"),
        "user_id": u0,
        "item_id": lane.id("ítem\u200b🙂"),
        "event_time": events[-1]["event_time"] + 1,
    }
    good = [*events, unicode_event]
    half = len(events) // 2
    bad = malformed(t0)
    messages = encoded(events[:half])
    messages += [(u0.encode(), payload) for payload in bad.values()]
    messages += encoded(events[half:]) + encoded([future, straggler, unicode_event])

    catalog = [
        {
            "event_id": lane.id("c1"),
            "item_id": i0,
            "title": "Heat (1995)",
            "categories": ["Action"],
            "event_time": t0,
            "created_time": t0 - 86_400_000,
        }
    ]
    slate = {
        "request_id": lane.id("r1"),
        "user_id": lane.id("u1"),
        "event_time": t0 + 5_000,
        "model_version": "m",
        "items": [
            {"item_id": i, "position": n, "score": 1.0, "source": "ann", "propensity": 0.5}
            for n, i in enumerate([i0, lane.id("i1")])
        ],
    }

    produce(settings, "events", messages)
    produce(settings, "items", [(i0.encode(), orjson.dumps(c)) for c in catalog])
    produce(settings, "impressions", [(lane.id("u1").encode(), orjson.dumps(slate))])
    store = FeastOnlineStore(settings.redis, settings.deployment)
    users, items = reference(good, catalog, [slate])
    wait_for(lambda: store_matches(store, users, items), what="feature rows")
    assert items[i0].title == "Heat (1995)" and items[i0].impressions == 1

    # The shared namespace's topics hold other tests' records too: only this test's keys count.
    mine = lane.tag.encode()
    dead = read_topic(settings, "dead-letters", len(bad) + 1, key_prefix=mine)
    letters = [orjson.loads(m.value()) for m in dead]
    assert sorted(letter["reason"] for letter in letters) == sorted([*bad, "future_event_time"])
    assert all(letter["source_topic"] == settings.topic("events") for letter in letters)
    late = read_topic(settings, "late-events", 1, key_prefix=mine)
    assert [orjson.loads(m.value())["event_id"] for m in late] == [lane.id("late")]
    assert store.read_users([u0])[u0].recent_items[-1] == lane.id("ítem\u200b🙂")


def test_two_namespaces_fed_different_orders_end_identical(lane: Lane, start_worker) -> None:
    settings = lane.settings  # the shared worker's, fed in order; the other has its own worker
    other = Settings(
        namespace=settings.namespace + "b",
        data_dir=settings.data_dir,
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        REDIS_URL=settings.redis.url.get_secret_value(),
    )
    events = make_events(60, seed=2, tag=lane.tag, t0=lane.t0)
    # The second order swaps events up to 30 s apart (allowed lateness is 60 s) and repeats some.
    rng = random.Random(7)
    shuffled = sorted(events, key=lambda e: e["event_time"] + rng.randint(0, 30_000))
    shuffled += rng.sample(events, 10)
    try:
        start_worker(other)
        produce(settings, "events", encoded(events))
        produce(other, "events", encoded(shuffled))
        users, items = reference(events)
        first = FeastOnlineStore(settings.redis, settings.deployment)
        second = FeastOnlineStore(other.redis, other.deployment)
        wait_for(lambda: store_matches(first, users, items), what="first namespace")
        wait_for(lambda: store_matches(second, users, items), what="second namespace")
        # Every other output too: item transitions (an event arriving out of order retracts
        # and re-adds what it changed) and the offline log.
        expected = reference_transitions(events)
        tag = lane.tag

        def mine(weights: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
            return {pair: w for pair, w in weights.items() if pair[0].startswith(tag)}

        def transitions_match(s: Settings) -> bool:
            stored = mine(stored_transitions(s))
            return stored.keys() == expected.keys() and all(
                abs(stored[k] - expected[k]) < 1e-9 for k in expected
            )

        wait_for(lambda: transitions_match(settings), what="first namespace's transitions")
        wait_for(lambda: transitions_match(other), what="second namespace's transitions")

        def logged(s: Settings) -> list[str]:
            ids = OfflineEventLog(s.deployment).read()["event_id"]
            return sorted(i for i in ids if str(i).startswith(tag))

        want = sorted(str(e["event_id"]) for e in events)
        wait_for(lambda: logged(settings) == want, what="first namespace's offline log")
        wait_for(lambda: logged(other) == want, what="second namespace's offline log")
    finally:
        from stack.redis_server import delete_keys_with_prefix

        delete_keys_with_prefix(other.redis.url.get_secret_value(), f"{other.namespace}:")


def test_kill_9_mid_stream_then_restart_equals_an_uninterrupted_run(
    settings: Settings, start_worker
) -> None:
    events = make_events(600, seed=3, users=6, items=12)
    worker = start_worker(settings)
    store = FeastOnlineStore(settings.redis, settings.deployment)
    produce(settings, "events", encoded(events[:300]))
    wait_for(lambda: bool(store.read_users([f"u{n}" for n in range(6)])), what="first rows")
    produce(settings, "events", encoded(events[300:]))
    worker.kill9()  # mid-stream: the second half is (at least partly) unprocessed
    start_worker(settings)
    users, items = reference(events)
    wait_for(lambda: store_matches(store, users, items), what="recovered features")
    # The other outputs survive the crash too: the offline log holds every event (re-delivered
    # copies are dropped by its reader), and the transitions, committed with the user states,
    # were added exactly once.
    wait_for(lambda: consumed(settings, ["events"]), what="events consumed")
    logged = OfflineEventLog(settings.deployment).read()["event_id"]
    assert sorted(logged) == sorted(str(e["event_id"]) for e in events)
    expected = reference_transitions(events)
    stored = stored_transitions(settings)
    assert stored.keys() == expected.keys()
    assert [stored[k] for k in sorted(expected)] == pytest.approx(
        [expected[k] for k in sorted(expected)]
    )


def test_a_second_worker_joining_and_the_first_leaving_lose_and_duplicate_nothing(
    settings: Settings, start_worker
) -> None:
    events = make_events(450, seed=4, users=8, items=10)
    store = FeastOnlineStore(settings.redis, settings.deployment)
    first = start_worker(settings)
    produce(settings, "events", encoded(events[:150]))
    wait_for(lambda: bool(store.read_users(["u0", "u1", "u2"])), what="first worker's rows")
    start_worker(settings)  # joins the group: partitions are shared
    produce(settings, "events", encoded(events[150:300]))
    users, items = reference(events[:300])
    wait_for(lambda: store_matches(store, users, items), what="rows after the join")
    # Leaves the group (the second worker takes every partition), by itself on SIGTERM: its
    # agents end when Faust stops them, and the runtime's close flushes what it holds.
    assert first.stop(), f"the first worker did not stop on SIGTERM: {first.log_path}"
    assert first.process.returncode == 0
    produce(settings, "events", encoded(events[300:]))
    users, items = reference(events)
    wait_for(lambda: store_matches(store, users, items), what="rows after the leave")
