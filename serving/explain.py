"""One human-readable explanation per recommended item (pure; no I/O).

* ``ann`` / ``cooccurrence`` / ranker-driven items: "because you watched X", where X is the
  history item most similar to the recommended one (cosine over item vectors when known,
  otherwise the most recent history item);
* ``popular``: "trending now"; ``fresh``: "new"; ``content``: "new, similar to X" or "new";
  ``explore``: "something new for you".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

RECENT_HISTORY = 50  # only the recent past is a credible reason


def driving_item(
    item_id: str, history: Sequence[str], vectors: Mapping[str, np.ndarray] | None
) -> str | None:
    """The history item that best explains ``item_id`` (most similar vector; else the latest)."""
    recent = list(history[-RECENT_HISTORY:])
    if not recent:
        return None
    target = None if vectors is None else vectors.get(item_id)
    if target is None:
        return recent[-1]
    best, best_similarity = recent[-1], -np.inf
    target_norm = float(np.linalg.norm(target)) or 1.0
    for candidate in reversed(recent):  # ties go to the most recent
        vector = vectors.get(candidate) if vectors is not None else None
        if vector is None:
            continue
        similarity = float(vector @ target) / ((float(np.linalg.norm(vector)) or 1.0) * target_norm)
        if similarity > best_similarity:
            best, best_similarity = candidate, similarity
    return best


def explain(
    item_id: str,
    source: str,
    history: Sequence[str],
    titles: Mapping[str, str],
    vectors: Mapping[str, np.ndarray] | None = None,
) -> str:
    if source == "popular":
        return "trending now"
    if source == "fresh":
        return "new"
    if source == "explore":
        return "something new for you"
    anchor = driving_item(item_id, history, vectors)
    if anchor is None:
        return "new" if source == "content" else "popular with viewers like you"
    title = titles.get(anchor) or anchor
    if source == "content":
        return f"new, similar to {title}"
    return f"because you watched {title}"
