"""docker-compose.yml yields a working system without files made by hand (issue 17): the server
starts on an empty deployment, a one-off trainer bootstraps the first release, and every
project container sees the same registry. Read, not run: no Docker engine here."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from aether.cli import build_parser

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])


def parse(command: list[str]) -> argparse.Namespace:
    assert command[0] == "aether"
    return build_parser().parse_args(command[1:])


def test_the_server_needs_no_artifact_made_beforehand(services: dict[str, Any]) -> None:
    server = services["server"]
    args = parse(server["command"])
    # no pinned files: the release comes from the registry, or none (empty deployment)
    assert args.checkpoint is None and args.embeddings is None
    assert set(server["depends_on"]) == {"init"}  # not the trainer: it starts empty
    assert server["restart"] == "unless-stopped"


def test_a_one_off_trainer_bootstraps_the_first_release(services: dict[str, Any]) -> None:
    trainer = services["trainer"]
    assert trainer["restart"] == "no"
    assert trainer["depends_on"]["init"]["condition"] == "service_completed_successfully"
    shell = trainer["command"]
    assert shell[:2] == ["sh", "-c"]
    steps = [step.split() for step in shell[2].split("&&")]
    assert [step[:2] for step in steps] == [["aether", "replay"], ["aether", "index"]]
    index = parse(steps[1])
    assert index.func.__module__ == "aether.cli.index"
    assert index.skip_if_promoted and not index.no_promote  # promotes once, then leaves it be
    assert parse(steps[0]).dataset == index.dataset


@pytest.mark.parametrize("role", ["trainer", "server", "worker"])
def test_every_project_container_shares_the_data_folder_the_registry_lives_in(
    services: dict[str, Any], role: str
) -> None:
    service = services[role]
    data_dir = service["environment"]["AETHER_DATA_DIR"]
    assert f"aether-data:{data_dir}" in service["volumes"]
    assert (
        service["environment"]["AETHER_NAMESPACE"]
        == services["server"]["environment"]["AETHER_NAMESPACE"]
    )
