"""One exception tree for the whole project.

    AetherError
     ├── ConfigError              settings are missing or contradictory
     ├── SchemaError              an event, request or file does not match its contract
     │    └── LateEventError      an event arrived beyond the allowed lateness
     ├── DependencyUnavailable    a backing service (Kafka, Redis, Milvus, Feast) cannot be reached
     ├── NotFoundError            an entity, model or collection does not exist
     └── ModelError               a model cannot be loaded, trained or evaluated

Adapters wrap third-party exceptions into these; the gRPC interceptor maps them to status codes.
"""

from __future__ import annotations


class AetherError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(AetherError):
    """Settings are missing, malformed or contradictory."""


class SchemaError(AetherError, ValueError):
    """Input does not match its published contract.

    ``reason`` is a short machine-friendly code (e.g. ``invalid_json``) used for dead letters
    and metrics; the message is for humans.
    """

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class LateEventError(SchemaError):
    """An event arrived more than the allowed lateness behind its partition's watermark."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="late")


class DependencyUnavailable(AetherError):
    """A backing service cannot be reached or answered with an error."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"{service} unavailable: {message}")
        self.service = service


class NotFoundError(AetherError, LookupError):
    """An entity, model, collection or file does not exist."""


class ModelError(AetherError):
    """A model cannot be loaded, trained, scored or evaluated."""
