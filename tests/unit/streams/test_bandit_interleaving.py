"""Attribution reads two topics, ``<ns>.impressions`` and ``<ns>.events``, in no set order
(issue 21): however a worker interleaves their records, and however it cuts them into batches,
the decided slots, the credited clicks and the posteriors are the same — those of the offline
rule over the time-ordered log (``bandits.impression_ope.attributed_outcomes``) — as long as no
record is more than the allowed lateness behind its own topic's watermark.

One watermark for both topics (the code before issue 21) fails this: reading the events of a
partition ahead of its impressions made the impressions late.
"""

from __future__ import annotations

from collections import Counter

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bandits.attribution import AttributionConfig
from bandits.impression_ope import attributed_outcomes
from bandits.posterior import Outcome
from core.settings import Settings
from events.models import Impression, Interaction
from streams.bandit_steps import BanditConfig, BanditSteps, encode_outcome
from streams.eventtime import Lateness
from streams.handlers import SourceRecord
from streams.state_port import InMemoryStateStore
from streams.testing import interaction
from streams.topics import TopicNames

T0 = 1_700_000_000_000
MIN = 60_000
WINDOW = 10 * MIN
LATENESS = 2 * MIN
TOPICS = TopicNames.for_settings(Settings(namespace="unit"))
ATTRIBUTION = AttributionConfig(window_ms=WINDOW, allowed_lateness_ms=LATENESS)
CONFIG = BanditConfig(
    TOPICS, attribution=ATTRIBUTION, policy=Lateness(allowed_lateness_ms=LATENESS)
)
USERS = {"u1": 0, "u2": 1, "u3": 0}  # user -> partition (co-partitioned topics)
ITEMS = ["a", "b", "c"]
END = T0 + 24 * 60 * MIN  # a closing view per partition, past every window


def _times(draw: st.DrawFn, count: int, span_ms: int) -> list[int]:
    """Event times in a topic's order, none more than the lateness behind the largest before it:
    sorted bases, each moved up by less than the lateness."""
    bases = sorted(draw(st.lists(st.integers(0, span_ms), min_size=count, max_size=count)))
    return [T0 + b + draw(st.integers(0, LATENESS - 1)) for b in bases]


@st.composite
def topic_logs(draw: st.DrawFn) -> tuple[list[Impression], list[Interaction]]:
    """One log per topic, each in its own (Kafka) order."""
    n_slates = draw(st.integers(1, 6))
    slates = []
    for n, t in enumerate(_times(draw, n_slates, 40 * MIN)):
        items = draw(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=3, unique=True))
        slates.append(
            Impression(
                request_id=f"r{n}",
                user_id=draw(st.sampled_from(sorted(USERS))),
                event_time=t,
                model_version="m",
                items=[
                    {"item_id": i, "position": p, "score": 1.0, "source": "ann", "propensity": 0.5}
                    for p, i in enumerate(items)
                ],
            )
        )
    n_events = draw(st.integers(1, 12))
    events = []
    for n, t in enumerate(_times(draw, n_events, 50 * MIN)):
        kind = draw(st.sampled_from(["click", "purchase", "dismiss", "view"]))
        user, item = draw(st.sampled_from(sorted(USERS))), draw(st.sampled_from(ITEMS))
        body = interaction(f"e{n}", user, item, kind, t)
        if draw(st.booleans()):  # a reward from a slate: that slate's user's
            slate = slates[draw(st.integers(0, n_slates - 1))]
            body["request_id"], body["user_id"] = slate.request_id, slate.user_id
        events.append(Interaction.model_validate(body))
    return slates, events


def _records(topic: str, log: list[Impression] | list[Interaction]) -> list[SourceRecord]:
    """The topic's records at increasing offsets per partition, as a broker appends them."""
    offsets: Counter[int] = Counter()
    records = []
    for event in log:
        partition = USERS[event.user_id]
        records.append(
            SourceRecord(topic, partition, offsets[partition], event.model_dump_json().encode())
        )
        offsets[partition] += 1
    return records


def _interleave(
    data: st.DataObject, left: list[SourceRecord], right: list[SourceRecord]
) -> list[SourceRecord]:
    """A merge that keeps each topic's own order: what a consumer of both topics may read."""
    merged, i, j = [], 0, 0
    while i < len(left) or j < len(right):
        if j == len(right) or (i < len(left) and data.draw(st.booleans())):
            merged.append(left[i])
            i += 1
        else:
            merged.append(right[j])
            j += 1
    return merged


