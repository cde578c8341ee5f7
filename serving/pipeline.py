"""The request pipeline: features → retrieval → ranking → slate → explanation → impression.

One batched online-feature read for the user, one for the titles used in explanations; candidate
retrieval through ``retrieval.merge.CandidateRetriever`` (never empty while eligible items
remain); ranker scores when the user has a history (the sequence the model was trained on:
``model_history``), retrieval order otherwise. Every degraded
step is recorded in ``Slate.fallback_reasons`` and counted, never raised.

An experiment arm may choose the ranker (the release's model, retrieval order, or another
registered model version loaded beside it: ``arm_rankers``), the MMR strength, the exploration
slots, or a team-draft interleaving of two rankers (``ArmParams.interleave``; each item's team
goes into the response and the impression). Explanations are computed for the whole slate at once (``SlateExplainer``).

With ``batching`` (``serving.batching``; ``serving.batch_window_ms`` > 0), concurrent requests
share one feature read, one SASRec pass for their user vectors (per release) and one Milvus
search; each request's answers are the ones it would have had alone (vectors up to float
rounding), and a failed batch call degrades each of its requests as the single call would have.

Each stage is timed here and reported to the pipeline's ``StageObserver``
(``serving.stage_observer``: the stages and their names); what each answered request served is
counted in ``serving.server_metrics``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from core.errors import AetherError
from features.ports import OnlineFeatureReader
from features.rows import UserFeatureRow
from ranker.scoring import Ranker
from retrieval.catalog_index import CatalogIndex
from retrieval.merge import MergedRows
from retrieval.sources import (
    CandidateFilters,
    Exclusions,
    RetrievalRequest,
    UserEncoder,
)
from serving.batching import Expected, RequestBatching
from serving.domain import RecommendationQuery, Slate, SlateItem
from serving.experiments import Assignment, Experiments, parse_ranker
from serving.exploration_slots import EXPLORE_SOURCE, NEW_ITEM_SOURCES, Explorer
from serving.impressions import ImpressionLog, impression_of
from serving.interleaving import Team, seed_for, team_draft
from serving.ranked import RankedRows
from serving.rerank import (
    ScoredItem,
    UnitVectors,
    categories_from_catalog,
    mmr_select,
    similarity_of,
)
from serving.rules import PINNED_SOURCE, Rules
from serving.seen_items import WHOLE_SET_LIMIT, SeenItems
from serving.server_metrics import TOP_SCORE, count_served, set_model_version
from serving.serving_state import RetrievalState, ServingState, state_from_parts
from serving.stage_observer import PrometheusStageObserver, StageObserver, source_stage, timed
from serving.user_vector import VectorScorer

__all__ = ["PipelineConfig", "RecommendationPipeline", "RetrievalState", "ServingState"]

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    """Serving time as the product has it: the wall clock, in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def model_history(model: object, user: UserFeatureRow | None) -> tuple[str, ...]:
    """The user's sequence as ``model`` (a ranker or user encoder) was trained on it: every
    interaction (``recent_interactions``), unless the model says it was trained with dismissed
    items left out (``keeps_dismissed`` False: ``aether train --dismissals``), then
    ``recent_items``. A row written before ``recent_interactions`` existed gives
    ``recent_items`` (features/FEATURES.md)."""
    if user is None:
        return ()
    if getattr(model, "keeps_dismissed", True) and user.recent_interactions:
        return user.recent_interactions
    return user.recent_items


UNCREDITED = frozenset({PINNED_SOURCE, EXPLORE_SOURCE})  # slots no interleaved team placed
CONTENT_SOURCE = "content"


@dataclass(frozen=True)
class PipelineConfig:
    candidates: int = 200
    mmr_lambda: float = 1.0  # 1.0 = no diversity re-ranking; an experiment arm may override it
    exploration_slots: int = 0  # slots per slate given to Thompson exploration (arm may override)
    deadline_s: float = 0.1  # the pipeline's own budget; a shorter caller deadline wins
    retrieval_share: float = 0.6  # of the budget, for the candidate sources (asked in parallel)


