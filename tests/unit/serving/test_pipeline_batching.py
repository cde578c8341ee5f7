"""The pipeline with micro-batching (``serving.batching``), against fakes of its own interfaces.

Concurrent requests are made to meet deterministically, without sleeps: the first request's
batch call is held until the others have read their features (and so are counted as on their
way to the user vector), then released; the others then share the next call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from core.errors import DependencyUnavailable
from features.ports import InMemoryFeatureStore
from features.rows import UserFeatureRow
from retrieval.catalog import ItemCatalog, ItemMeta
from retrieval.merge import CandidateRetriever, SourcePlan
from retrieval.sources import Candidate, RetrievalRequest
from serving.batching import RequestBatching
from serving.domain import RecommendationQuery, Slate
from serving.impressions import InMemoryImpressionLog
from serving.pipeline import PipelineConfig, RecommendationPipeline, RetrievalState
from serving.serving_state import ServingState, state_from_parts

HOUR = 3600.0
ITEMS = [f"i{n}" for n in range(20)]
CATALOG = ItemCatalog(ItemMeta(i, title=f"Movie {i}") for i in ITEMS)
ITEM_VECTORS = np.random.default_rng(0).normal(size=(len(ITEMS), 4)).astype(np.float32)


class VectorRankedSource:
    """An ANN-like source: the catalogue ordered by item vector · the request's user vector."""

    name = "ann"

    def candidates(self, request: RetrievalRequest) -> list[Candidate]:
        if request.user_vector is None:
            return []
        scores = ITEM_VECTORS @ request.user_vector
        order = [ITEMS[i] for i in np.argsort(-scores, kind="stable")]
        kept = [i for i in order if i not in request.exclusions][: request.k]
        return [Candidate(i, float(scores[ITEMS.index(i)]), self.name) for i in kept]


