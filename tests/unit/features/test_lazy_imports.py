"""The worker and the server never import Feast: importing it costs each process seconds of CPU.

They write and read Feast's Redis layout through ``features.feast_wire``; Feast itself is imported
only by the code that calls it (``feature_store``, ``apply_repo``, point-in-time joins, the
``read_path="feast"`` reader). One fresh interpreter imports the start-up modules one after the
other and names the first one that brought Feast in.
"""

from __future__ import annotations

import json
import subprocess
import sys

STARTUP_MODULES = [
    "features.feast_wire",
    "features.redis_layout",
    "features.store",
    "features.offline",
    "serving.item_discovery",
    "streams.build_worker",
    "streams.app",
    "serving.build_pipeline",
]

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    if "feast" in sys.modules:
        print(json.dumps(name))
        break
else:
    print(json.dumps(None))
"""


def test_worker_and_server_start_without_importing_feast() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *STARTUP_MODULES],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    culprit = json.loads(done.stdout.strip().splitlines()[-1])
    assert culprit is None, (
        f"importing {culprit} imports feast; find the import with "
        f"`python -X importtime -c 'import {culprit}' 2>&1 | grep feast`"
    )
