"""The dashboard's configuration from the one settings object (the entry points call this)."""

from __future__ import annotations

from core.settings import Settings
from dashboard.scrape import ScrapeTarget
from dashboard.server import DashboardConfig
from dashboard.targets import default_targets
from dashboard.topic_reader import TopicReaderConfig

DEFAULT_PORT = 8050


def config_from_settings(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    targets: tuple[ScrapeTarget, ...] | None = None,
    interval_s: float = 5.0,
    read_topics: bool = True,
) -> DashboardConfig:
    """``targets`` ``None``: the worker and every server process at the settings' addresses
    (``dashboard.targets``); ``read_topics``: the drift log and exposure from the broker."""
    topics = (
        TopicReaderConfig(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            drift_topic=settings.topic("drift"),
            impressions_topic=settings.topic("impressions"),
            group_id=f"{settings.namespace}-dashboard",  # never joined: partitions are assigned
        )
        if read_topics
        else None
    )
    return DashboardConfig(
        host=host,
        port=port,
        targets=default_targets(settings.metrics, settings.serving.processes)
        if targets is None
        else targets,
        topics=topics,
        events_topic=settings.topic("events"),
        interval_s=interval_s,
    )
