"""``LiveAttribution``: a worker keeps the attribution states it committed instead of rebuilding
them from the store every batch, and writes each batch's delta only. Whatever the batches, with
idle advances between them, another writer changing a stored state and commits that are lost,
the outcomes and every stored state are those of the worker that rebuilds each state from the
store and writes it whole."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bandits.attribution import AttributionState, Input
from streams.bandit_steps import (
    AttributionEffects,
    BanditSteps,
    LiveAttribution,
    encode_outcome,
)
from streams.handlers import SourceRecord
from streams.state_port import AttributionHead, InMemoryStateStore
from tests.unit.streams.test_bandit_interleaving import (
    ATTRIBUTION,
    CONFIG,
    END,
    TOPICS,
    _batches,
    _closing,
    _interleave,
    _records,
    topic_logs,
)

PARTITIONS = (0, 1)


def _run(batches, live, idle_after, foreign_after, fail_after):
    """Attribution batch by batch (an idle advance of the impressions input after the batches in
    ``idle_after``; another writer re-saving partition 0's snapshot, rebuilt, after those in
    ``foreign_after``; a commit lost after those in ``fail_after``): outcomes, late, snapshots."""
    store, steps = InMemoryStateStore(), BanditSteps(CONFIG)
    outcomes, late = [], 0
    for n, batch in enumerate(batches):
        effects = steps.attribution(store, batch, now_ms=END, live=live)
        if n in fail_after:
            continue  # the commit failed: nothing stored, nothing handed to ``live``
        store.commit(effects.commit)
        if live is not None:
            live.committed(effects)
        outcomes += effects.outcomes
        late += effects.late
        if n in idle_after:
            idle = [(Input.IMPRESSIONS, p) for p in PARTITIONS]
            active = [(Input.EVENTS, p) for p in PARTITIONS]
            advanced = steps.advance_idle(store, idle, active, live)
            store.commit(advanced.commit)
            if live is not None:
                live.committed(advanced)
            outcomes += advanced.outcomes
        if n in foreign_after and 0 in store.attribution:
            # Another writer (a worker that owned the partition meanwhile) drops its buffered
            # rewards: a different stored snapshot.
            rebuilt = AttributionState.from_dict(store.attribution[0], ATTRIBUTION)
            rebuilt.rewards.clear()
            store.attribution[0] = rebuilt.to_dict()
            store.attribution_versions[0] = "another-writer:1"
    records = [
        SourceRecord(TOPICS.bandit_outcomes, 0, n, encode_outcome(o))
        for n, o in enumerate(outcomes)
    ]
    store.commit(steps.outcomes(store, records).commit)
    decided = sorted((o.outcome_id, o.success, o.reason) for o in outcomes)
    return decided, late, dict(store.attribution), store.posterior_hashes


@settings(max_examples=150, deadline=None)
@given(topic_logs(), st.data())
def test_kept_states_give_what_rebuilt_states_give(logs, data) -> None:
    slates, events = logs
    records = _interleave(
        data, _records(TOPICS.impressions, slates), _records(TOPICS.events, events)
    )
    batches = [*_batches(data, records), _closing(events)]
    marks = st.sets(st.integers(0, len(batches) - 1), max_size=3)
    idle_after, foreign_after = data.draw(marks), data.draw(marks)
    fail_after = data.draw(st.sets(st.integers(0, len(batches) - 2), max_size=2))

    live = LiveAttribution()
    kept = _run(batches, live, idle_after, foreign_after, fail_after)
    rebuilt = _run(batches, None, idle_after, foreign_after, fail_after)
    assert kept == rebuilt


def test_a_state_is_taken_only_while_the_stored_version_is_its_own() -> None:
    live = LiveAttribution()
    state = AttributionState()
    effects = AttributionEffects(states={3: state})
    effects.commit.attribution[3] = delta = state.delta(live.next_version())
    live.committed(effects)
    assert live.take(3, AttributionHead(delta.version, {})) is state  # read back from the store
    live.committed(effects)
    assert live.take(3, AttributionHead("another-writer:1", {})) is None  # dropped: rebuilt
    assert len(live) == 0 and live.take(3, None) is None
    assert (live.kept, live.rebuilt) == (1, 2)  # what the worker exports as a metric


def test_versions_of_two_workers_never_meet() -> None:
    one, two = LiveAttribution(), LiveAttribution()
    versions = [one.next_version() for _ in range(3)] + [two.next_version() for _ in range(3)]
    assert len(set(versions)) == 6
