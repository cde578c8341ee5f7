"""Experiment arms that choose registered model versions, side by side in one server, over real
gRPC (registry folder, Milvus Lite, Redis/Feast): each arm's responses are ranked by its own
model and say so in ``model_version``, users split between the arms by hash, an interleaving arm
drafts from both, and an arm naming a model the registry lacks stops the server at start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from live_stores import catalogue, quiet_settings, random_ranker, register_pair, write_rows

from core.errors import ConfigError
from core.settings import Settings
from lifecycle.registry import Registry
from serving.build_pipeline import build_serving_app
from serving.client import RecommenderClient
from serving.server import start_server

pytestmark = pytest.mark.integration

ITEMS = [f"i{n}" for n in range(40)]
USERS = {f"u{n}": tuple(f"i{(3 * n + j) % 40}" for j in range(5)) for n in range(16)}


def _with_experiments(settings: Settings, path: Path, arms: list[dict[str, object]]) -> Settings:
    path.write_text(yaml.safe_dump({"experiments": [{"name": "model", "salt": "s", "arms": arms}]}))
    return settings.model_copy(
        update={"serving": settings.serving.model_copy(update={"experiments_file": str(path)})}
    )


def test_arms_rank_with_their_own_registered_model_in_one_server(
    settings: Settings, make_topics, tmp_path: Path
) -> None:
    settings = quiet_settings(settings)
    make_topics(settings)
    write_rows(settings, ITEMS, USERS)
    registry = Registry.for_deployment(settings.deployment)
    current = register_pair(
        settings, registry, tmp_path / "a.pt", ITEMS, 1, catalogue(ITEMS), promote=True
    )
    candidate = random_ranker(tmp_path / "b.pt", ITEMS, seed=2)  # a model only, not promoted
    registry.register_model(tmp_path / "b.pt", candidate.model_version, {"dataset": "test"})
    index = current.published.index.version
    settings = _with_experiments(
        settings,
        tmp_path / "experiments.yaml",
        [
            {"name": "current", "weight": 1, "params": {"ranker": "sasrec"}},
            {
                "name": "candidate",
                "weight": 1,
                "params": {"ranker": f"sasrec@{candidate.model_version}"},
            },
            {
                "name": "both",
                "weight": 0,
                "params": {"interleave": ["sasrec", f"sasrec@{candidate.model_version}"]},
            },
        ],
    )
    app = build_serving_app(settings)
    running = start_server(app.pipeline, settings.serving.model_copy(update={"port": 0}))
    try:
        with RecommenderClient(running.address, timeout_s=30) as client:
            client.wait_until_serving()
            by_arm: dict[str, set[str]] = {}
            for user, history in USERS.items():
                for arm, model in (("current", current.ranker), ("candidate", candidate)):
                    slate = client.recommend(user, 6, context={"experiment.model": arm})
                    assert slate.model_version == f"{model.model_version}@{index}"
                    assert slate.experiment_arm == f"model={arm}"
                    items = [i.item_id for i in slate.items]
                    # ranked by that arm's model: its scores, in its order
                    expected = model.score(history, items)
                    assert [i.score for i in slate.items] == pytest.approx(expected, abs=1e-4)
                    assert list(np.argsort(-expected, kind="stable")) == list(range(len(items)))
                assigned = client.recommend(user, 6)
                by_arm.setdefault(assigned.experiment_arm, set()).add(assigned.model_version)
                both = client.recommend(user, 6, context={"experiment.model": "both"})
                assert both.model_version == (
                    f"interleaved({current.label},{candidate.model_version}@{index})"
                )
                assert {i.team for i in both.items} <= {"A", "B"}
            # the hash split puts users in both weighted arms, each served by its own model
            assert by_arm == {
                "model=current": {current.label},
                "model=candidate": {f"{candidate.model_version}@{index}"},
            }
    finally:
        running.stop(0)
        app.close()


def test_an_arm_naming_an_unregistered_model_stops_the_server_at_start(
    settings: Settings, make_topics, tmp_path: Path
) -> None:
    settings = quiet_settings(settings)
    make_topics(settings)
    write_rows(settings, ITEMS, USERS)
    registry = Registry.for_deployment(settings.deployment)
    register_pair(settings, registry, tmp_path / "a.pt", ITEMS, 1, catalogue(ITEMS), promote=True)
    settings = _with_experiments(
        settings,
        tmp_path / "experiments.yaml",
        [{"name": "ghost", "weight": 1, "params": {"ranker": "sasrec@no-such-model"}}],
    )
    with pytest.raises(ConfigError, match="no-such-model"):
        build_serving_app(settings)
