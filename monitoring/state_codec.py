"""Monitor state ↔ bytes, for the worker to persist in its batch transaction.

Two ways, one encoding:

* :func:`to_bytes` / :func:`from_bytes`: the whole state in one blob, canonical (equal states
  give equal bytes), for tests, benchmarks and comparisons.
* :func:`save` / :func:`load`: what the worker writes per batch. A *core* — everything but the
  observations buffered in open windows, plus how many chunks each open window has saved and a
  version — and *chunks*: the observations each window admitted since the last save, one chunk
  per window per save, under the field ``<window>:<n>``. A batch therefore writes what it
  changed, not the 70 s of observations that open windows hold in live traffic (window plus
  allowed lateness); a window's chunks are deleted when it closes. :func:`load` merges a
  window's chunks with the step's own de-duplication rule (``monitor.admit``), which does not
  depend on order, so the loaded state is the one that was saved. The core's bulk, the detectors
  and the exposure window, changes only when a window closes or a pipeline sample is applied; a
  save in between reuses its JSON text from the last one (``MonitorState.learned_json``).

Encoding: zlib-compressed JSON (keys sorted) with a header of the format version and the river
version — ADWIN's window is river's own Rust state, whose layout may change between river
releases; state written by another release is refused with a ``SchemaError`` (reason
``monitor_state_version``) and the caller starts a fresh monitor (or replays). A core of format 1
(the whole state, from before the chunks) is read as a whole state, and its next save writes every
open window as a chunk. No pickle: the bytes come back from Redis and must not be able to run
code. A detector whose parameters changed since it was stored restarts empty
(``Detector.from_dict``).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import river

from core.errors import SchemaError
from monitoring.config import MonitorConfig, Signal
from monitoring.detectors import Detector
from monitoring.monitor import MonitorState, WindowBuffer, admit, new_state
from monitoring.observations import EventSeen, ServedItem, SlateServed, SlotOutcome

FORMAT = 2
WHOLE = 1  # the format of a whole state (``to_bytes``; the worker's core before the chunks)


@dataclass(frozen=True, slots=True)
class Saved:
    """One save of a monitor (:func:`save`): the core replaces the stored one; ``chunks``
    (field -> bytes) are added to the stored chunks and ``dropped`` fields removed from them;
    ``replace``: every stored chunk is removed first (the first save of a state that was not
    loaded from its chunks: new, or read from a whole state)."""

    core: bytes
    chunks: dict[str, bytes]
    dropped: list[str]
    replace: bool = False


def to_bytes(state: MonitorState) -> bytes:
    """The whole state, canonical (its persistence bookkeeping left out)."""
    return _compressed(_core(state, WHOLE) | _learned(state) | {"open": _buffers(state.open)})


def from_bytes(raw: bytes, config: MonitorConfig) -> MonitorState:
    """The state :func:`to_bytes` wrote; its next :func:`save` writes every open window."""
    return _whole(_decoded(raw, WHOLE), config)


def _whole(data: dict[str, Any], config: MonitorConfig) -> MonitorState:
    state = _parsed(data, config)
    try:
        buffers = sorted((int(k), held) for k, held in data["open"].items())
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        raise SchemaError(f"malformed monitor state: {exc!r}", reason="monitor_state") from None
    for k, held in buffers:
        _merge(state, k, held)
    state.unsaved = dict(state.open)
    return state


def save(state: MonitorState) -> Saved:
    """What changed since the last save (or since :func:`load`): new chunks, the chunks of
    windows closed since, and the core. Marks the state saved."""
    replace = not state.version
    chunks: dict[str, bytes] = {}
    for k, buffer in sorted(state.unsaved.items()):
        n = state.chunks.get(k, 0)
        chunks[f"{k}:{n}"] = _compressed(_buffer(buffer))
        state.chunks[k] = n + 1
    state.unsaved = {}
    dropped = []
    for k in [k for k in state.chunks if k not in state.open]:  # closed since the last save
        dropped += [f"{k}:{i}" for i in range(state.chunks.pop(k))]
    # The version chains every save's chunks, so two saves that led from one state to different
    # open windows cannot leave equal cores (``streams.drift_steps`` trusts a core it wrote; the
    # rest of the state is in the core itself).
    digest = hashlib.blake2b(state.version.encode(), digest_size=12)
    for name, chunk in chunks.items():
        digest.update(name.encode())
        digest.update(chunk)
    state.version = digest.hexdigest()
    data = _core(state, FORMAT)
    data["chunks"] = {str(k): n for k, n in sorted(state.chunks.items())}
    data["version"] = state.version
    members = {name: _json(value) for name, value in data.items()}
    members.update(_learned_json(state))
    # ``json.dumps(data | learned, sort_keys=True, separators=…)``, member by member
    text = "{" + ",".join(f"{_json(name)}:{members[name]}" for name in sorted(members)) + "}"
    return Saved(zlib.compress(text.encode("utf-8"), 1), chunks, dropped, replace)


def _learned_json(state: MonitorState) -> dict[str, str]:
    """The JSON of the detectors and the exposure window, the bulk of a core. They change only
    where windows close (``next_window`` moves) or pipeline samples are applied (``last_sample``
    moves), ``monitoring.monitor``; between those, a save reuses the text of the last one."""
    key = (state.next_window, state.last_sample)
    cached = state.learned_json
    if cached is None or cached[0] != key:
        cached = state.learned_json = (key, {n: _json(v) for n, v in _learned(state).items()})
    return cached[1]


def load(core: bytes, chunks: Mapping[str, bytes], config: MonitorConfig) -> MonitorState:
    """The state that :func:`save` left in ``core`` and the stored ``chunks`` (fields the core
    does not count are left-overs of a window that closed, and ignored)."""
    data = _decoded(core, FORMAT, WHOLE)
    if data["format"] == WHOLE:
        return _whole(data, config)
    try:
        state = _parsed(data, config)
        state.chunks = {int(k): int(n) for k, n in data["chunks"].items()}
        state.version = str(data["version"])
        counted = []
        for name, raw in chunks.items():
            window, _, n = name.partition(":")
            k, i = int(window), int(n)
            if i < state.chunks.get(k, 0):
                counted.append((k, i, raw))
        for k, _, raw in sorted(counted):
            _merge(state, k, _decoded(raw))
        found = len(counted)
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"malformed monitor state: {exc!r}", reason="monitor_state") from None
    if found != sum(state.chunks.values()):
        raise SchemaError(
            f"monitor state is missing chunks: {found} of {sum(state.chunks.values())} stored",
            reason="monitor_state",
        )
    return state


# -- encoding ----------------------------------------------------------------------------------


def _core(state: MonitorState, version: int) -> dict[str, Any]:
    """The core's members but what the monitor learned (``_learned``)."""
    return {
        "format": version,
        "river": river.__version__,
        "watermark_ms": state.watermark_ms,
        "next_window": state.next_window,
        "empty_run": state.empty_run,
        "last_sample": None if state.last_sample is None else list(state.last_sample),
    }


