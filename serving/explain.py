"""One human-readable explanation per recommended item (pure; no I/O).

* ``ann`` / ``cooccurrence`` / ranker-driven items: "because you watched X", where X is the
  history item most similar to the recommended one (cosine over item vectors when known,
  otherwise the most recent history item);
* ``popular``: "trending now"; ``fresh``: "new"; ``content``: "new, similar to X" or "new";
  ``explore``: "something new for you".

``SlateExplainer`` explains a whole slate at once: unit vectors are computed once per process,
and one ``(slate × history)`` product per request finds every item's most similar history item
(ties to the most recent; history items without a vector never drive). A Python loop of
per-pair norms cost about 1 ms of CPU per request (docs/benchmarks/serving.md).

>>> import numpy as np
>>> explainer = SlateExplainer({"heat": np.array([1.0, 0.0]), "toy_story": np.array([0.0, 1.0]),
...                             "casino": np.array([0.9, 0.1])})
>>> explainer.explain_slate([("casino", "ann"), ("x", "popular")], ["heat", "toy_story"],
...                         {"heat": "Heat (1995)"})
['because you watched Heat (1995)', 'trending now']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

RECENT_HISTORY = 50  # only the recent past is a credible reason


def _phrase(source: str) -> str | None:
    """The explanation of sources that need no history item (``None``: one is needed)."""
    if source == "popular":
        return "trending now"
    if source == "fresh":
        return "new"
    if source == "explore":
        return "something new for you"
    return None


def _with_anchor(source: str, anchor: str | None, titles: Mapping[str, str]) -> str:
    if anchor is None:
        return "new" if source == "content" else "popular with viewers like you"
    title = titles.get(anchor) or anchor
    if source == "content":
        return f"new, similar to {title}"
    return f"because you watched {title}"


class SlateExplainer:
    """The explanations of a slate's items; built once from the item vectors (or ``None``)."""

    def __init__(self, vectors: Mapping[str, np.ndarray] | None) -> None:
        ids = list(vectors) if vectors else []
        self._row = {item_id: row for row, item_id in enumerate(ids)}
        if ids and vectors is not None:
            matrix = np.array([np.asarray(vectors[i], dtype=np.float64) for i in ids])
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            norms[norms == 0] = 1.0  # a zero vector has similarity 0 with everything
            self._unit: np.ndarray | None = matrix / norms
        else:
            self._unit = None

    def driving_items(self, item_ids: Sequence[str], history: Sequence[str]) -> list[str | None]:
        """The history item that best explains each of ``item_ids``: the most similar by cosine
        among the recent history items with a vector (ties: the most recent), else the latest
        history item; ``None`` for an empty history."""
        recent = list(history[-RECENT_HISTORY:])
        if not recent:
            return [None] * len(item_ids)
        latest = recent[-1]
        anchors: list[str | None] = [latest] * len(item_ids)
        if self._unit is None:
            return anchors
        newest_first = [i for i in reversed(recent) if i in self._row]
        targets = [(n, self._row[i]) for n, i in enumerate(item_ids) if i in self._row]
        if not newest_first or not targets:
            return anchors
        history_rows = [self._row[i] for i in newest_first]
        target_rows = [row for _, row in targets]
        similarity = self._unit[target_rows] @ self._unit[history_rows].T  # (targets, history)
        similarity[np.isnan(similarity)] = -np.inf  # a NaN never wins
        best = np.argmax(similarity, axis=1)  # first maximum: ties go to the most recent
        found = similarity[np.arange(len(targets)), best] > -np.inf
        for (position, _), column, ok in zip(targets, best.tolist(), found.tolist(), strict=True):
            if ok:
                anchors[position] = newest_first[column]
        return anchors

    def explain_slate(
        self,
        items: Sequence[tuple[str, str]],
        history: Sequence[str],
        titles: Mapping[str, str],
    ) -> list[str]:
        """One explanation per ``(item_id, source)``, in order."""
        phrases = [_phrase(source) for _, source in items]
        need = [n for n, phrase in enumerate(phrases) if phrase is None]
        anchors = self.driving_items([items[n][0] for n in need], history)
        for n, anchor in zip(need, anchors, strict=True):
            phrases[n] = _with_anchor(items[n][1], anchor, titles)
        return [phrase or "" for phrase in phrases]
