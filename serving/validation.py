"""Turn a raw request into a ``RecommendationQuery`` or raise ``SchemaError`` with a clear message.

Pure: works on plain Python values so the servicer, the SDK and tests share one set of rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from core.errors import SchemaError
from core.settings import ServingSettings
from serving.domain import Filters, RecommendationQuery

MAX_ID_CHARS = 128
MAX_CONTEXT_ENTRIES = 32
MAX_CONTEXT_CHARS = 256
MAX_FILTER_CATEGORIES = 64


def _check_id(value: str, what: str) -> str:
    if not value:
        raise SchemaError(f"{what} must not be empty", reason="invalid_argument")
    if len(value) > MAX_ID_CHARS:
        raise SchemaError(
            f"{what} is {len(value)} chars; at most {MAX_ID_CHARS}", reason="invalid_argument"
        )
    return value


def build_query(
    *,
    user_id: str,
    k: int,
    context: Mapping[str, str],
    exclude_item_ids: Iterable[str],
    include_categories: Iterable[str] = (),
    exclude_categories: Iterable[str] = (),
    include_unavailable: bool = False,
    available_only: bool = False,
    limits: ServingSettings,
) -> RecommendationQuery:
    """``include_unavailable`` opts in to items the catalogue marks unavailable;
    ``available_only`` (the older field, now the default) still wins over it when set."""
    _check_id(user_id, "user_id")
    if k == 0:
        k = limits.default_k
    if not 1 <= k <= limits.max_k:
        raise SchemaError(f"k must be in 1..{limits.max_k}; got {k}", reason="invalid_argument")
    excludes = list(exclude_item_ids)
    if len(excludes) > limits.max_exclude:
        raise SchemaError(
            f"exclude_item_ids has {len(excludes)} ids; at most {limits.max_exclude}",
            reason="invalid_argument",
        )
    for item_id in excludes:
        _check_id(item_id, "exclude_item_ids entry")
    if len(context) > MAX_CONTEXT_ENTRIES:
        raise SchemaError(
            f"context has {len(context)} entries; at most {MAX_CONTEXT_ENTRIES}",
            reason="invalid_argument",
        )
    for key, value in context.items():
        if not key or len(key) > MAX_CONTEXT_CHARS or len(value) > MAX_CONTEXT_CHARS:
            raise SchemaError(
                f"context keys must be 1-{MAX_CONTEXT_CHARS} chars and values at most "
                f"{MAX_CONTEXT_CHARS}",
                reason="invalid_argument",
            )
    include, exclude = frozenset(include_categories), frozenset(exclude_categories)
    for category in include | exclude:
        _check_id(category, "filter category")
    if len(include) + len(exclude) > MAX_FILTER_CATEGORIES:
        raise SchemaError(
            f"at most {MAX_FILTER_CATEGORIES} filter categories", reason="invalid_argument"
        )
    return RecommendationQuery(
        user_id=user_id,
        k=k,
        context=dict(context),
        exclude_item_ids=frozenset(excludes),
        filters=Filters(include, exclude, include_unavailable and not available_only),
    )