def _closing(events: list[Interaction]) -> list[SourceRecord]:
    """A view per partition at ``END`` on the events topic, after the topic's own records."""
    taken = Counter(USERS[e.user_id] for e in events)
    return [
        SourceRecord(
            TOPICS.events,
            partition,
            taken[partition],
            orjson.dumps(interaction(f"end{partition}", user, "z", "view", END)),
        )
        for user, partition in {"u1": 0, "u2": 1}.items()
    ]


def _run(batches: list[list[SourceRecord]]) -> tuple[list[tuple[str, bool, str]], object, int]:
    """Attribution batch by batch, then posteriors: (decided slots, posterior hashes, late)."""
    store, steps = InMemoryStateStore(), BanditSteps(CONFIG)
    outcomes: list[Outcome] = []
    late = 0
    for batch in batches:
        effects = steps.attribution(store, batch, now_ms=END)
        store.commit(effects.commit)
        outcomes += effects.outcomes
        late += effects.late
    records = [
        SourceRecord(TOPICS.bandit_outcomes, 0, n, encode_outcome(o))
        for n, o in enumerate(outcomes)
    ]
    store.commit(steps.outcomes(store, records).commit)
    decided = sorted((o.outcome_id, o.success, o.reason) for o in outcomes)
    return decided, store.posterior_hashes, late


def _batches(data: st.DataObject, records: list[SourceRecord]) -> list[list[SourceRecord]]:
    batches, start = [], 0
    while start < len(records):
        size = data.draw(st.integers(1, 4))
        batches.append(records[start : start + size])
        start += size
    return batches


@settings(max_examples=200, deadline=None)
@given(topic_logs(), st.data())
def test_outcomes_do_not_depend_on_how_the_two_topics_interleave(logs, data) -> None:
    slates, events = logs
    impressions = _records(TOPICS.impressions, slates)
    interactions = _records(TOPICS.events, events)
    one_way = _interleave(data, impressions, interactions)
    other_way = _interleave(data, impressions, interactions)
    closing = [_closing(events)]

    decided, posteriors, late = _run([*_batches(data, one_way), *closing])
    again, posteriors_again, late_again = _run([*_batches(data, other_way), *closing])

    expected = sorted(
        (o.outcome_id, o.success, o.reason)
        for o in attributed_outcomes(slates, events, ATTRIBUTION).values()
    )
    assert decided == again == expected
    assert late == late_again == 0
    assert posteriors == posteriors_again
    shown = {f"{s.request_id}|{i.item_id}" for s in slates for i in s.items}
    assert {outcome_id for outcome_id, _, _ in decided} == shown


def test_a_snapshot_from_before_per_topic_watermarks_holds_both_topics_at_its_watermark() -> None:
    """Stored states keep working: their one watermark becomes both inputs' watermark."""
    store, steps = InMemoryStateStore(), BanditSteps(CONFIG)
    pending = {
        "request_id": "r0",
        "user_id": "u1",
        "item_id": "a",
        "impression_ms": T0,
        "segment": "*",
        "position": 0,
        "propensity": 0.5,
        "positive": True,
    }
    store.attribution[0] = {"watermark_ms": T0, "pending": [pending], "rewards": {}, "seen": {}}
    old_slate = Impression(
        request_id="r1",
        user_id="u1",
        event_time=T0 - LATENESS - 1,
        model_version="m",
        items=[{"item_id": "b", "position": 0, "score": 1.0, "source": "ann", "propensity": 0.5}],
    )
    records = [
        SourceRecord(TOPICS.impressions, 0, 0, old_slate.model_dump_json().encode()),
        SourceRecord(
            TOPICS.events,
            0,
            0,
            orjson.dumps(interaction("v", "u1", "z", "view", T0 + WINDOW + LATENESS)),
        ),
    ]
    effects = steps.attribution(store, records, now_ms=END)
    assert effects.late == 1  # the slate is behind the impressions watermark it inherited
    assert [(o.outcome_id, o.success) for o in effects.outcomes] == [("r0|a", True)]
    assert effects.commit.attribution[0].watermarks == {
        "events": T0 + WINDOW + LATENESS,
        "impressions": T0,
    }
