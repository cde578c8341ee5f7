"""Milvus side of the stack: a Milvus Lite file, or a Milvus server given by URL.

Milvus Lite (``milvus-lite`` 2.5.1) is not a server we start: every Python process that opens
``MilvusClient("<file>.db")`` spawns its own local ``milvus`` process on a Unix socket and holds an
exclusive lock (``.<file>.db.lock``) for as long as it lives; that process exits when the lock
is released (``release_server``) or the owning Python process ends. Two processes cannot open
the same file at once, so ``stack up`` opens the file only to check it, then releases it at
once to leave no process behind and the file free for the worker or the server.

Sharing one file between processes (the server, ``aether index``/``train``/``registry`` while it
serves, the worker's catalogue agent): a long-lived process *holds* the file
(``hold_milvus_lite``): it starts the local server and advertises its Unix socket in
``.<file>.socket`` next to the file; every other process asks ``connectable_uri(uri)`` and talks
to that socket, as a client of a Milvus server would. Whoever holds the file first serves it;
when that process ends, its clients lose Milvus until another one holds it (a Milvus server has no
such limit: ``MILVUS_URI=http://…``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import DependencyUnavailable
from retrieval.milvus_client import import_pymilvus

log = logging.getLogger(__name__)

_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")


def is_milvus_lite_uri(uri: str) -> bool:
    """True for a local Milvus Lite file path, False for a server URL."""
    return not uri.startswith(_SERVER_SCHEMES)


# pymilvus asks gRPC to ping every channel every 10 s, with or without calls in flight. Milvus
# Lite's gRPC server keeps gRPC's default ping policy (pings without data at most every 5
# minutes, two strikes) and answers more with GOAWAY "too_many_pings", which closes the
# connection and every call on it (reproduced with 1 s pings). CI once failed to connect with
# "Too many pings"; that case itself was not reproduced. A Unix socket to a local process needs
# no keepalive (its end is a closed socket), so Lite channels send no pings; a Milvus server
# permits pymilvus' pings and keeps them.
_NO_KEEPALIVE = {
    "grpc.keepalive_time_ms": 2**31 - 1,  # gRPC's "never"
    "grpc.keepalive_permit_without_calls": False,
}


def grpc_options(uri: str) -> dict[str, object]:
    """The gRPC channel options ``open_milvus_client`` adds for ``uri``: none for a server, no
    keepalive pings for a Lite file or the ``unix:`` socket of a Lite file's holder."""
    lite = is_milvus_lite_uri(uri) or uri.startswith("unix:")
    return dict(_NO_KEEPALIVE) if lite else {}


def open_milvus_client(uri: str, *, token: str = "", timeout_s: float) -> Any:
    """A ``pymilvus.MilvusClient`` on ``uri`` (a Milvus Lite file, its holder's ``unix:`` socket,
    or a server URL): the one way the project opens one. Raises what pymilvus raises."""
    return import_pymilvus().MilvusClient(
        uri=uri, token=token, timeout=timeout_s, grpc_options=grpc_options(uri)
    )


def milvus_lite_in_use(db_path: Path) -> bool:
    """True if another process holds the Milvus Lite lock of ``db_path``."""
    lock_path = db_path.parent / f".{db_path.name}.lock"
    if not lock_path.exists():
        return False
    with open(lock_path, "a") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(handle, fcntl.LOCK_UN)
    return False


def _held_here(db_path: Path) -> bool:
    """Whether this process runs the Milvus Lite server of ``db_path``. ``milvus_lite_in_use``
    must not be asked then: closing any descriptor of the lock file drops this process's POSIX
    lock on it, and the local server stops when its lock goes."""
    import sys

    manager_module = sys.modules.get("milvus_lite.server_manager")
    if manager_module is None:
        return False
    servers = getattr(manager_module.server_manager_instance, "_servers", {})
    return str(db_path.resolve()) in servers


def socket_advert_path(db_path: Path) -> Path:
    """Where the holder of ``db_path`` advertises its server's socket."""
    return db_path.parent / f".{db_path.name}.socket"


def _advertised(db_path: Path) -> str | None:
    """The socket URI the holder of ``db_path`` advertises, if it is alive and the socket exists."""
    try:
        uri, pid = socket_advert_path(db_path).read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return None
    except PermissionError:
        pass  # alive, another user's
    socket_path = uri.removeprefix("unix://")
    return uri if Path(socket_path).exists() else None


def connectable_uri(uri: str, wait_s: float = 10.0) -> str:
    """The URI this process should open ``uri`` with now: a server URL unchanged; a Milvus Lite
    file itself when no other process holds it, else the socket its holder advertises (waiting up
    to ``wait_s`` for the advert of a holder that is starting). ``DependencyUnavailable`` when the
    file is held by a process that does not share it."""
    if not is_milvus_lite_uri(uri):
        return uri
    db_path = Path(uri).expanduser().absolute()
    if _held_here(db_path):
        return str(db_path)  # this process's own server; never probe our own lock (see below)
    deadline = time.monotonic() + wait_s
    while True:
        if not milvus_lite_in_use(db_path):
            return str(db_path)
        advertised = _advertised(db_path)
        if advertised is not None:
            return advertised
        if time.monotonic() > deadline:
            raise DependencyUnavailable(
                "milvus",
                f"{db_path} is open in another process that does not share it; stop that "
                "process, or point every process at a Milvus server (MILVUS_URI=http://…)",
            )
        time.sleep(0.2)