class RecommendationPipeline:
    """Serves one ``ServingState`` at a time (``serving.serving_state``): each request reads the
    state once and uses nothing else, and ``swap`` replaces it between two requests' reads, so a
    response never mixes a release or a catalogue with another (its ``model_version`` names the
    release that produced it).

    Built from parts (``retrieval``, ``ranker``, ``item_vectors``, ``user_encoder``: a release
    given by hand, as tests and the benchmarks do) or from a ``state`` (``serving.live_state``).
    """

    def __init__(
        self,
        *,
        features: OnlineFeatureReader,
        impressions: ImpressionLog,
        retrieval: RetrievalState | None = None,
        ranker: Ranker | None = None,
        config: PipelineConfig = PipelineConfig(),
        rules: Rules | None = None,
        experiments: Experiments | None = None,
        explorer: Explorer | None = None,
        item_vectors: Mapping[str, np.ndarray] | None = None,
        user_encoder: UserEncoder | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        observer: StageObserver | None = None,
        state: ServingState | None = None,
        arm_rankers: Mapping[str, Ranker] | None = None,
        seen: SeenItems | None = None,
        batching: RequestBatching | None = None,
    ) -> None:
        """``batching``: share feature reads, user vectors and ANN searches among concurrent
        requests (its feature reader should be ``features``); ``None``: each request alone."""
        self._features = features
        self._batching = batching
        self._seen = seen
        self._impressions = impressions
        self._config = config
        self._rules = rules or Rules()
        self._experiments = experiments or Experiments()
        # The registered models arms rank with (``sasrec@<version>``), by version.
        self._arm_rankers = dict(arm_rankers or {})
        missing = sorted(self._experiments.model_versions() - self._arm_rankers.keys())
        if missing:
            raise ValueError(f"experiment arms rank with model versions not loaded: {missing}")
        self._explorer = explorer
        self._clock_ms = clock_ms  # serving time of the impression, never a feature value
        self._observer: StageObserver = observer or PrometheusStageObserver()
        if state is None:
            if retrieval is None:
                raise ValueError("give a state, or the retrieval state (and ranker) to serve")
            state = state_from_parts(retrieval, ranker, item_vectors, user_encoder)
        self._state = state
        set_model_version(state.release.label)

    # -- the served state ----------------------------------------------------------------------
    @property
    def state(self) -> ServingState:
        return self._state

    def swap(self, state: ServingState) -> None:
        """Serve ``state`` from the next request on (one reference assignment: atomic)."""
        previous = self._state
        self._state = state
        if state.release is not previous.release:
            set_model_version(state.release.label)

    @property
    def retrieval(self) -> RetrievalState:
        return self._state.retrieval

    @retrieval.setter
    def retrieval(self, retrieval: RetrievalState) -> None:
        """A refreshed catalogue for the same release."""
        self.swap(ServingState(self._state.view, retrieval))

    # The user encoder and the vector scorer, settable so a benchmark can compare wirings of the
    # same pipeline (``benchmarks.serve_load.pipeline_cpu``).
    @property
    def _user_encoder(self) -> UserEncoder | None:
        return self._state.release.encoder

    @_user_encoder.setter
    def _user_encoder(self, encoder: UserEncoder | None) -> None:
        view = self._state.view
        release = replace(view.release, encoder=encoder)
        self.swap(ServingState(replace(view, release=release), self._state.retrieval))

    @property
    def _vector_scorer(self) -> VectorScorer | None:
        return self._state.view.vector_scorer

    @_vector_scorer.setter
    def _vector_scorer(self, scorer: VectorScorer | None) -> None:
        view = replace(self._state.view, vector_scorer=scorer)
        self.swap(ServingState(view, self._state.retrieval))

    def _observe_source(self, name: str, wall_s: float, cpu_s: float) -> None:
        """The retriever's ``SourceTimer``: each candidate source is a stage of its own."""
        self._observer.stage(source_stage(name), wall_s, cpu_s)

    def _ranker_named(self, state: ServingState, ref: str | None) -> Ranker | None:
        """The arm's ranker: ``popularity`` is retrieval order (no model), ``sasrec@<version>``
        that registered model, else the release's model."""
        name, version = parse_ranker(ref)
        if name == "popularity":
            return None
        return self._arm_rankers[version] if version else state.release.ranker

    def recommend(self, query: RecommendationQuery, *, deadline_s: float | None = None) -> Slate:
        started, started_cpu = time.perf_counter(), time.thread_time()
        observer = self._observer
        state = self._state  # read once: this request sees one release and one catalogue
        retrieval = state.retrieval
        reasons: list[str] = list(state.release.fallback_reasons)
        assignment = self._experiments.assign(query.user_id, query.context)
        budget_s = (
            self._config.deadline_s
            if deadline_s is None
            else min(deadline_s, self._config.deadline_s)
        )
        with self._on_the_way() as expected:  # ends where the sources are asked (ANN batches)
            with timed(observer, "features"):
                user = self._read_user(query.user_id, reasons, started + budget_s)
            history = user.recent_items if user else ()
            with timed(observer, "user_vector"):
                user_vector = self._encode_user(state, user, reasons, started + budget_s, expected)
            as_of_ms = retrieval.as_of_ms if retrieval.as_of_ms is not None else self._clock_ms()
            seen_whole, seen_among = self._seen_lookup(query.user_id, reasons)
            request = RetrievalRequest(
                k=max(self._config.candidates, query.k),
                history=history,
                user_vector=user_vector,
                exclusions=Exclusions(
                    seen=frozenset(history),
                    dismissed=frozenset(user.dismissed_items) if user else frozenset(),
                    request=query.exclude_item_ids,
                ),
                filters=CandidateFilters(
                    categories=query.filters.include_categories,
                    excluded_categories=query.filters.exclude_categories,
                    available_only=query.filters.available_only,
                ),
                as_of_ms=as_of_ms,
                user_id=query.user_id,
                seen_whole=seen_whole,
                seen_among=seen_among,
            )
        retrieval_timeout = started + budget_s * self._config.retrieval_share - time.perf_counter()
        with timed(observer, "retrieval"):
            result = retrieval.retriever.retrieve(
                request, timeout_s=max(0.0, retrieval_timeout), on_source=self._observe_source
            )
        reasons.extend(f"source_failed:{name}" for name in result.failed_sources)
        request_id = uuid.uuid4().hex
        teams: dict[str, Team] = {}
        if assignment.params.interleave is None:
            ranker = self._ranker_named(state, assignment.params.ranker)
            model_version = state.release.version_of(ranker)
            with timed(observer, "ranking"):
                ranked = self._rank(state, ranker, user, user_vector, result.merged, reasons)
            with timed(observer, "rerank"):
                eligible, slate_items = self._rerank(ranked, query, state, assignment, request)
        else:
            eligible, slate_items, teams, model_version = self._interleave(
                state,
                assignment,
                user,
                user_vector,
                result.merged,
                query,
                request,
                request_id,
                reasons,
            )
        with timed(observer, "explore"):
            slate_items, propensities = self._explore(
                slate_items, eligible, query, assignment, request_id, as_of_ms, reasons
            )
        with timed(observer, "explanation"):
            titles = {
                i: m.title for i in history[-50:] if (m := retrieval.catalog.get(i)) and m.title
            }
            # An explored new item is explained as new ("new, similar to X"), not as exploration.
            explored = [i.item_id for i in slate_items if i.source == EXPLORE_SOURCE]
            origin = eligible.source_of(explored) if explored else {}
            explanations = state.view.explainer.explain_slate(
                [
                    (item.item_id, origin[item.item_id])
                    if item.source == EXPLORE_SOURCE
                    and origin.get(item.item_id) in NEW_ITEM_SOURCES
                    else (item.item_id, item.source)
                    for item in slate_items
                ],
                history,
                titles,
            )
        items = tuple(
            SlateItem(
                item_id=item.item_id,
                score=item.score,
                source=item.source,
                explanation=explanation,
                propensity=propensities.get(item.item_id, 1.0),
                # Pinned and explored items were placed by neither ranker: no credit.
                team=teams.get(item.item_id, "") if item.source not in UNCREDITED else "",
            )
            for item, explanation in zip(slate_items, explanations, strict=True)
        )
        slate = Slate(
            request_id=request_id,
            items=items,
            model_version=model_version,
            fallback=bool(reasons),
            fallback_reasons=tuple(reasons),
            experiment_arm=assignment.label,
        )
        with timed(observer, "impression"):
            self._log_impression(query, slate)
        count_served(reasons, result.merged.by_source(), (item.source for item in items))
        observer.request(time.perf_counter() - started, time.thread_time() - started_cpu)
        return slate

    @contextmanager
    def _on_the_way(self) -> Iterator[Expected | None]:
        """With batching: this request counted as on its way to the user-vector and ANN batch
        points while the block runs (their leaders wait for it, within their window)."""
        if self._batching is None:
            yield None
        else:
            with self._batching.expected() as expected:
                yield expected

    def _read_user(
        self, user_id: str, reasons: list[str], deadline: float
    ) -> UserFeatureRow | None:
        """The user's feature row (``deadline``: ``time.perf_counter`` time, for a batch)."""
        try:
            if self._batching is not None:
                return self._batching.users.submit(
                    None, user_id, deadline_s=deadline - time.perf_counter()
                )
            return self._features.read_users([user_id]).get(user_id)
        except AetherError as exc:
            log.warning("user features unavailable: %s", exc)
            reasons.append("features_unavailable")
            return None

    def _seen_lookup(
        self, user_id: str, reasons: list[str]
    ) -> tuple[
        Callable[[], Collection[str] | None] | None,
        Callable[[Sequence[str]], frozenset[str]] | None,
    ]:
        """The retriever's ``seen_whole`` and ``seen_among`` for this user: their seen set
        (``serving.seen_items``; the row's ``recent_items`` holds only the latest), whole when
        it is small. Unreadable: nothing more is excluded and the slate is flagged
        ``seen_items_unavailable``."""
        seen = self._seen
        if seen is None:
            return None, None

        def unreadable(exc: AetherError) -> None:
            log.warning("seen items unavailable: %s", exc)
            if "seen_items_unavailable" not in reasons:
                reasons.append("seen_items_unavailable")

        def seen_whole() -> Collection[str] | None:
            try:
                return seen.members_if_at_most(user_id, WHOLE_SET_LIMIT)
            except AetherError as exc:
                unreadable(exc)
                return ()

        def seen_among(item_ids: Sequence[str]) -> frozenset[str]:
            try:
                return frozenset(seen.seen_among(user_id, item_ids))
            except AetherError as exc:
                unreadable(exc)
                return frozenset()

        return seen_whole, seen_among

    def _encode_user(
        self,
        state: ServingState,
        user: UserFeatureRow | None,
        reasons: list[str],
        deadline: float,
        expected: Expected | None,
    ) -> np.ndarray | None:
        """The user vector of the ANN and content sources (and of the ranker, when it is the
        encoder); ``None``: the sources encode for themselves (no encoder) or skip (cold user).
        With batching, one pass for the concurrent requests of the same release."""
        encoder = state.release.encoder
        if encoder is None:
            return None
        history = model_history(encoder, user)
        try:
            if self._batching is not None:
                return self._batching.vectors.submit(
                    state.release,
                    history,
                    deadline_s=deadline - time.perf_counter(),
                    expected=expected,
                )
            return encoder.encode_user(history)
        except Exception:  # a broken encoder must not take the slate down: sources fall back
            log.exception("user encoder failed")
            reasons.append("encoder_failed")
            return None

    def _rank(
        self,
        state: ServingState,
        ranker: Ranker | None,
        user: UserFeatureRow | None,
        user_vector: np.ndarray | None,
        merged: MergedRows,
        reasons: list[str],
    ) -> RankedRows:
        """The merged candidates best first: by the ranker's scores, or in retrieval order
        (scores n … 1) without a ranker or a history. Arrays only (``RankedRows``)."""
        labels, names = _labels(merged)

        def retrieval_order() -> RankedRows:
            scores = np.arange(len(merged), 0, -1, dtype=np.float64)
            return RankedRows(merged.index, merged.rows, scores, labels, names)

        history = model_history(ranker, user)
        if ranker is None or not history or not len(merged):
            return retrieval_order()
        try:
            scorer = state.view.vector_scorer
            # The user vector is the release ranker's: an arm's own model encodes the user itself.
            if scorer is not None and user_vector is not None and ranker is state.release.ranker:
                # no second encoding, no lookup per candidate
                scores = scorer.score_rows(user_vector, merged.ids, merged.rows)
            else:
                scores = ranker.score(history, merged.item_ids())
        except Exception:  # a broken model must not take the slate down
            log.exception("ranker failed; serving retrieval order")
            reasons.append("ranker_failed")
            return retrieval_order()
        values = np.asarray(scores, dtype=np.float64)
        if values.size:
            TOP_SCORE.observe(float(values.max()))
        order = np.argsort(-values, kind="stable")
        return RankedRows(merged.index, merged.rows[order], values[order], labels[order], names)

    def _rerank(
        self,
        ranked: RankedRows,
        query: RecommendationQuery,
        state: ServingState,
        assignment: Assignment,
        request: RetrievalRequest,
    ) -> tuple[RankedRows, list[ScoredItem]]:
        """Business rules and diversity, in the order of ``serving.rules``:
        filters → boosts → MMR with category caps → pins. Returns (eligible ranked, slate)."""
        allowed, items = self._diversify(ranked, query, state, assignment)
        return allowed, self._pin(items, query, state.retrieval, request)

    def _interleave(
        self,
        state: ServingState,
        assignment: Assignment,
        user: UserFeatureRow | None,
        user_vector: np.ndarray | None,
        candidates: MergedRows,
        query: RecommendationQuery,
        request: RetrievalRequest,
        request_id: str,
        reasons: list[str],
    ) -> tuple[RankedRows, list[ScoredItem], dict[str, Team], str]:
        """Team-draft interleaving of the arm's two rankers (``serving.interleaving``).

        Each ranker's list goes through the same filters, boosts and MMR as a normal slate; the
        two are merged by team draft (coin seeded by the request id, so a logged request replays
        to the same slate); pins apply to the merged slate. Returns (eligible ranked of ranker A,
        slate, team of each drafted item, model version ``interleaved(<A>,<B>)``)."""
        assert assignment.params.interleave is not None
        rankings = []
        versions = []
        for name in assignment.params.interleave:  # one "ranking" stage per ranker
            ranker = self._ranker_named(state, name)
            versions.append(state.release.version_of(ranker))
            with timed(self._observer, "ranking"):
                rankings.append(self._rank(state, ranker, user, user_vector, candidates, reasons))
        with timed(self._observer, "rerank"):
            (allowed_a, items_a), (_, items_b) = (
                self._diversify(ranked, query, state, assignment) for ranked in rankings
            )
            merged = team_draft(
                [i.item_id for i in items_a],
                [i.item_id for i in items_b],
                query.k,
                seed=seed_for(request_id),
            )
            by_team = {"A": {i.item_id: i for i in items_a}, "B": {i.item_id: i for i in items_b}}
            drafted = [
                by_team[team][item] for item, team in zip(merged.items, merged.teams, strict=True)
            ]
            teams = dict(zip(merged.items, merged.teams, strict=True))
            slate = self._pin(drafted, query, state.retrieval, request)
        return allowed_a, slate, teams, f"interleaved({versions[0]},{versions[1]})"

    def _diversify(
        self,
        ranked: RankedRows,
        query: RecommendationQuery,
        state: ServingState,
        assignment: Assignment,
    ) -> tuple[RankedRows, list[ScoredItem]]:
        """Filters → boosts → MMR with category caps (``diversify``)."""
        mmr_lambda = assignment.params.mmr_lambda
        return diversify(
            ranked,
            self._rules,
            query.k,
            lambda_=self._config.mmr_lambda if mmr_lambda is None else mmr_lambda,
            vectors_of=state.view.row_vectors,
        )

    def _pin(
        self,
        items: list[ScoredItem],
        query: RecommendationQuery,
        retrieval: RetrievalState,
        request: RetrievalRequest,
    ) -> list[ScoredItem]:
        """Pinned items at their positions (``Rules.apply_after_rerank``)."""
        categories_of = categories_from_catalog(retrieval.catalog)

        def eligible(
            item_id: str,
        ) -> bool:  # for pins: the same exclusions and filters as retrieval
            return (
                item_id in retrieval.catalog
                and item_id not in request.exclusions
                and retrieval.catalog.passes(item_id, request.filters)
            )

        return self._rules.apply_after_rerank(
            items, query.k, categories_of, eligible=eligible, now_ms=self._clock_ms()
        )

    def _explore(
        self,
        slate: list[ScoredItem],
        eligible: RankedRows,
        query: RecommendationQuery,
        assignment: Assignment,
        request_id: str,
        at_ms: int,
        reasons: list[str],
    ) -> tuple[list[ScoredItem], dict[str, float]]:
        budget = assignment.params.exploration_slots
        budget = self._config.exploration_slots if budget is None else budget
        if self._explorer is None or budget <= 0:
            return slate, {}
        try:
            return self._explorer.fill(
                slate,
                eligible,
                query.k,
                budget,
                request_id=request_id,
                context=query.context,
                at_ms=at_ms,
            )
        except AetherError as exc:
            log.warning("exploration skipped: %s", exc)
            reasons.append("posteriors_unavailable")
            return slate, {}

    def _log_impression(self, query: RecommendationQuery, slate: Slate) -> None:
        self._impressions.publish(impression_of(query, slate, at_ms=self._clock_ms()))


