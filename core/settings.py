"""One frozen settings object, built only at entry points and handed down section by section.

Environment variables: ``AETHER_<SECTION>__<FIELD>`` (e.g. ``AETHER_SERVING__PORT=50052``), plus the
standard ``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL`` and ``MILVUS_URI`` and ``AETHER_NAMESPACE``.
``infra/aether.env.example`` documents every field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError

_NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def checked_namespace(value: str) -> str:
    if not _NAMESPACE_RE.match(value):
        raise ValueError(
            "namespace must be 1-32 chars of lowercase letters, digits and '_', "
            f"starting with a letter; got {value!r}"
        )
    return value


class _HasNamespace(Protocol):
    @property
    def namespace(self) -> str: ...


class NamespacedNames:
    """Names derived from the namespace, one definition for ``Settings`` and ``Deployment``:
    two namespaces share nothing."""

    __slots__ = ()

    def topic(self: _HasNamespace, name: str) -> str:
        """Kafka topic name, e.g. ``topic("events") == "aether.events"``."""
        return f"{self.namespace}.{name}"

    def redis_key(self: _HasNamespace, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    @property
    def consumer_group(self: _HasNamespace) -> str:
        return f"{self.namespace}-worker"

    @property
    def feast_project(self: _HasNamespace) -> str:
        return self.namespace

    def milvus_collection(self: _HasNamespace, name: str) -> str:
        return f"{self.namespace}_{name}"


@dataclass(frozen=True, slots=True)
class Deployment(NamespacedNames):
    """One deployment's namespace and data folder (``Settings.deployment``): the small value an
    adapter takes next to its own settings section, e.g. ``ItemIndex.from_settings(
    settings.milvus, settings.deployment)``, instead of the whole ``Settings``."""

    namespace: str
    data_dir: Path = Path(".aether")

    def __post_init__(self) -> None:
        try:
            checked_namespace(self.namespace)
        except ValueError as exc:  # Settings reports it through pydantic; here, as config
            raise ConfigError(str(exc)) from None


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = Field(default=4, ge=1, le=1024)
    # The librdkafka/aiokafka default (45 s) makes a new group's join on Tansu slow; see
    # `aether stack up --probe` and docs/benchmarks/README.md.
    session_timeout_ms: int = Field(default=6000, ge=1000)
    # Retention of the topics that hold user ids (events, impressions, privacy requests, dead
    # letters, late events), set when the topics are created (streams.topics.ensure_topics):
    # what a deletion request cannot reach in Kafka is gone after this (features/FEATURES.md).
    user_data_retention_hours: int = Field(default=7 * 24, ge=1)


class RedisSettings(_Section):
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # A Redis Cluster: ``url`` names any one of its nodes (the client discovers the others) and
    # its database must be 0. Every client is built by ``features.redis_client.redis_client``.
    cluster: bool = False


class MilvusSettings(_Section):
    uri: str = ".aether/milvus.db"
    token: SecretStr = SecretStr("")


class StreamSettings(_Section):
    allowed_lateness_ms: int = Field(default=60_000, ge=0)
    dedup_horizon_ms: int = Field(default=24 * 3600 * 1000, ge=0)
    sequence_length: int = Field(default=200, ge=1, le=10_000)
    batch_size: int = Field(default=500, ge=1)
    # A batch whose first record is older than catch_up_lag_s (a backlog) takes up to
    # catch_up_batch_size events (streams.batching.CatchUp).
    catch_up_batch_size: int = Field(default=5000, ge=1)
    catch_up_lag_s: float = Field(default=1.0, ge=0)
    batch_timeout_s: float = Field(default=0.05, gt=0)
    # The item-features and bandit-outcome agents take a batch no earlier than this long after
    # its first record was appended (streams.batching: fewer, larger batches of forwarded
    # updates near real time; item rows are that much less fresh); 0 turns it off.
    linger_s: float = Field(default=0.1, ge=0, le=10)
    # Faust's queue of fetched events per agent (its stream_buffer_maxsize); one poll of the
    # consumer takes at most a fifth of it, so a delivery never waits for room (streams.app).
    buffer_events: int = Field(default=32_768, ge=16)
    max_event_bytes: int = Field(default=64 * 1024, ge=256)
    max_future_skew_ms: int = Field(default=24 * 3600 * 1000, ge=0)
    # How every producer the project owns partitions keys (streams.publish.new_producer):
    # murmur2 as Java clients and kafkajs do, so one user's records share a partition.
    producer_partitioner: Literal[
        "murmur2_random",
        "murmur2",
        "consistent_random",
        "consistent",
        "random",
        "fnv1a",
        "fnv1a_random",
    ] = "murmur2_random"
    # How often the worker moves the batches' offline rows (event and impression logs, feature
    # history) from their outbox in Redis into parquet files (streams.sinks).
    offline_flush_s: float = Field(default=1.0, gt=0)
    # A source partition with no record for this long (wall time) stops holding back the
    # attribution watermark (Flink's withIdleness); 0 turns the rule off.
    idle_partition_timeout_s: float = Field(default=30.0, ge=0)
    # The catalogue agent embeds each catalogue update's text (all-MiniLM-L6-v2, loaded on the
    # first update) into the content collection in Milvus, where serving finds new items.
    embed_catalogue: bool = True
    # Only catalogue updates with an event time at or after this (epoch ms) are embedded: the
    # catalogue before it was indexed in batch (`aether index` with its content map), so a
    # replay of that history does not embed it again. None: every update.
    embed_catalogue_from_ms: int | None = None

    @field_validator("embed_catalogue_from_ms", mode="before")
    @classmethod
    def _empty_is_every_update(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class ServingSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    max_workers: int = Field(default=8, ge=1)
    # Server processes sharing the port (SO_REUSEPORT), each with its own pipeline: one Python
    # process is GIL-bound to about one core (serving/processes.py).
    processes: int = Field(default=1, ge=1)
    max_concurrent_rpcs: int = Field(default=16, ge=1)  # beyond: RESOURCE_EXHAUSTED, not a queue
    default_k: int = Field(default=10, ge=1)
    max_k: int = Field(default=200, ge=1)
    max_exclude: int = Field(default=1000, ge=0)
    candidates: int = Field(default=200, ge=1)
    deadline_ms: int = Field(default=100, ge=1)
    # Micro-batching across concurrent requests (serving/batching.py): requests meeting at the
    # feature read, the user vector or the ANN search share one call; a batch waits for more at
    # most this long (never past a request's deadline, never when nothing else is in flight).
    # 0 = off: each request alone.
    batch_window_ms: float = Field(default=1.0, ge=0, le=20)
    batch_max_size: int = Field(default=32, ge=1, le=1024)
    # 1.0 = ranker order (default). Diversity is opt-in (per experiment arm): in the demo's closed
    # loop MMR cost most of the hits (docs/benchmarks/README.md).
    mmr_lambda: float = Field(default=1.0, ge=0.0, le=1.0)
    rules_file: str = ""  # business rules YAML (infra/rules.example.yaml); "" = none
    experiments_file: str = ""  # experiments YAML (infra/experiments.example.yaml); "" = none
    # Security (serving/auth.py); empty = off. Tokens in the environment as a JSON list.
    auth_tokens: tuple[SecretStr, ...] = ()
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # set: mutual TLS, clients must present a cert this CA signed

    @model_validator(mode="after")
    def _tls_files_come_together(self) -> ServingSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self


class BanditSettings(_Section):
    """Online posteriors and exploration (``bandits/``); all times are event-time milliseconds."""

    attribution_window_ms: int = Field(default=30 * 60 * 1000, ge=1)
    half_life_ms: int | None = Field(default=7 * 24 * 3600 * 1000, ge=1)  # None: no forgetting
    prior_alpha: float = Field(default=1.0, gt=0)
    prior_beta: float = Field(default=1.0, gt=0)
    segment_keys: tuple[str, ...] = ("surface", "device")
    exploration_slots: int = Field(default=1, ge=0)
    propensity_draws: int = Field(default=4000, ge=100)


class MetricsSettings(_Section):
    """Where a process serves Prometheus metrics (``/metrics``; docs/metrics.md).

    ``port``: ``None`` (the default, empty in the environment) means the process's own default
    (``core.metrics_exporter``: worker 9464, server 9465; with ``serving.processes = N`` the
    server's process ``i`` listens on ``port + i``); ``0`` turns the exporter off.
    """

    host: str = "127.0.0.1"  # 0.0.0.0 in a container, or Prometheus cannot reach it
    port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("port", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class Settings(BaseSettings, NamespacedNames):
    """Everything configurable, in one place. Secrets print as ``**********``."""

    model_config = SettingsConfigDict(
        env_prefix="AETHER_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    namespace: str = "aether"
    data_dir: Path = Path(".aether")
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    milvus: MilvusSettings = MilvusSettings()
    stream: StreamSettings = StreamSettings()
    serving: ServingSettings = ServingSettings()
    bandit: BanditSettings = BanditSettings()
    metrics: MetricsSettings = MetricsSettings()

    # Standard, unprefixed variables win over the nested defaults (see ``model_post_init``).
    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS"), exclude=True
    )
    redis_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL"), exclude=True
    )
    milvus_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MILVUS_URI"), exclude=True
    )

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        return checked_namespace(value)

    def model_post_init(self, __context: Any) -> None:
        overrides: dict[str, BaseModel] = {}
        if self.kafka_bootstrap_servers:
            overrides["kafka"] = self.kafka.model_copy(
                update={"bootstrap_servers": self.kafka_bootstrap_servers}
            )
        if self.redis_url is not None and self.redis_url.get_secret_value():
            overrides["redis"] = self.redis.model_copy(update={"url": self.redis_url})
        if self.milvus_uri:
            overrides["milvus"] = self.milvus.model_copy(update={"uri": self.milvus_uri})
        for name, value in overrides.items():
            object.__setattr__(self, name, value)

    @property
    def deployment(self) -> Deployment:
        """The namespace and data folder alone: what an adapter needs besides its own section."""
        return Deployment(self.namespace, self.data_dir)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and ``.aether/stack.env`` values already exported)."""
    return Settings(**overrides)