class BatchEncoder:
    """A user encoder with a batched pass; it records its passes (``batches``: the histories of
    each ``encode_user`` or ``encode_users`` call), can hold the first one until released, and
    cannot encode a history holding ``poison``."""

    def __init__(self, model_version: str = "enc-v1", shift: float = 0.0) -> None:
        self.model_version = model_version
        self.shift = shift
        self.batches: list[list[tuple[str, ...]]] = []
        self.batched_passes = 0
        self.hold: threading.Event | None = None
        self.first_started = threading.Event()

    def _pass(self, histories: Sequence[Sequence[str]]) -> None:
        self.batches.append([tuple(h) for h in histories])
        if not self.first_started.is_set():
            self.first_started.set()
            if self.hold is not None:
                self.hold.wait()

    def vector(self, history: Sequence[str]) -> np.ndarray:
        if "poison" in history:
            raise ValueError("cannot encode this history")
        known = [ITEMS.index(i) for i in history if i in ITEMS]
        vector = ITEM_VECTORS[known].sum(axis=0) if known else np.ones(4, dtype=np.float32)
        return (vector + self.shift).astype(np.float32)

    def encode_user(self, history: Sequence[str]) -> np.ndarray:
        self._pass([history])
        return self.vector(history)

    def encode_users(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        self._pass(histories)
        self.batched_passes += 1
        return np.stack([self.vector(h) for h in histories])


class RecordingFeatures(InMemoryFeatureStore):
    """Tells when given users' rows have been read; can fail every read."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()
        self.down = False
        self._changed = threading.Condition()

    def read_users(self, user_ids):
        with self._changed:
            self.read.update(user_ids)
            self._changed.notify_all()
        if self.down:
            raise DependencyUnavailable("redis", "connection refused")
        return super().read_users(user_ids)

    def wait_read(self, user_ids: Sequence[str]) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.read >= set(user_ids), timeout=30)


def serving_state(encoder: BatchEncoder) -> ServingState:
    retriever = CandidateRetriever(
        [SourcePlan(VectorRankedSource())],
        catalog=CATALOG,
        fallback=None,
    )
    return state_from_parts(RetrievalState(retriever, CATALOG), None, None, encoder)


def make(
    encoder: BatchEncoder, features: RecordingFeatures, *, batched: bool
) -> RecommendationPipeline:
    return RecommendationPipeline(
        features=features,
        state=serving_state(encoder),
        impressions=InMemoryImpressionLog(),
        config=PipelineConfig(candidates=10, deadline_s=HOUR),
        clock_ms=lambda: 1_700_000_000_000,
        batching=RequestBatching(features, window_s=HOUR) if batched else None,
    )


def write_users(features: InMemoryFeatureStore, histories: dict[str, tuple[str, ...]]) -> None:
    features.write_users([UserFeatureRow(u, 1, recent_items=h) for u, h in histories.items()])


def behind_a_held_batch(
    pipeline: RecommendationPipeline,
    encoder: BatchEncoder,
    features: RecordingFeatures,
    first: str,
    later: Sequence[str],
    between: dict[str, ServingState] | None = None,
) -> dict[str, Slate]:
    """``first``'s request, its encoding held until ``later``'s requests have read their
    features (``between[user]``: the state swapped in before that user's request starts)."""
    encoder.hold = threading.Event()
    slates: dict[str, Slate] = {}

    def ask(user: str) -> None:
        slates[user] = pipeline.recommend(RecommendationQuery(user_id=user, k=5))

    threads = [threading.Thread(target=ask, args=(first,))]
    threads[0].start()
    assert encoder.first_started.wait(timeout=30)
    for user in later:
        if between and user in between:
            pipeline.swap(between[user])
        threads.append(threading.Thread(target=ask, args=(user,)))
        threads[-1].start()
        features.wait_read([user])
    encoder.hold.set()
    for thread in threads:
        thread.join()
    return slates


HISTORIES = {"a": ("i1", "i2"), "b": ("i3",), "c": ("i4", "i5", "i6"), "d": ("i7",)}


def alone(user: str, histories: dict[str, tuple[str, ...]] = HISTORIES) -> Slate:
    features = RecordingFeatures()
    write_users(features, histories)
    return make(BatchEncoder(), features, batched=False).recommend(
        RecommendationQuery(user_id=user, k=5)
    )


def same_answer(got: Slate, expected: Slate) -> None:
    assert [(i.item_id, i.score, i.source) for i in got.items] == [
        (i.item_id, i.score, i.source) for i in expected.items
    ]
    assert (got.model_version, got.fallback_reasons) == (
        expected.model_version,
        expected.fallback_reasons,
    )


def test_concurrent_requests_share_one_encoding_and_get_their_own_answers():
    encoder, features = BatchEncoder(), RecordingFeatures()
    write_users(features, HISTORIES)
    pipeline = make(encoder, features, batched=True)
    slates = behind_a_held_batch(pipeline, encoder, features, "a", ["b", "c", "d"])

    assert encoder.batches[0] == [HISTORIES["a"]]
    assert sorted(encoder.batches[1]) == sorted(HISTORIES[u] for u in "bcd")  # one pass
    assert len(encoder.batches) == 2 and encoder.batched_passes == 1
    for user in "abcd":
        same_answer(slates[user], alone(user))
        assert not slates[user].fallback


def test_a_history_that_cannot_be_encoded_fails_its_request_alone():
    histories = {**HISTORIES, "c": ("i4", "poison")}
    encoder, features = BatchEncoder(), RecordingFeatures()
    write_users(features, histories)
    pipeline = make(encoder, features, batched=True)
    slates = behind_a_held_batch(pipeline, encoder, features, "a", ["b", "c", "d"])

    # c was in the batch, which failed, then each of the three was encoded alone
    assert len(encoder.batches[1]) == 3 and encoder.batches[2:] == [[h] for h in encoder.batches[1]]
    assert slates["c"].fallback_reasons == ("encoder_failed",)
    for user in "abd":
        same_answer(slates[user], alone(user, histories))
        assert not slates[user].fallback


def test_a_feature_outage_flags_every_request_of_the_batch():
    encoder, features = BatchEncoder(), RecordingFeatures()
    write_users(features, HISTORIES)
    features.down = True
    pipeline = make(encoder, features, batched=True)
    slates = behind_a_held_batch(pipeline, encoder, features, "a", ["b", "c"])
    for user in "abc":
        assert "features_unavailable" in slates[user].fallback_reasons
        assert slates[user].items  # still answered (the cold user's encoding)


def test_requests_reading_different_releases_never_share_an_encoding():
    old, new = BatchEncoder("enc-old"), BatchEncoder("enc-new", shift=5.0)
    features = RecordingFeatures()
    write_users(features, HISTORIES)
    pipeline = make(old, features, batched=True)
    new_state = serving_state(new)
    slates = behind_a_held_batch(pipeline, old, features, "a", ["b", "c"], between={"c": new_state})

    assert [h for batch in old.batches for h in batch] == [HISTORIES["a"], HISTORIES["b"]]
    assert new.batches == [[HISTORIES["c"]]]
    release_of = {"a": old, "b": old, "c": new}
    for user, encoder in release_of.items():
        vector = encoder.vector(HISTORIES[user])
        expected = [ITEMS[i] for i in np.argsort(-(ITEM_VECTORS @ vector), kind="stable")]
        unseen = [i for i in expected if i not in HISTORIES[user]]
        assert [i.item_id for i in slates[user].items] == unseen[:5]


@pytest.mark.parametrize("batched", [False, True])
def test_one_request_alone_is_answered_the_same_with_or_without_batching(batched):
    encoder, features = BatchEncoder(), RecordingFeatures()
    write_users(features, HISTORIES)
    slate = make(encoder, features, batched=batched).recommend(
        RecommendationQuery(user_id="c", k=5)
    )
    same_answer(slate, alone("c"))
    assert encoder.batches == [[HISTORIES["c"]]] and encoder.batched_passes == 0  # encode_user
