"""Open Bandit Dataset (ZOZOTOWN, Saito et al. 2020) sample loader.

Layout under the dataset folder: ``{policy}/{campaign}/{campaign}.csv`` and
``{policy}/{campaign}/item_context.csv`` with ``policy`` in ``random``/``bts`` and ``campaign`` in
``all``/``men``/``women``. Each CSV row is one slot of a 3-slot slate: ``timestamp``, ``item_id``,
``position`` (1..3 in the files), ``click``, ``propensity_score`` (the logging policy's probability
of that item at that position at that time), hashed ``user_feature_*`` and
``user-item_affinity_*`` columns.

Returned frame (sorted by event time, ties by file order): ``timestamp_ms`` (int64),
``item_id`` (int), ``position`` (0-based int), ``click`` (int 0/1), ``propensity_score``
(float), then the context columns unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.errors import NotFoundError, SchemaError

POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
SHARED_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "open-bandit"
_REQUIRED = ("timestamp", "item_id", "position", "click", "propensity_score")


@dataclass(frozen=True)
class OpenBanditLog:
    policy: str
    campaign: str
    rounds: pd.DataFrame
    item_context: pd.DataFrame
    n_items: int
    n_positions: int

    @property
    def ctr(self) -> float:
        """On-policy value of the logging policy: its empirical click rate."""
        return float(self.rounds["click"].mean())


def load_open_bandit(
    policy: str, campaign: str = "all", path: str | Path | None = None
) -> OpenBanditLog:
    """Load one policy's log of one campaign from ``path`` (default: the shared datasets)."""
    if policy not in POLICIES:
        raise SchemaError(f"unknown behaviour policy {policy!r}; choose one of {POLICIES}")
    if campaign not in CAMPAIGNS:
        raise SchemaError(f"unknown campaign {campaign!r}; choose one of {CAMPAIGNS}")
    folder = Path(path) if path is not None else SHARED_PATH
    log_file = folder / policy / campaign / f"{campaign}.csv"
    item_file = folder / policy / campaign / "item_context.csv"
    for file in (log_file, item_file):
        if not file.is_file():
            raise NotFoundError(f"{file} not found (pass --data PATH of the open-bandit folder)")
    raw = pd.read_csv(log_file, index_col=0)
    missing = [c for c in _REQUIRED if c not in raw.columns]
    if missing:
        raise SchemaError(f"{log_file} lacks columns {missing}", reason="missing_columns")
    if raw["position"].min() < 1:
        raise SchemaError(f"{log_file}: positions must start at 1", reason="bad_position")
    items = pd.read_csv(item_file, index_col=0)
    times = pd.to_datetime(raw["timestamp"], utc=True)
    rounds = raw.drop(columns=["timestamp"]).assign(
        timestamp_ms=(times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1),
        item_id=raw["item_id"].astype(int),
        # files number slots 1..3; the rest of the project uses 0-based positions
        position=raw["position"].astype(int) - 1,
        click=raw["click"].astype(int),
        propensity_score=raw["propensity_score"].astype(float),
    )
    first = ["timestamp_ms", "item_id", "position", "click", "propensity_score"]
    rounds = rounds[first + [c for c in rounds.columns if c not in first]]
    rounds = rounds.sort_values("timestamp_ms", kind="stable").reset_index(drop=True)
    n_items = int(max(items["item_id"].max(), rounds["item_id"].max())) + 1
    return OpenBanditLog(
        policy=policy,
        campaign=campaign,
        rounds=rounds,
        item_context=items,
        n_items=n_items,
        n_positions=int(rounds["position"].max()) + 1,
    )