def _learned(state: MonitorState) -> dict[str, Any]:
    """The core's bulk: the detectors and the exposure window."""
    return {
        # Lists, not objects: the order detectors were created in is part of the state (it is
        # the order their detections are reported in) and must survive the sorted keys.
        "detectors": [
            [signal.value, [[segment, d.to_dict()] for segment, d in group.items()]]
            for signal, group in state.detectors.items()
        ],
        "exposure": state.exposure.to_dict(),
    }


def _buffers(buffers: Mapping[int, WindowBuffer]) -> dict[str, Any]:
    return {str(k): _buffer(b) for k, b in buffers.items()}


def _buffer(buffer: WindowBuffer) -> dict[str, Any]:
    # Observations are NamedTuples, which ``json`` writes as arrays (nested ones too), in the
    # canonical order; no per-observation conversion (it was most of the cost per batch).
    return {
        "events": sorted(buffer.events.values()),
        "slates": sorted(buffer.slates.values()),
        "outcomes": sorted(buffer.outcomes.values()),
    }


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _compressed(data: dict[str, Any]) -> bytes:
    # Level 1: most of the size win at a fraction of the time (the worker writes it per batch).
    return zlib.compress(_json(data).encode("utf-8"), 1)


def _decoded(raw: bytes, *formats: int) -> dict[str, Any]:
    """The JSON in ``raw``; with ``formats``, a header that names one of them and this river."""
    try:
        data: dict[str, Any] = json.loads(zlib.decompress(raw))
    except (zlib.error, ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"unreadable monitor state: {exc}", reason="monitor_state") from None
    if formats and (data.get("format") not in formats or data.get("river") != river.__version__):
        raise SchemaError(
            f"monitor state written by format {data.get('format')} / river {data.get('river')};"
            f" this reads format {'/'.join(map(str, formats))} / river {river.__version__}",
            reason="monitor_state_version",
        )
    return data


def _parsed(data: dict[str, Any], config: MonitorConfig) -> MonitorState:
    try:
        return _state(data, config)
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"malformed monitor state: {exc!r}", reason="monitor_state") from None


def _merge(state: MonitorState, k: int, held: dict[str, Any]) -> None:
    """Add a buffer's stored observations to window ``k`` by the step's rule."""
    try:
        buffer = state.open.get(k)
        if buffer is None:
            buffer = state.open[k] = WindowBuffer()
        for e in held["events"]:
            admit(buffer.events, EventSeen(*e))
        for s in held["slates"]:
            items = tuple(ServedItem(*i) for i in s[3])
            admit(buffer.slates, SlateServed(s[0], s[1], s[2], items, s[4]))
        for o in held["outcomes"]:
            admit(buffer.outcomes, SlotOutcome(*o))
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"malformed monitor state: {exc!r}", reason="monitor_state") from None


def _state(data: dict[str, Any], config: MonitorConfig) -> MonitorState:
    state = new_state(config)
    state.watermark_ms = data["watermark_ms"]
    state.next_window = data["next_window"]
    state.empty_run = int(data["empty_run"])
    last = data["last_sample"]
    state.last_sample = None if last is None else (int(last[0]), int(last[1]))
    for name, group in data["detectors"]:
        signal = Signal(name)
        spec = config.spec(signal)
        state.detectors[signal] = {
            segment: Detector.from_dict(spec, stored) for segment, stored in group
        }
    state.exposure.load(data["exposure"])
    return state
