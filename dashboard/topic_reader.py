"""Reads ``<ns>.drift`` (the drift log) and ``<ns>.impressions`` (exposure) in one thread.

One confluent-kafka consumer with explicit partition assignment, no group membership and no
commits: the page is a reader, never a member of the worker's groups, and it does not pay a
group join (seconds on Tansu). The drift topic is read from its beginning (detections are few and
the log is the page's history); impressions from the last ``impressions_tail`` records of each
partition (exposure needs a recent window, not the whole log). A topic that does not exist yet
is looked for again every ``refresh_s`` (the worker may create it later); a broker that does not
answer is reported on the page (``error``) and retried, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from dashboard.drift_log import DriftLog
from dashboard.exposure_view import ExposureTracker
from events.models import Impression

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicReaderConfig:
    bootstrap_servers: str
    drift_topic: str
    impressions_topic: str
    group_id: str  # required by librdkafka; never joined, never committed
    impressions_tail: int = 2_000
    refresh_s: float = 5.0
    poll_s: float = 0.5


class TopicReader:
    def __init__(
        self, config: TopicReaderConfig, drift: DriftLog, exposure: ExposureTracker
    ) -> None:
        self.config = config
        self.drift = drift
        self.exposure = exposure
        self.error: str | None = None  # the last broker problem, for the page; None when fine
        self.missing: tuple[str, ...] = ()  # topics that do not exist (yet)
        self.skipped_impressions = 0
        self._assigned: set[str] = set()
        self._logged_codes: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard-topics", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(
            {
                "bootstrap.servers": self.config.bootstrap_servers,
                "group.id": self.config.group_id,
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "allow.auto.create.topics": False,
                "socket.timeout.ms": 5000,
                "reconnect.backoff.max.ms": 10_000,
                # A broker that is down shows on the page and once in the log (``_on_error``),
                # not as librdkafka's line per reconnect attempt
                "log_level": 0,
                "error_cb": self._on_error,
            }
        )
        try:
            next_refresh = 0.0
            while not self._stop.is_set():
                if len(self._assigned) < 2 and time.monotonic() >= next_refresh:
                    self._assign_new_topics(consumer)
                    next_refresh = time.monotonic() + self.config.refresh_s
                if not self._assigned:
                    self._stop.wait(self.config.poll_s)
                    continue
                for message in consumer.consume(500, timeout=self.config.poll_s):
                    self._handle(message)
        except Exception as exc:  # the page keeps serving the metrics it has
            self.error = f"topic reader stopped: {exc}"
            log.exception("dashboard topic reader stopped")
        finally:
            consumer.close()

    @property
    def problem(self) -> str | None:
        """What the page says about the topics: a broker error, or the topics not there yet."""
        if self.error:
            return self.error
        return f"waiting for topic(s): {', '.join(self.missing)}" if self.missing else None

    def _on_error(self, error: Any) -> None:
        self.error = f"broker {self.config.bootstrap_servers}: {error.str()}"
        if error.code() not in self._logged_codes:  # once per kind, not per reconnect attempt
            self._logged_codes.add(error.code())
            log.warning("dashboard topic reader: %s (retrying)", self.error)

    def _assign_new_topics(self, consumer: Any) -> None:
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        try:
            metadata = consumer.list_topics(timeout=5)
        except KafkaException as exc:
            self.error = f"broker {self.config.bootstrap_servers} unavailable: {exc}"
            return
        missing = []
        wanted = {self.config.drift_topic, self.config.impressions_topic} - self._assigned
        partitions: list[Any] = []
        for topic in sorted(wanted):
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                missing.append(topic)
                continue
            for p in sorted(meta.partitions):
                if topic == self.config.drift_topic:
                    partitions.append(TopicPartition(topic, p, OFFSET_BEGINNING))
                    continue
                try:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                except KafkaException as exc:
                    self.error = f"cannot read offsets of {topic}: {exc}"
                    return
                partitions.append(
                    TopicPartition(topic, p, max(low, high - self.config.impressions_tail))
                )
            self._assigned.add(topic)
        if partitions:
            consumer.incremental_assign(partitions)
        self.missing, self.error = tuple(missing), None

    def _handle(self, message: Any) -> None:
        if message.error() is not None:
            self.error = f"{message.topic()}: {message.error()}"
            return
        self.error = None  # a record arrived: the broker answers again
        if message.topic() == self.config.drift_topic:
            self.drift.add_record(message.value() or b"", time.time())
            return
        try:
            impression = Impression.model_validate_json(message.value() or b"")
        except (ValidationError, ValueError):
            self.skipped_impressions += 1
            return
        self.exposure.add_slate(item.item_id for item in impression.items)
