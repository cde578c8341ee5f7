"""Logged slates joined with their outcomes by the system's own attribution rule, and the formats
read from impressions pinned against the serving code that writes them."""

from __future__ import annotations

from bandits.attribution import AttributionConfig
from evaluation.experiment_log import (
    decode_teams,
    forced_experiments,
    interleaved_rankers,
    parse_arms,
    slate_records,
)
from events.models import Impression, ImpressionItem, Interaction
from serving.experiments import Experiments
from serving.interleaving import INTERLEAVING_CONTEXT_KEY, encode_teams

T0 = 1_700_000_000_000
WINDOW = AttributionConfig(window_ms=60_000, allowed_lateness_ms=0)


def impression(request_id, user, items, at=T0, arm="ranker=a", context=None, version="m1"):
    return Impression(
        event_time=at,
        request_id=request_id,
        user_id=user,
        items=tuple(
            ImpressionItem(item_id=i, position=p, score=0.0, source="ann", propensity=1.0)
            for p, i in enumerate(items)
        ),
        model_version=version,
        experiment_arm=arm,
        context=context or {},
    )


def event(kind, user, item, at, request_id=None, n=0):
    return Interaction(
        event_id=f"{kind}-{user}-{item}-{at}-{n}",
        event_type=kind,
        user_id=user,
        item_id=item,
        event_time=at,
        request_id=request_id,
    )


def test_clicks_and_dismissals_are_attributed_inside_the_window_in_event_time():
    imps = [impression("r1", "u1", ["x", "y", "z", "w"])]
    events = [
        event("click", "u1", "x", T0 + 1_000, "r1"),
        event("dismiss", "u1", "y", T0 + 2_000, "r1"),
        event("click", "u1", "z", T0 + 60_000, "r1"),  # at the window's end: too late
        event("click", "u1", "w", T0 - 1, "r1"),  # before the slate was served
        event("view", "u1", "w", T0 + 10, "r1"),  # not a reward
    ]
    [record] = slate_records(imps, events, WINDOW)
    assert record.clicked == {0} and record.dismissed == {1}
    assert record.slots == 4 and record.items == ("x", "y", "z", "w")


def test_a_dismiss_outranks_a_click_and_a_click_without_request_id_is_view_through():
    imps = [impression("r1", "u1", ["x", "y"]), impression("r2", "u2", ["x"], at=T0 + 5)]
    events = [
        event("click", "u1", "x", T0 + 10, "r1"),
        event("dismiss", "u1", "x", T0 + 20, "r1"),
        event("click", "u2", "x", T0 + 30),  # no request id: the user's slates that showed x
    ]
    by_request = {r.request_id: r for r in slate_records(imps, events, WINDOW)}
    assert by_request["r1"].clicked == set() and by_request["r1"].dismissed == {0}
    assert by_request["r2"].clicked == {0}


def test_a_redelivered_impression_counts_once_and_a_repeated_item_once():
    imps = [impression("r1", "u1", ["x", "y", "x"]), impression("r1", "u1", ["x", "y", "x"])]
    records = slate_records(imps, [event("click", "u1", "x", T0 + 1, "r1")], WINDOW)
    assert len(records) == 1
    assert records[0].slots == 2 and records[0].clicked == {0}


def test_arm_label_override_and_teams_are_read_as_serving_writes_them():
    experiments = Experiments.from_dict(
        {
            "experiments": [
                {
                    "name": "ranker",
                    "salt": "s",
                    "arms": [
                        {"name": "sasrec", "weight": 1, "params": {"ranker": "sasrec"}},
                        {
                            "name": "mix",
                            "weight": 0,
                            "params": {"interleave": ["sasrec", "popularity"]},
                        },
                    ],
                },
                {
                    "name": "diversity",
                    "salt": "d",
                    "arms": [{"name": "control", "weight": 1, "params": {"mmr_lambda": 1.0}}],
                },
            ]
        }
    )
    context = {"experiment.ranker": "mix", "surface": "home"}
    assignment = experiments.assign("u1", context)
    assert parse_arms(assignment.label) == {"ranker": "mix", "diversity": "control"}
    assert forced_experiments(context) == {"ranker"}
    assert decode_teams(encode_teams(["A", "B", "", "A"])) == ("A", "B", None, "A")
    assert decode_teams("AXB") is None
    record = slate_records(
        [
            impression(
                "r1",
                "u1",
                ["x", "y"],
                arm=assignment.label,
                context={**context, INTERLEAVING_CONTEXT_KEY: "BA"},
                version="interleaved(v7,retrieval-only)",
            )
        ],
        [],
        WINDOW,
    )[0]
    assert record.teams == ("B", "A") and record.forced == {"ranker"}
    assert interleaved_rankers(record.model_version) == ("v7", "retrieval-only")
    assert interleaved_rankers("v7") is None
