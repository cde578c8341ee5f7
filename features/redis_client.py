"""The one way the project opens Redis: a single server, or a Redis Cluster when settings say so.

``redis_client(settings.redis)`` returns ``redis.Redis`` for ``AETHER_REDIS__CLUSTER=false`` (the
default) and ``redis.cluster.RedisCluster`` for ``true``, where ``REDIS_URL`` names any one node
of the cluster (the client discovers the others; the database must be 0). The stream worker
(``streams.build_worker``), serving (``serving.build_pipeline``) and the online feature store
build their clients here.

What differs on a cluster, and where it is handled: a command, script or ``MULTI``/``EXEC`` may
only touch keys of one hash slot. The stream state commits in the namespace's slot
(``features.transition_store.stream_slot``); Feast's row keys cannot carry a hash tag (Feast
fixes their bytes), so the online store writes them with one script call per slot
(:func:`scripts_by_slot`) and reads them with one ``HMGET`` per key, each in one cluster
pipeline (a round trip per node, not per key). Layout and reasons: ``docs/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias, cast

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from core.settings import RedisSettings

RedisClient: TypeAlias = redis.Redis | RedisCluster

#: One call of a script: its keys (all of one hash slot on a cluster) and its arguments.
ScriptCall: TypeAlias = tuple[Sequence[bytes | str], Sequence[bytes | str | int | float]]


def redis_client(
    settings: RedisSettings,
    *,
    timeout_s: float | None = None,
    connect_timeout_s: float | None = None,
) -> RedisClient:
    """A client of the deployment's Redis: ``RedisCluster`` when ``settings.cluster``.

    ``timeout_s`` bounds each command's socket read/write, ``connect_timeout_s`` (default:
    ``timeout_s``) each connect; ``None`` waits as long as the OS does.
    """
    url = settings.url.get_secret_value()
    connect = timeout_s if connect_timeout_s is None else connect_timeout_s
    if settings.cluster:
        return RedisCluster.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=connect)
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=connect)


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def registered_script(client: RedisClient, text: str) -> Script:
    """``client.register_script(text)`` for either client (redis-py types ``Script`` for
    ``redis.Redis`` only; a cluster routes its ``EVALSHA`` by the keys and loads it on every
    primary on ``NOSCRIPT``)."""
    return Script(cast(redis.Redis, client), text)


def positions_by_slot(keys: Sequence[bytes | str]) -> dict[int, list[int]]:
    """The positions of ``keys`` grouped by hash slot, each group in the keys' order (the slot
    is Redis Cluster's CRC16 of the key, or of its ``{tag}``, modulo 16384)."""
    groups: dict[int, list[int]] = {}
    for position, key in enumerate(keys):
        raw = key.encode() if isinstance(key, str) else key
        groups.setdefault(key_slot(raw), []).append(position)
    return groups


def scripts_by_slot(client: RedisClient, script: Script, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run ``script`` once per call, every call in one non-transactional cluster pipeline (one
    round trip per node); each call's keys must share a slot. Returns the replies in order.

    ``EVALSHA`` by the script's SHA1; a node that answers ``NOSCRIPT`` (restarted, failed over)
    gets the script loaded (on a cluster: on every primary) and the whole pipeline runs again, so the script must
    be safe to run twice (the row compare-and-set is: it writes the same rows).
    """
    if not calls:
        return []
    try:
        return _evalsha_pipeline(client, script.sha, calls)
    except NoScriptError:
        client.script_load(script.script)  # redis-py sends SCRIPT LOAD to every primary
        return _evalsha_pipeline(client, script.sha, calls)


def _evalsha_pipeline(client: RedisClient, sha: str, calls: Sequence[ScriptCall]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for keys, args in calls:
        # ``execute_command``: the cluster pipeline has no ``evalsha`` method, but routes the
        # command by its keys (all of one slot, or redis-py refuses it before sending).
        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
    return list(pipe.execute())