def diversify(
    ranked: RankedRows,
    rules: Rules,
    k: int,
    *,
    lambda_: float,
    vectors_of: Callable[[CatalogIndex], UnitVectors | None],
) -> tuple[RankedRows, list[ScoredItem]]:
    """Filters → boosts → MMR with category caps, on arrays (``serving.rules`` steps 1-3).
    Returns (the eligible ranked, the top ``k`` as ``ScoredItem``s). Categories and vectors
    (``vectors_of``: ``ReleaseView.row_vectors``) are the catalogue's, per row, derived per
    snapshot and only when MMR weighs diversity (the default λ = 1 never asks); equal
    to ``Rules.apply_before_rerank`` then ``mmr_rerank`` on ``ScoredItem``s
    (``tests/unit/serving/test_ranked_rows_equal_objects.py``)."""
    index = ranked.index
    allowed = rules.on(index).apply(ranked)
    rows = allowed.rows

    def similarity(order: np.ndarray) -> np.ndarray:
        picked = rows[order]
        vectors = vectors_of(index)
        unit = None if vectors is None else (vectors[0][picked], vectors[1][picked])
        return similarity_of(picked.size, index.category_bits[picked], unit)

    def categories_at(position: int) -> tuple[str, ...]:
        return index.catalog[index.ids[rows[position]]].categories

    positions = mmr_select(
        allowed.scores,
        k,
        lambda_=lambda_,
        similarity=similarity,
        categories_at=categories_at,
        category_caps=rules.category_caps,
        default_cap=rules.default_cap,
    )
    return allowed, allowed.items(positions)


def _labels(merged: MergedRows) -> tuple[np.ndarray, tuple[str, ...]]:
    """The source each candidate is credited to and explained by, as indices into the names
    returned: the largest contributor to its fused score, except that an item the ``content``
    source proposed is a new item (that source covers only items the serving index lacks) and
    is explained as one ("new, similar to X"), whichever source's vote weighed more (in a small
    catalogue, the popular source's tail)."""
    labels = merged.credited.copy()
    names = merged.names
    content = merged.proposed_by(CONTENT_SOURCE)
    if content.any():
        if CONTENT_SOURCE not in names:
            names = (*names, CONTENT_SOURCE)
        labels[content] = names.index(CONTENT_SOURCE)
    return labels, names
