"""The public event contracts (docs/architecture.md): one framework-free module every component uses.

``Interaction`` is the events topic; ``CatalogItem`` the items topic; ``PrivacyRequest`` the privacy
topic; ``Impression`` the impressions topic written by serving. ``decode_*`` turn raw Kafka values
into models or raise :class:`core.errors.SchemaError` with a machine-readable ``reason``.
"""

from events.codec import decode, decode_interaction, encode
from events.models import (
    EVENT_TYPES,
    CatalogItem,
    EventType,
    Impression,
    ImpressionItem,
    Interaction,
    PrivacyAction,
    PrivacyRequest,
)

__all__ = [
    "EVENT_TYPES",
    "CatalogItem",
    "EventType",
    "Impression",
    "ImpressionItem",
    "Interaction",
    "PrivacyAction",
    "PrivacyRequest",
    "decode",
    "decode_interaction",
    "encode",
]