@contextlib.contextmanager
def hold_milvus_lite(uri: str) -> Iterator[str]:
    """For a long-lived process: yield a URI to open ``uri`` with, holding a Milvus Lite file and
    advertising its socket to other processes (``connectable_uri``) while the block runs. When
    another process already holds it, yield that process's socket instead. Server URLs pass
    through unchanged."""
    if not is_milvus_lite_uri(uri):
        yield uri
        return
    db_path = Path(uri).expanduser().absolute()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        from milvus_lite.server_manager import server_manager_instance
    started_here = not _held_here(db_path)  # else: opened earlier in this process; keep it open
    socket_uri = None
    for _attempt in range(3):  # two processes may race for the lock: the loser becomes a client
        if started_here and milvus_lite_in_use(db_path):
            yield connectable_uri(str(db_path))
            return
        started = server_manager_instance.start_and_get_uri(str(db_path))
        if started is not None:
            # "unix:/tmp/x.sock" -> "unix:///tmp/x.sock": the same gRPC target, in URL form.
            socket_uri = "unix://" + started[len("unix:") :]
            break
        time.sleep(0.5)
    if socket_uri is None:
        raise DependencyUnavailable("milvus", f"cannot start Milvus Lite on {db_path}")
    advert = socket_advert_path(db_path)
    tmp = advert.with_name(f"{advert.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(f"{socket_uri} {os.getpid()}\n")
    os.replace(tmp, advert)
    try:
        yield socket_uri
    finally:
        with contextlib.suppress(FileNotFoundError, IndexError):
            if advert.read_text().split()[0] == socket_uri:
                advert.unlink()
        if started_here:
            server_manager_instance.release_server(str(db_path))


def release_milvus_lite(uri: str) -> None:
    """Stop the local ``milvus`` process this Python process started for ``uri``, if any."""
    import sys

    manager_module = sys.modules.get("milvus_lite.server_manager")
    if manager_module is None:
        return  # milvus_lite was never used in this process: nothing to release
    manager = manager_module.server_manager_instance
    key = str(Path(uri).absolute().resolve())
    if key in getattr(manager, "_servers", {}):
        manager.release_server(uri)


def check_milvus(uri: str, token: str = "", timeout_s: float = 10.0) -> str:
    """Open ``uri`` once and list collections; return a short description or raise.

    For a Milvus Lite file the parent folder is created first, and the local server process
    is released before returning.
    """
    lite = is_milvus_lite_uri(uri)
    if lite:
        db_path = Path(uri)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        if milvus_lite_in_use(db_path):
            return "Milvus Lite file in use by another process"
    try:
        with warnings.catch_warnings():
            # milvus-lite 2.5.1 imports pkg_resources, which warns on every start.
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            client = open_milvus_client(uri, token=token, timeout_s=timeout_s)
    # pymilvus raises MilvusException, or plain errors when the local server fails to start.
    except Exception as exc:
        raise DependencyUnavailable("milvus", f"{uri}: {exc}") from exc
    try:
        collections = client.list_collections()
    except Exception as exc:
        raise DependencyUnavailable("milvus", f"{uri}: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if lite:
            release_milvus_lite(uri)
    return f"{'Milvus Lite' if lite else 'Milvus'}: {len(collections)} collection(s)"


@contextlib.contextmanager
def embedded_milvus_server(base_dir: Path, attempts: int = 3) -> Iterator[str]:
    """Run a real Milvus 2.3.5 standalone server on loopback; yield its ``http://`` URI.

    The binary comes from the PyPI wheel ``milvus==2.3.5`` (the ``dev`` extra): the retrieval
    contract tests and ``aether bench retrieval --milvus-server`` use it to show that the same
    code works against a server, not only Milvus Lite. Its data lives under ``base_dir``.
    Raises :class:`DependencyUnavailable` if the wheel is missing or the server will not start.
    """
    from core.subprocesses import free_loopback_port

    try:
        from milvus import MilvusServer
    except ImportError as exc:
        raise DependencyUnavailable(
            "milvus", f"the embedded server needs `pip install milvus==2.3.5`: {exc}"
        ) from exc
    last_error: Exception | None = None
    for attempt in range(attempts):
        server = MilvusServer()
        server.set_base_dir(str(base_dir / f"server-{attempt}"))
        # A free proxy port rather than the default 19530; the wheel finds its other internal
        # ports itself. Another process may take the port before the bind: then try again.
        server.listen_port = free_loopback_port()
        try:
            server.start()  # unpacks the binary, starts standalone + embedded etcd, waits healthy
        except Exception as exc:
            last_error = exc
            server.stop()
            continue
        try:
            yield f"http://127.0.0.1:{server.listen_port}"
        finally:
            server.stop()
        return
    raise DependencyUnavailable("milvus", f"embedded Milvus 2.3.5 did not start: {last_error}")


def drop_collections(uri: str, prefix: str) -> list[str]:
    """Drop every collection on the server at ``uri`` whose name starts with ``<prefix>_`` (and
    its aliases: a server refuses to drop an aliased collection). Returns the names dropped."""
    client = open_milvus_client(uri, timeout_s=30)
    dropped = []
    try:
        for name in client.list_collections():
            if not name.startswith(f"{prefix}_"):
                continue
            for alias in client.list_aliases(name).get("aliases", []):
                client.drop_alias(alias)
            client.drop_collection(name)
            dropped.append(name)
    finally:
        with contextlib.suppress(Exception):
            client.close()
    return dropped
