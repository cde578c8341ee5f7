"""Serving queries Milvus with the ranker's encoder only when Milvus holds that ranker's vectors."""

from __future__ import annotations

import logging

import numpy as np

from benchmarks.retrieval_measures import plan_grid
from retrieval.build_retriever import DEFAULT_PLAN, RANKER_PLAN, choose_user_encoder
from retrieval.encoders import ItemEmbeddings, MeanHistoryEncoder


class _Ranker:
    model_version = "sasrec-a"

    def encode_user(self, history: tuple[str, ...]) -> np.ndarray:
        return np.ones(2, dtype=np.float32)


VECTORS = ItemEmbeddings(["i1", "i2"], np.eye(2, dtype=np.float32))


def test_the_rankers_own_embeddings_are_queried_with_its_encoder_and_plan():
    ranker = _Ranker()
    encoder, plan = choose_user_encoder(VECTORS, "sasrec-a", ranker)
    assert encoder is ranker and plan == RANKER_PLAN and plan != DEFAULT_PLAN


def test_the_ranker_plan_is_one_of_the_plans_tuning_compares():
    assert dict(RANKER_PLAN) in plan_grid(DEFAULT_PLAN)


def test_baseline_vectors_use_the_mean_history_encoder():
    encoder, plan = choose_user_encoder(VECTORS, None, _Ranker())
    assert isinstance(encoder, MeanHistoryEncoder) and plan == DEFAULT_PLAN
    encoder, plan = choose_user_encoder(VECTORS, None, None)
    assert isinstance(encoder, MeanHistoryEncoder) and plan == DEFAULT_PLAN


def test_another_rankers_vectors_fall_back_to_the_mean_history_encoder_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        encoder, plan = choose_user_encoder(VECTORS, "sasrec-old", _Ranker())
    assert isinstance(encoder, MeanHistoryEncoder) and plan == DEFAULT_PLAN
    assert "sasrec-old" in caplog.text and "aether index --ranker-checkpoint" in caplog.text
