"""Sources asked in parallel: a slow one is given up at the timeout, the others still answer."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from retrieval.merge import CandidateRetriever, SourcePlan
from retrieval.sources import Candidate, RetrievalRequest


class Fixed:
    def __init__(self, name: str, items: list[str], gate: threading.Event | None = None) -> None:
        self.name, self.items, self.gate = name, items, gate

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        if self.gate is not None:
            self.gate.wait(5)
        return [Candidate(i, 1.0, self.name) for i in self.items[: request.k]]


def test_a_source_slower_than_the_timeout_is_reported_failed_and_skipped():
    gate = threading.Event()
    with ThreadPoolExecutor(4) as pool:
        retriever = CandidateRetriever(
            [
                SourcePlan(Fixed("ann", ["a1", "a2"], gate)),
                SourcePlan(Fixed("popular", ["p1", "p2"])),
            ],
            executor=pool,
        )
        result = retriever.retrieve(RetrievalRequest(k=2), timeout_s=0.05)
        gate.set()
    assert result.failed_sources == ("ann",)
    assert [c.item_id for c in result.candidates] == ["p1", "p2"]


def test_without_a_timeout_every_source_is_awaited():
    with ThreadPoolExecutor(4) as pool:
        retriever = CandidateRetriever(
            [SourcePlan(Fixed("ann", ["a1"])), SourcePlan(Fixed("popular", ["p1"]))], executor=pool
        )
        result = retriever.retrieve(RetrievalRequest(k=2))
    assert result.failed_sources == ()
    assert {c.item_id for c in result.candidates} == {"a1", "p1"}
