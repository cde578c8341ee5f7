"""A one-line description of this machine, printed next to every benchmark figure."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from core.errors import DependencyUnavailable


def machine_description() -> str:
    """CPU model, cores, memory, Python and torch versions: printed next to every figure."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - torch is a hard dependency
        torch_version = "absent"
    return (
        f"{cpu}; {os.cpu_count()} cores; {mem_gib:.0f} GiB RAM; "
        f"Python {platform.python_version()}; torch {torch_version}; {platform.system()} {platform.release()}"
    )


class ServiceCpu:
    """CPU seconds the services beside the workers have used so far: the Redis server at
    ``redis_url`` (``INFO cpu``: user + system, whoever its clients are) and the broker process
    ``broker_pid`` when the benchmark started it on this machine (:func:`read_stat`; absent
    otherwise). On a small machine they share the cores with the workers, so a phase's figures
    show what each event costs the whole machine, not only the workers."""

    def __init__(self, redis_url: str, broker_pid: int | None = None) -> None:
        import redis

        self._redis = redis.Redis.from_url(redis_url)
        self._broker_pid = broker_pid

    def read(self) -> dict[str, float]:
        cpu = self._redis.info("cpu")
        used = {"redis": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}
        if self._broker_pid is not None:
            broker = read_stat(Path(f"/proc/{self._broker_pid}/stat"))
            if broker is None:
                raise DependencyUnavailable("kafka", f"the broker (pid {self._broker_pid}) exited")
            used["broker"] = broker.cpu_s
        return used

    def per_event_us(self, before: dict[str, float], events: int) -> dict[str, float]:
        """µs of each service's CPU per event since ``before`` (a :meth:`read`)."""
        after = self.read()
        return {name: 1e6 * (after[name] - before[name]) / max(events, 1) for name in before}


@dataclass(frozen=True)
class ProcessInfo:
    """From ``/proc/<pid>/stat`` (or ``/proc/<pid>/task/<tid>/stat``)."""

    parent: int
    cpu_s: float  # user + system
    python: bool  # the executable's name starts with "python"


def read_stat(path: Path) -> ProcessInfo | None:
    """A process's (or a thread's) ``/proc/…/stat``; ``None`` if it exited meanwhile (Linux)."""
    try:
        head, tail = path.read_text().rsplit(")", 1)
    except OSError:
        return None
    fields = tail.split()
    return ProcessInfo(
        parent=int(fields[1]),
        cpu_s=(int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"),
        python=head.split("(", 1)[-1].startswith("python"),
    )
