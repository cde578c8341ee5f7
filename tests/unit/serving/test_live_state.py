"""``serving.live_state``: a refresh that reads only what changed builds the same catalogue as one
that reads everything, over any sequence of catalogue changes the worker writes (content row and
online row, in either order, with refreshes in between); changes it cannot see (online-only) wait
for the next full pass, which a failed source or a new release brings forward."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.rows import ItemFeatureRow
from features.transition_store import InMemoryTransitionStore
from retrieval.build_retriever import DEFAULT_PLAN
from retrieval.content_index import ContentRow
from retrieval.encoders import ItemEmbeddings
from serving.live_state import CatalogueSources, LiveState
from serving.release import ServingRelease
from serving.serving_state import RetrievalWiring

T = 1_700_000_000_000
ITEMS = [f"n{i}" for i in range(6)]
INDEXED = ["x0", "x1"]


class OnlineRows:
    """The online item rows (``OnlineFeatureReader``), with the scan of their ids."""

    def __init__(self) -> None:
        self.rows: dict[str, ItemFeatureRow] = {}
        self.reads: list[list[str]] = []

    def read_items(self, item_ids):
        self.reads.append(list(item_ids))
        return {i: self.rows[i] for i in item_ids if i in self.rows}

    def read_users(self, user_ids):
        return {}

    def scan(self) -> list[str]:
        return sorted(self.rows)


class ContentRows:
    """The content collection, as ``ContentIndex`` reads it."""

    def __init__(self) -> None:
        self.rows: dict[str, ContentRow] = {}
        self.failing = False

    def read_all(self) -> list[ContentRow]:
        if self.failing:
            raise ConnectionError("milvus unavailable")
        return list(self.rows.values())

    def read(self, item_ids, vectors=False):
        return [self.rows[i] for i in item_ids if i in self.rows]


def release() -> ServingRelease:
    vectors = np.eye(2, dtype=np.float32)
    return ServingRelease(
        ranker=None,
        searcher=None,
        item_vectors=ItemEmbeddings(INDEXED, vectors),
        encoder=None,
        plan=DEFAULT_PLAN,
        index_version="items_v1",
    )


def live(online: OnlineRows, content: ContentRows, the_release: ServingRelease) -> LiveState:
    sources = CatalogueSources(features=online, content=content, scanner=online)
    wiring = RetrievalWiring(InMemoryTransitionStore())
    return LiveState(sources, wiring, the_release, full_every_s=1e9, clock=lambda: 0.0)


def catalogue(state: LiveState) -> tuple[object, ...]:
    snapshot = state.snapshot
    return (dict(snapshot.catalog), snapshot.popularity, snapshot.as_of_ms, snapshot.content)


# A change: (item, title, available, popularity, order) — order: how the worker's two writes land.
changes = st.lists(
    st.tuples(
        st.sampled_from(ITEMS),
        st.sampled_from(["Heat", "Alien", ""]),
        st.booleans(),
        st.sampled_from([0.0, 1.0, 5.0]),
        st.sampled_from(["content_first", "online_first", "content_only", "removed"]),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(changes)
def test_incremental_refreshes_build_what_a_full_read_builds(sequence) -> None:
    online, content, the_release = OnlineRows(), ContentRows(), release()
    online.rows["x0"] = ItemFeatureRow("x0", T, popularity=3.0, title="Indexed")
    online.rows["old"] = ItemFeatureRow("old", T, popularity=1.0, title="Seen by the stream")
    incremental = live(online, content, the_release)
    incremental.build()

    def check() -> None:
        incremental.refresh(full=False)
        full = live(online, content, the_release)
        full.build()
        assert catalogue(incremental) == catalogue(full)

    for n, (item, title, available, popularity, order) in enumerate(sequence, start=1):
        at = T + 1000 * n
        row = ItemFeatureRow(item, at, popularity, None, 0, 0, 0.0, T, title, ("Drama",), available)
        text = ContentRow(item, title, ("Drama",), available, T, at)
        if order == "removed":
            content.rows.pop(item, None)
            online.rows.pop(item, None)
        elif order == "content_first":
            content.rows[item] = text
            check()  # the online row lags behind: read again until it catches up
            online.rows[item] = row
        elif order == "online_first":
            online.rows[item] = row
            incremental.refresh(full=False)  # an online-only change: not seen yet, not compared
            content.rows[item] = text
        else:
            content.rows[item] = text
        check()


def test_online_only_changes_wait_for_the_full_pass_and_a_pass_reads_only_the_changes() -> None:
    online, content, the_release = OnlineRows(), ContentRows(), release()
    for item in ("n0", "n1"):
        online.rows[item] = ItemFeatureRow(item, T, title=item)
        content.rows[item] = ContentRow(item, item, (), True, T, T)
    now = [0.0]
    state = LiveState(
        CatalogueSources(features=online, content=content, scanner=online),
        RetrievalWiring(InMemoryTransitionStore()),
        the_release,
        full_every_s=10.0,
        clock=lambda: now[0],
    )
    state.build()
    online.rows["n0"] = ItemFeatureRow("n0", T + 5, title="n0", available=False)  # online only
    online.rows["fan"] = ItemFeatureRow("fan", T + 5, popularity=2.0)  # interactions only
    content.rows["n2"] = ContentRow("n2", "new", (), True, T + 6, T + 6)
    online.reads.clear()
    now[0] = 9.0
    state.refresh(full=False)
    assert online.reads == [["n2"]]  # the one change, not the whole catalogue
    assert "n2" in state.snapshot.catalog and state.snapshot.catalog["n0"].available
    assert "fan" not in state.snapshot.catalog
    now[0] = 10.0  # the full pass is due
    state.refresh(full=False)
    assert not state.snapshot.catalog["n0"].available and "fan" in state.snapshot.catalog


def test_a_failed_content_read_keeps_the_last_catalogue_and_brings_the_full_pass_forward() -> None:
    online, content, the_release = OnlineRows(), ContentRows(), release()
    content.rows["n0"] = ContentRow("n0", "first", (), True, T, T)
    state = live(online, content, the_release)
    state.build()
    content.failing = True
    content.rows["n1"] = ContentRow("n1", "second", (), True, T + 1, T + 1)
    state.refresh(full=False)
    assert set(state.snapshot.content) == {"n0"}  # kept, not emptied
    content.failing = False
    online.rows["fan"] = ItemFeatureRow("fan", T + 2, popularity=1.0)  # seen by a full pass only
    state.refresh(full=False)
    assert {"n0", "n1", "fan"} <= set(state.snapshot.catalog)


def test_an_incremental_pass_with_nothing_changed_keeps_the_served_state() -> None:
    online, content, the_release = OnlineRows(), ContentRows(), release()
    content.rows["n0"] = ContentRow("n0", "first", (), True, T, T)
    online.rows["n0"] = ItemFeatureRow("n0", T, title="first")
    state = live(online, content, the_release)
    state.build()
    built = state.refresh(full=False)
    online.reads.clear()
    assert state.refresh(full=False) is built  # no rows read, no sources rebuilt
    assert online.reads == []
    content.rows["n1"] = ContentRow("n1", "second", (), True, T + 1, T + 1)
    changed = state.refresh(full=False)
    assert changed is not built and "n1" in changed.retrieval.catalog
