"""Hash-based experiment assignment: validation, overrides, stability and proportions."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError, SchemaError
from serving.experiments import Experiment, Experiments, parse_ranker

EXAMPLE = Path(__file__).resolve().parents[3] / "infra" / "experiments.example.yaml"


def two_arms(salt: str = "s1", weights: tuple[float, float] = (1, 1)) -> Experiments:
    return Experiments.from_dict(
        {
            "experiments": [
                {
                    "name": "ranker",
                    "salt": salt,
                    "arms": [
                        {"name": "sasrec", "weight": weights[0], "params": {"ranker": "sasrec"}},
                        {
                            "name": "popular",
                            "weight": weights[1],
                            "params": {"ranker": "popularity", "mmr_lambda": 0.5},
                        },
                    ],
                }
            ]
        }
    )


def test_the_example_file_loads_and_merges_parameters_of_all_experiments():
    experiments = Experiments.load(EXAMPLE)
    assignment = experiments.assign("user-1")
    assert [name for name, _ in assignment.arms] == ["ranker", "diversity"]
    assert assignment.params.ranker in {"sasrec", "popularity"}
    assert assignment.params.mmr_lambda in {1.0, 0.7}
    assert assignment.label == ",".join(f"{e}={a}" for e, a in assignment.arms)


def test_assignment_is_pinned_to_sha256_not_to_the_process():
    # Golden values (sha256 of "s1:<user>"): a change here means users would silently switch
    # arms after a deploy. Python's hash() would differ between processes.
    experiment = two_arms().spec.experiments[0]
    assert experiment.bucket("user-42") == pytest.approx(0.5622871673446819, abs=1e-15)
    assert experiment.bucket("user-7") == pytest.approx(0.24275117426278753, abs=1e-15)
    assert experiment.arm_for("user-42").name == "popular"
    assert experiment.arm_for("user-7").name == "sasrec"


def test_overrides_force_an_arm_and_unknown_names_are_invalid_arguments():
    experiments = two_arms()
    forced = experiments.assign("anyone", {"experiment.ranker": "popular", "other": "x"})
    assert forced.arms == (("ranker", "popular"),)
    assert forced.params.mmr_lambda == 0.5
    with pytest.raises(SchemaError) as bad_arm:
        experiments.assign("anyone", {"experiment.ranker": "nope"})
    assert bad_arm.value.reason == "invalid_argument"
    with pytest.raises(SchemaError) as bad_experiment:
        experiments.assign("anyone", {"experiment.colour": "red"})
    assert bad_experiment.value.reason == "invalid_argument"


def test_zero_weight_arms_are_reachable_only_by_override():
    experiments = two_arms(weights=(1, 0))
    assert {experiments.assign(f"u{n}").arms[0][1] for n in range(500)} == {"sasrec"}
    assert experiments.assign("u1", {"experiment.ranker": "popular"}).arms[0][1] == "popular"


def test_no_experiments_means_defaults_and_an_empty_label():
    assignment = Experiments().assign("u1")
    assert assignment.arms == () and assignment.label == ""
    assert assignment.params.ranker is None


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"experiments": [{"name": "x", "salt": "s", "arms": []}]}, "arms"),
        (
            {"experiments": [{"name": "x", "salt": "s", "arms": [{"name": "a", "weight": 0}]}]},
            "sum to more than 0",
        ),
        (
            {"experiments": [{"name": "x", "salt": "s", "arms": [{"name": "a", "weight": -1}]}]},
            "weight",
        ),
        (
            {
                "experiments": [
                    {"name": "x", "salt": "s", "arms": [{"name": "a", "weight": 1, "colour": 1}]}
                ]
            },
            "colour",
        ),
        (
            {
                "experiments": [
                    {
                        "name": "x",
                        "salt": "s",
                        "arms": [{"name": "a", "weight": 1, "params": {"ranker": "magic"}}],
                    }
                ]
            },
            "ranker",
        ),
        (
            {"experiments": [{"name": "x", "salt": "s", "arms": [{"name": "a", "weight": 1}] * 2}]},
            "unique",
        ),
        (
            {
                "experiments": [
                    {
                        "name": n,
                        "salt": n,
                        "arms": [{"name": "a", "weight": 1, "params": {"mmr_lambda": 0.5}}],
                    }
                    for n in ("x", "y")
                ]
            },
            "set by both",
        ),
        (
            {
                "experiments": [
                    {
                        "name": n,
                        "salt": n,
                        "arms": [{"name": "a", "weight": 1, "params": params}],
                    }
                    for n, params in (
                        ("x", {"ranker": "popularity"}),
                        ("y", {"interleave": ["sasrec", "popularity"]}),
                    )
                ]
            },
            "set by both",  # interleaving chooses the ranker too: one owner
        ),
        ([1, 2], "top level"),
    ],
)
def test_bad_configs_raise_config_error(data, fragment):
    with pytest.raises(ConfigError) as caught:
        Experiments.from_dict(data)
    assert fragment in str(caught.value)


def test_bad_files_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        Experiments.load(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiments: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Experiments.load(broken)


@settings(max_examples=50, deadline=None)
@given(user_id=st.text(max_size=30), salt=st.text(min_size=1, max_size=10))
def test_assignment_is_deterministic(user_id, salt):
    assert two_arms(salt).assign(user_id) == two_arms(salt).assign(user_id)


@settings(max_examples=10, deadline=None)
@given(
    weights=st.lists(st.integers(min_value=1, max_value=10), min_size=2, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_proportions_match_weights(weights, seed):
    experiment = Experiment.model_validate(
        {
            "name": "e",
            "salt": f"salt-{seed}",
            "arms": [{"name": f"arm{n}", "weight": w} for n, w in enumerate(weights)],
        }
    )
    rng = random.Random(seed)
    users = 4000
    counts = Counter(experiment.arm_for(f"user-{rng.getrandbits(64)}").name for _ in range(users))
    total = sum(weights)
    for n, weight in enumerate(weights):
        p = weight / total
        tolerance = 5 * (p * (1 - p) / users) ** 0.5  # 5 standard errors
        assert abs(counts[f"arm{n}"] / users - p) <= tolerance


def test_changing_the_salt_reshuffles_users():
    before, after = two_arms("salt-a"), two_arms("salt-b")
    users = [f"user-{n}" for n in range(2000)]
    moved = sum(before.assign(u).arms != after.assign(u).arms for u in users) / len(users)
    # Independent 50/50 assignments disagree for half of the users.
    assert 0.45 < moved < 0.55


def test_the_docstring_examples_run():
    import doctest

    import serving.experiments

    result = doctest.testmod(serving.experiments)
    assert result.attempted > 0 and result.failed == 0


def _one_experiment(*params: dict) -> Experiments:
    arms = [{"name": f"a{n}", "weight": 1, "params": p} for n, p in enumerate(params)]
    return Experiments.from_dict({"experiments": [{"name": "m", "salt": "s", "arms": arms}]})


def test_arms_may_rank_with_registered_model_versions():
    experiments = _one_experiment(
        {"ranker": "sasrec"},
        {"ranker": "sasrec@sasrec-v2"},
        {"interleave": ["sasrec@sasrec-v2", "sasrec@sasrec-v3.1"]},
        {"interleave": ["popularity", "sasrec"]},
    )
    assert experiments.model_versions() == {"sasrec-v2", "sasrec-v3.1"}
    assert parse_ranker("sasrec@sasrec-v2") == ("sasrec", "sasrec-v2")
    assert parse_ranker("sasrec") == ("sasrec", None)
    assert parse_ranker("popularity") == ("popularity", None)
    assert parse_ranker(None) == (None, None)


@pytest.mark.parametrize("ref", ["popularity@v1", "sasrec@", "sasrec@a b", "ease@v1", "@v1"])
def test_malformed_ranker_references_are_config_errors(ref):
    with pytest.raises(ConfigError, match="ranker"):
        _one_experiment({"ranker": ref})
