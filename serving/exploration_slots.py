"""Exploration slots: the last ``budget`` positions of a slate go to Thompson samples.

The slate's first ``k - budget`` items are the ranker's (after rules and MMR) and are logged with
propensity 1: given the request they are deterministic. The exploration pool is a short list of
the other eligible candidates — new items (``fresh``/``content`` sources) first, then the next
ranked ones — and ``bandits.exploration.thompson_explore`` picks from it and computes each pick's
propensity (exact quadrature for pools of at most ``EXACT_MAX_CANDIDATES``, the default size here).
The seed is derived from the request id, so a logged request replays to the same slate.

Posteriors are read in one Redis round trip (``RedisPosteriorReader``); if they cannot be read
the slate keeps its ranked items and the pipeline records a fallback reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from bandits.exploration import EXACT_MAX_CANDIDATES, ExplorationSlot, thompson_explore
from bandits.posterior import (
    BetaPosterior,
    PosteriorConfig,
    decode_posteriors,
    posterior_read_plan,
    segment_of,
)
from core.errors import DependencyUnavailable
from serving.ranked import RankedRows
from serving.rerank import ScoredItem

EXPLORE_SOURCE = "explore"
NEW_ITEM_SOURCES = frozenset({"fresh", "content"})


class PosteriorReader(Protocol):
    def read(
        self, item_ids: Sequence[str], segment: str, at_ms: int
    ) -> dict[str, BetaPosterior]: ...


# ``RedisPosteriorReader.batch_reads``: (None, (item ids, segment, at_ms)) -> that read's answer.
PosteriorSubmit = Callable[[None, tuple[tuple[str, ...], str, int]], dict[str, BetaPosterior]]


class RedisPosteriorReader:
    """Reads the posteriors the stream worker writes (layout: ``bandits.posterior``): one
    pipeline per read, or per batch of concurrent reads (``batch_reads``)."""

    def __init__(self, client: Any, redis_key: Any, config: PosteriorConfig) -> None:
        self._client = client
        self._redis_key = redis_key
        self._config = config
        self._submit: PosteriorSubmit | None = None

    def batch_reads(self, submit: PosteriorSubmit | None) -> None:
        """Send each ``read`` to ``submit(None, (item_ids, segment, at_ms))`` (serving's
        ``serving.batching.MicroBatcher``), which answers the reads that meet there from one
        pipeline (``read_batch``); ``None``: each read alone."""
        self._submit = submit

    def read(self, item_ids: Sequence[str], segment: str, at_ms: int) -> dict[str, BetaPosterior]:
        if self._submit is not None:
            return self._submit(None, (tuple(item_ids), segment, at_ms))
        return self.read_batch(None, [(item_ids, segment, at_ms)])[0]

    def read_batch(
        self, _key: None, reads: Sequence[tuple[Sequence[str], str, int]]
    ) -> list[dict[str, BetaPosterior]]:
        """``read`` of each of ``reads`` from one pipeline (one round trip)."""
        plans = [posterior_read_plan(ids, segment, self._redis_key) for ids, segment, _ in reads]
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, fields in (step for plan in plans for step in plan):
                pipe.hmget(key, fields)
            replies = pipe.execute()
        except Exception as exc:  # redis.RedisError and connection failures
            raise DependencyUnavailable("redis", f"posteriors: {exc}") from exc
        answers, start = [], 0
        for (item_ids, _, at_ms), plan in zip(reads, plans, strict=True):
            mine = replies[start : start + len(plan)]
            start += len(plan)
            segment_values = mine[1] if len(mine) > 1 else None
            answers.append(
                decode_posteriors(item_ids, mine[0], self._config, at_ms, segment_values)
            )
        return answers


class InMemoryPosteriorReader:
    """Fixed posteriors, for tests of the project's own pipeline."""

    def __init__(self, posteriors: Mapping[str, BetaPosterior], prior: BetaPosterior) -> None:
        self._posteriors = dict(posteriors)
        self._prior = prior

    def read(self, item_ids: Sequence[str], segment: str, at_ms: int) -> dict[str, BetaPosterior]:
        return {i: self._posteriors.get(i, self._prior) for i in item_ids}


def request_seed(request_id: str) -> int:
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big")


def exploration_pool(
    ranked: RankedRows, exploit: Sequence[ScoredItem], size: int = EXACT_MAX_CANDIDATES
) -> list[str]:
    """New items first (at most half the pool), then the best-ranked others; none already in
    the exploit part. Only the first few positions of each kind are looked at."""
    taken = {ranked.index.row_of.get(item.item_id) for item in exploit}
    new = ranked.labelled(NEW_ITEM_SOURCES)
    picks: list[int] = []
    for positions, limit in ((np.flatnonzero(new), size // 2), (np.flatnonzero(~new), size)):
        ahead = positions[: limit + len(taken)]  # enough, whichever of them are taken
        rows = ranked.rows[ahead].tolist()
        picks += [p for p, row in zip(ahead.tolist(), rows, strict=True) if row not in taken][
            :limit
        ]
    return ranked.item_ids(picks)[:size]


class Explorer:
    def __init__(
        self,
        reader: PosteriorReader,
        config: PosteriorConfig,
        pool_size: int = EXACT_MAX_CANDIDATES,
    ) -> None:
        self._reader = reader
        self._config = config
        self.pool_size = pool_size

    def fill(
        self,
        slate: Sequence[ScoredItem],
        ranked: RankedRows,
        k: int,
        budget: int,
        *,
        request_id: str,
        context: Mapping[str, str],
        at_ms: int,
    ) -> tuple[list[ScoredItem], dict[str, float]]:
        """The slate with its last ``budget`` slots explored, and each item's propensity."""
        budget = min(budget, k)
        exploit = list(slate[: k - budget])
        pool = exploration_pool(ranked, exploit, self.pool_size)
        if budget <= 0 or not pool:
            return list(slate[:k]), {i.item_id: 1.0 for i in slate[:k]}
        segment = segment_of(context, self._config.segment_keys)
        posteriors = self._reader.read(pool, segment, at_ms)
        prior = BetaPosterior(self._config.prior_alpha, self._config.prior_beta)
        picks: list[ExplorationSlot] = thompson_explore(
            pool, posteriors, budget, seed=request_seed(request_id), prior=prior
        )
        explored = [ScoredItem(p.item_id, p.sampled_value, EXPLORE_SOURCE) for p in picks]
        propensities = {i.item_id: 1.0 for i in exploit} | {p.item_id: p.propensity for p in picks}
        return exploit + explored, propensities
