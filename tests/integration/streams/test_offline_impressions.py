"""The worker keeps the slates it consumes in the offline log, and the off-line readers use them.

The real worker (a child process on the real broker and Redis) consumes served slates on
``<ns>.impressions``: each admitted slate is in ``OfflineImpressionLog`` once (a producer's
duplicate of a slate is read back once), a deleted user's slates are not (erased, or never
logged, whichever reached the worker first), and ``read_traffic(…, "offline")`` — what ``aether
ope --from-log --source offline`` and ``aether experiments report --source offline`` read — takes
both slates and events from the offline log, with no Kafka read. ``aether ope --from-log
--source offline`` runs on it as a child process. Exactly-once across SIGKILLs is checked with
the rest of the offline log in ``test_crash_replay.py``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import orjson
import pytest
from streams_harness import T0, consumed, produce, wait_for

from benchmarks.lifecycle_processes import AETHER
from benchmarks.serve_server import child_env
from core.settings import Settings
from features.offline_impressions import OfflineImpressionLog
from features.traffic_log import read_traffic
from streams.testing import interaction, privacy_request

pytestmark = pytest.mark.integration

TOPICS = ("events", "impressions", "privacy")


def slate(request_id: str, user: str, items: list[str], t: int) -> dict[str, object]:
    return {
        "request_id": request_id,
        "user_id": user,
        "items": [
            {"item_id": item, "position": n, "score": 1.0 - n / 10, "source": "ann",
             "propensity": 0.5}
            for n, item in enumerate(items)
        ],
        "model_version": "sasrec-test@items_v1",
        "experiment_arm": "ranker=A",
        "context": {"device": "tv"},
        "event_time": t,
    }  # fmt: skip


def test_the_worker_logs_each_slate_once_and_the_offline_readers_use_them(
    settings: Settings, start_worker, tmp_path: Path
) -> None:
    kept = [
        slate("req-1", "u1", ["i1", "i2"], T0 + 1_000),
        slate("req-2", "u1", ["i3", "i1"], T0 + 5_000),
        slate("req-3", "u3", ["i2"], T0 + 6_000),
    ]
    erased = slate("req-9", "u2", ["i4"], T0 + 2_000)
    slates = [*kept, kept[0], erased]  # req-1 twice: a producer's retry
    events = [
        interaction("e1", "u1", "i1", "click", T0 + 2_000) | {"request_id": "req-1"},
        interaction("e2", "u1", "i3", "view", T0 + 6_000) | {"request_id": "req-2"},
        interaction("e3", "u2", "i4", "click", T0 + 2_500) | {"request_id": "req-9"},
        interaction("e4", "u3", "i2", "view", T0 + 7_000),
    ]
    start_worker(settings)
    produce(
        settings, "impressions", [(str(s["user_id"]).encode(), orjson.dumps(s)) for s in slates]
    )
    produce(settings, "events", [(str(e["user_id"]).encode(), orjson.dumps(e)) for e in events])
    deletion = privacy_request("p1", "u2", "delete", T0 + 3_000)
    produce(settings, "privacy", [(b"u2", orjson.dumps(deletion))])
    wait_for(lambda: consumed(settings, TOPICS), timeout_s=180, what="the worker to drain")

    log = OfflineImpressionLog(settings.deployment)
    logged = log.read_impressions()
    assert [s.request_id for s in logged] == ["req-1", "req-2", "req-3"]
    first = logged[0]
    assert first.user_id == "u1" and first.experiment_arm == "ranker=A"
    assert [(i.item_id, i.position, i.propensity) for i in first.items] == [
        ("i1", 0, 0.5),
        ("i2", 1, 0.5),
    ]
    assert first.context == {"device": "tv"} and first.event_time_ms == T0 + 1_000
    assert list(log.read(user_ids=["u1"], start_ms=T0 + 2_000)["request_id"]) == ["req-2"]

    traffic = read_traffic(settings, "offline", timeout_s=60)
    assert traffic.source == "offline"
    assert sorted(s.request_id for s in traffic.impressions) == ["req-1", "req-2", "req-3"]
    assert sorted(e.event_id for e in traffic.interactions) == ["e1", "e2", "e4"]

    report = tmp_path / "ope.json"
    done = subprocess.run(
        [AETHER, "ope", "--from-log", "--source", "offline", "--bootstrap", "50",
         "--json", str(report)],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(report.read_text())
    assert figures["source"] == "offline", figures
