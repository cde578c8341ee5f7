"""Reward attribution + posterior updates: event-time rules (docs/architecture.md) as properties."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from bandits.attribution import (
    AttributionConfig,
    AttributionState,
    Rejected,
    WatermarkTick,
    apply_delta,
    attribute,
    replay,
)
from bandits.posterior import (
    GLOBAL_SEGMENT,
    Outcome,
    PosteriorConfig,
    PosteriorState,
    apply_outcome,
    decode_posteriors,
    posterior_read_plan,
)
from events.models import Impression, ImpressionItem, Interaction

T0 = 1_700_000_000_000
MIN = 60_000
WINDOW = 10 * MIN
POSTERIOR = PosteriorConfig(half_life_ms=30 * MIN)


def impression(request_id, t, items, user="u1", context=None):
    return Impression(
        request_id=request_id,
        user_id=user,
        event_time=t,
        model_version="m1",
        context=context or {},
        items=tuple(
            ImpressionItem(item_id=i, position=p, score=0.0, source="test", propensity=0.5)
            for p, i in enumerate(items)
        ),
    )


def reward(event_id, t, item, kind="click", request_id=None, user="u1"):
    return Interaction(
        event_id=event_id,
        event_type=kind,
        user_id=user,
        item_id=item,
        event_time=t,
        request_id=request_id,
    )


def outcomes_of(outputs):
    return sorted((o for o in outputs if isinstance(o, Outcome)), key=lambda o: o.outcome_id)


def run_pipeline(events, config):
    """Attribution then posterior aggregation; final states for comparison."""
    state, outputs = replay(events, config)
    posteriors = PosteriorState()
    for out in outputs:
        if isinstance(out, Outcome):
            posteriors, _ = apply_outcome(posteriors, out, POSTERIOR)
    return state, outcomes_of(outputs), posteriors


# -- generated event sets -----------------------------------------------------------------
ITEMS = ["a", "b", "c"]


@st.composite
def event_sets(draw):
    n_imp = draw(st.integers(1, 6))
    events = []
    for r in range(n_imp):
        user = draw(st.sampled_from(["u1", "u2"]))
        items = draw(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=3, unique=True))
        surface = draw(st.sampled_from(["home", "search", None]))
        events.append(
            impression(
                f"r{r}",
                T0 + draw(st.integers(0, 30 * MIN)),
                items,
                user=user,
                context={"surface": surface} if surface else {},
            )
        )
    for e in range(draw(st.integers(0, 10))):
        with_request = draw(st.booleans())
        events.append(
            reward(
                f"e{e}",
                T0 + draw(st.integers(0, 45 * MIN)),
                draw(st.sampled_from(ITEMS)),
                kind=draw(st.sampled_from(["click", "purchase", "add_to_cart", "dismiss", "view"])),
                request_id=f"r{draw(st.integers(0, n_imp - 1))}" if with_request else None,
                user=draw(st.sampled_from(["u1", "u2"])),
            )
        )
    return events


# Lateness covers the whole span, so no arrival order makes any event late.
NEVER_LATE = AttributionConfig(window_ms=WINDOW, allowed_lateness_ms=60 * MIN)
CLOSE = WatermarkTick(T0 + 10 * 60 * MIN)


@settings(max_examples=150, deadline=None)
@given(event_sets(), st.randoms(use_true_random=False), st.data())
def test_final_state_is_a_function_of_the_event_set(events, rnd, data):
    shuffled = list(events)
    rnd.shuffle(shuffled)
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=5))
    for dup in duplicates:  # re-deliveries anywhere after... or before the original
        shuffled.insert(rnd.randrange(len(shuffled) + 1), dup)
    s1, o1, p1 = run_pipeline([*events, CLOSE], NEVER_LATE)
    s2, o2, p2 = run_pipeline([*shuffled, CLOSE], NEVER_LATE)
    assert o1 == o2
    assert p1.to_dict() == p2.to_dict()
    assert s1.to_dict() == s2.to_dict()
    # every shown (request, item) is decided exactly once
    shown = {
        f"{e.request_id}|{i.item_id}" for e in events if isinstance(e, Impression) for i in e.items
    }
    assert {o.outcome_id for o in o1} == shown


@settings(max_examples=60, deadline=None)
@given(event_sets())
def test_replay_is_deterministic_and_state_round_trips(events):
    s1, o1, p1 = run_pipeline([*events, CLOSE], NEVER_LATE)
    _, o2, p2 = run_pipeline([*events, CLOSE], NEVER_LATE)
    assert (o1, p1.to_dict()) == (o2, p2.to_dict())
    assert AttributionState.from_dict(s1.to_dict(), NEVER_LATE).to_dict() == s1.to_dict()
    assert PosteriorState.from_dict(p1.to_dict()).to_dict() == p1.to_dict()


@settings(max_examples=150, deadline=None)
@given(event_sets(), st.data())
def test_deltas_written_one_after_another_hold_the_state(events, data):
    """A store that writes each batch's delta (``AttributionState.delta``) holds the state's
    snapshot after every batch: what was added, decided, marked positive, forgotten or expired
    is in the deltas, and the first delta of a rebuilt state replaces what was stored."""
    config = AttributionConfig(
        window_ms=WINDOW, allowed_lateness_ms=data.draw(st.sampled_from([0, MIN, 5 * MIN]))
    )
    cuts = sorted(data.draw(st.sets(st.integers(0, len(events)), max_size=4)))
    state, stored, start = AttributionState(), None, 0
    for n, stop in enumerate([*cuts, len(events)]):
        for event in events[start:stop]:
            state, _ = attribute(state, event, config)
        start = stop
        if data.draw(st.booleans()):  # a worker that rebuilt the state from the store
            state = AttributionState.from_dict(state.to_dict(), config)
        delta = state.delta(f"v{n}")
        stored = apply_delta(stored, delta)
        assert stored == state.to_dict() and delta.version == f"v{n}"
    state, _ = attribute(state, CLOSE, config)
    assert apply_delta(stored, state.delta("closed")) == state.to_dict()


def test_window_is_half_open():
    """A click exactly at the impression counts; one exactly at impression + window does not."""
    config = AttributionConfig(window_ms=WINDOW, allowed_lateness_ms=0)
    events = [
        impression("r1", T0, ["a"]),
        impression("r2", T0, ["b"]),
        reward("e1", T0, "a", request_id="r1"),
        reward("e2", T0 + WINDOW, "b", request_id="r2"),
        reward("e3", T0 + WINDOW - 1, "b", request_id="r1"),  # other slate: ignored
        WatermarkTick(T0 + 2 * WINDOW),
    ]
    _, outputs = replay(events, config)
    result = {o.outcome_id: (o.success, o.reason) for o in outcomes_of(outputs)}
    assert result == {"r1|a": (True, "positive"), "r2|b": (False, "no_reward")}


def test_no_reward_is_decided_only_when_the_watermark_passes_the_window():
    config = AttributionConfig(window_ms=WINDOW, allowed_lateness_ms=MIN)
    state, out = replay([impression("r1", T0, ["a"])], config)
    state, out = attribute(state, WatermarkTick(T0 + WINDOW + MIN - 1), config)
    assert outcomes_of(out) == []  # a click at T0 + WINDOW - 1 could still arrive
    state, out = attribute(state, reward("e1", T0 + WINDOW - 1, "a"), config)
    state, out = attribute(state, WatermarkTick(T0 + WINDOW + MIN), config)
    assert [(o.outcome_id, o.success) for o in outcomes_of(out)] == [("r1|a", True)]


def test_dismiss_is_an_immediate_failure_and_outranks_a_click():
    config = AttributionConfig(window_ms=WINDOW, allowed_lateness_ms=MIN)
    events = [
        impression("r1", T0, ["a", "b"]),
        reward("e1", T0 + 1, "a"),
        reward("e2", T0 + 2, "a", "dismiss"),
    ]
    _, outputs = replay(events, config)
    assert [(o.outcome_id, o.success, o.reason) for o in outcomes_of(outputs)] == [
        ("r1|a", False, "dismiss")
    ]


def test_reward_before_its_impression_is_buffered():
    config = AttributionConfig(window_ms=WINDOW, allowed_lateness_ms=5 * MIN)
    events = [reward("e1", T0 + MIN, "a", request_id="r1"), impression("r1", T0, ["a"]), CLOSE]
    _, outputs = replay(events, config)
    assert [(o.outcome_id, o.success) for o in outcomes_of(outputs)] == [("r1|a", True)]


def test_events_beyond_lateness_are_rejected_and_not_applied():
    config = AttributionConfig(window_ms=WINDOW, allowed_lateness_ms=MIN)
    events = [
        impression("r1", T0, ["a"]),
        WatermarkTick(T0 + 5 * MIN),
        reward("late-click", T0 + 4 * MIN - 1, "a", request_id="r1"),  # < watermark - lateness
        reward("ok-click", T0 + 4 * MIN, "b", request_id="r1"),  # exactly at the bound: accepted
        impression("late-slate", T0 + 3 * MIN, ["c"]),
        CLOSE,
    ]
    _, outputs = replay(events, config)
    rejected = [(o.reason, o.event_key) for o in outputs if isinstance(o, Rejected)]
    assert rejected == [("late", "late-click"), ("late", "late-slate")]
    assert [(o.outcome_id, o.success) for o in outcomes_of(outputs)] == [("r1|a", False)]


def test_duplicate_outcome_is_idempotent_and_segments_are_kept():
    outcome = Outcome("r1|a", "a", "surface=home", T0, True, "positive")
    state, writes = apply_outcome(PosteriorState(), outcome, POSTERIOR)
    again, none = apply_outcome(state, outcome, POSTERIOR)
    assert none == []
    assert {w.hash_parts[-1] for w in writes} == {GLOBAL_SEGMENT, "surface=home"}
    post = again.posterior("a", "surface=home", POSTERIOR)
    assert (post.alpha, post.beta) == (2.0, 1.0)


def test_discounting_halves_old_evidence_in_the_posterior():
    state = PosteriorState()
    half = POSTERIOR.half_life_ms
    assert half is not None
    state, _ = apply_outcome(state, Outcome("r1|a", "a", "*", T0, True, "positive"), POSTERIOR)
    post = state.posterior("a", GLOBAL_SEGMENT, POSTERIOR, at_ms=T0 + half)
    assert math.isclose(post.alpha, 1.5, rel_tol=1e-12)


def test_redis_read_plan_and_decoding():
    keys = posterior_read_plan(["a", "b"], "surface=home", lambda *p: ":".join(("ns", *p)))
    assert keys == [
        ("ns:bandit:posterior:*", ["a", "b"]),
        ("ns:bandit:posterior:surface=home", ["a", "b"]),
    ]
    _, writes = apply_outcome(
        PosteriorState(), Outcome("r|a", "a", "*", T0, True, "positive"), POSTERIOR
    )
    stored = {w.field: w.value for w in writes}
    post = decode_posteriors(["a", "new"], [stored["a"], None], POSTERIOR, at_ms=T0)
    assert (post["a"].alpha, post["a"].beta) == (2.0, 1.0)
    assert (post["new"].alpha, post["new"].beta) == (1.0, 1.0)  # new items get the prior


def test_configs_come_from_settings():
    from bandits import configs_from_settings
    from core.settings import Settings

    attribution, posterior = configs_from_settings(Settings())
    assert attribution.window_ms == Settings().bandit.attribution_window_ms
    assert attribution.allowed_lateness_ms == Settings().stream.allowed_lateness_ms
    assert posterior.half_life_ms == Settings().bandit.half_life_ms


def test_an_item_twice_in_one_slate_is_decided_once():
    config = AttributionConfig(window_ms=WINDOW, allowed_lateness_ms=0)
    events = [reward("e1", T0, "a", "dismiss", request_id="r1"), impression("r1", T0, ["a", "a"])]
    _, outputs = replay([*events, CLOSE], config)
    assert [(o.outcome_id, o.position) for o in outcomes_of(outputs)] == [("r1|a", 0)]


@settings(max_examples=100, deadline=None)
@given(event_sets(), st.randoms(use_true_random=False))
def test_events_rejected_as_late_change_nothing(events, rnd):
    """With a short lateness some arrival orders make events late; dropping them is a no-op."""
    tight = AttributionConfig(window_ms=WINDOW, allowed_lateness_ms=2 * MIN)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    _, outputs = replay([*shuffled, CLOSE], tight)
    late = {o.event_key for o in outputs if isinstance(o, Rejected) and o.reason == "late"}

    def key(e):
        return e.request_id if isinstance(e, Impression) else e.event_id

    kept = [e for e in shuffled if key(e) not in late]
    _, without = replay([*kept, CLOSE], tight)
    assert outcomes_of(outputs) == outcomes_of(without)
    assert not [o for o in without if isinstance(o, Rejected) and o.reason == "late"]
