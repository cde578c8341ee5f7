"""Starting, checking and stopping the local helper processes of the embedded stack.

The embedded stack runs its services (the Tansu broker, a ``redis-server``) as detached child
processes on loopback ports. They must outlive the ``aether stack up`` command that started them,
so they get their own session (no signal from the terminal reaches them), and they are later
found again by PID from the stack's state file. A PID can be reused by the system, so before
signalling one we check that it still runs the executable we started.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def free_loopback_port(host: str = "127.0.0.1", *, reuse_port: bool = False) -> int:
    """A TCP port on ``host`` that nobody listens on right now (the OS picks it).

    ``reuse_port``: probe with ``SO_REUSEPORT``, as the processes that will share it bind.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """Host and port of the first server in a bootstrap list or URL.

    ``"127.0.0.1:9092,b:9092"`` → ``("127.0.0.1", 9092)``;
    ``"redis://user:pw@host:6380/0"`` → ``("host", 6380)``; no port → ``default_port``.
    """
    location = address.split("://", 1)[-1].split(",", 1)[0].strip()
    location = location.split("/", 1)[0].rpartition("@")[2]
    if location.startswith("["):  # [::1]:9092
        host, _, rest = location[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = location.rpartition(":")
    if not sep:
        return location, default_port
    return host, int(port)


def spawn_detached(
    argv: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    *,
    die_with_parent: bool = False,
) -> int:
    """Start ``argv`` in its own session with stdout+stderr appended to ``log_path``; return its PID.

    The child is not waited for here: callers poll readiness themselves and stop it with
    :func:`stop_process`. ``die_with_parent`` (Linux) makes the kernel send SIGTERM to the child
    when this process dies, even by SIGKILL: test fixtures use it so an interrupted test run
    leaves no broker behind, while ``aether stack up`` wants the opposite.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
            preexec_fn=_terminate_with_parent if die_with_parent else None,
        )
    return process.pid


def _terminate_with_parent() -> None:
    """In the child, before exec: ask for SIGTERM when the parent dies (Linux prctl)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


_PR_SET_PDEATHSIG = 1


def _reap(pid: int) -> None:
    """Collect the exit status of our own child so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def process_alive(pid: int, executable: str | None = None) -> bool:
    """True if ``pid`` runs (and, when given, runs a command line containing ``executable``)."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return executable is None
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            if (proc / "stat").read_text().split(") ", 1)[1].startswith("Z"):
                return False  # a zombie: exited, not yet reaped by its parent
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            return False
        if executable is not None and Path(executable).name not in cmdline:
            return False
    return True


def stop_process(pid: int, executable: str | None = None, grace_s: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after ``grace_s``; True if a matching process was running.

    Does nothing to a PID that no longer runs ``executable`` (it was reused by something else).
    """
    if not process_alive(pid, executable):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and process_alive(pid):
        time.sleep(0.05)
    return True
