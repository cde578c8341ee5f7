from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers

DESCRIPTOR: _descriptor.FileDescriptor

class Filters(_message.Message):
    __slots__ = ("available_only", "exclude_categories", "include_categories")
    INCLUDE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_ONLY_FIELD_NUMBER: _ClassVar[int]
    include_categories: _containers.RepeatedScalarFieldContainer[str]
    exclude_categories: _containers.RepeatedScalarFieldContainer[str]
    available_only: bool
    def __init__(
        self,
        include_categories: _Iterable[str] | None = ...,
        exclude_categories: _Iterable[str] | None = ...,
        available_only: bool | None = ...,
    ) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("context", "exclude_item_ids", "filters", "k", "user_id")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: str | None = ..., value: str | None = ...) -> None: ...

    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    context: _containers.ScalarMap[str, str]
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    filters: Filters
    def __init__(
        self,
        user_id: str | None = ...,
        k: int | None = ...,
        context: _Mapping[str, str] | None = ...,
        exclude_item_ids: _Iterable[str] | None = ...,
        filters: Filters | _Mapping | None = ...,
    ) -> None: ...

class RecommendedItem(_message.Message):
    __slots__ = ("explanation", "item_id", "propensity", "score", "source")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    source: str
    explanation: str
    propensity: float
    def __init__(
        self,
        item_id: str | None = ...,
        score: float | None = ...,
        source: str | None = ...,
        explanation: str | None = ...,
        propensity: float | None = ...,
    ) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = (
        "experiment_arm",
        "fallback",
        "fallback_reasons",
        "items",
        "model_version",
        "request_id",
    )
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASONS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ARM_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    items: _containers.RepeatedCompositeFieldContainer[RecommendedItem]
    model_version: str
    fallback: bool
    fallback_reasons: _containers.RepeatedScalarFieldContainer[str]
    experiment_arm: str
    def __init__(
        self,
        request_id: str | None = ...,
        items: _Iterable[RecommendedItem | _Mapping] | None = ...,
        model_version: str | None = ...,
        fallback: bool | None = ...,
        fallback_reasons: _Iterable[str] | None = ...,
        experiment_arm: str | None = ...,
    ) -> None: ...
