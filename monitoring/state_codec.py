"""Monitor state ↔ bytes, for the worker to persist in its batch transaction.

Format: zlib-compressed JSON (keys sorted, so equal states give equal bytes) with a header of the
format version and the river version — ADWIN's window is river's own Rust state, whose layout
may change between river releases; state written by another release is refused with a
``SchemaError`` (reason ``monitor_state_version``) and the caller starts a fresh monitor (or
replays). No pickle: the bytes come back from Redis and must not be able to run code.
A detector whose parameters changed since it was stored restarts empty
(``Detector.from_dict``).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import river

from core.errors import SchemaError
from monitoring.config import MonitorConfig, Signal
from monitoring.detectors import Detector
from monitoring.monitor import MonitorState, WindowBuffer, new_state
from monitoring.observations import EventSeen, ServedItem, SlateServed, SlotOutcome

FORMAT = 1


def to_bytes(state: MonitorState) -> bytes:
    data = {
        "format": FORMAT,
        "river": river.__version__,
        "watermark_ms": state.watermark_ms,
        "next_window": state.next_window,
        "empty_run": state.empty_run,
        "last_sample": None if state.last_sample is None else list(state.last_sample),
        # Observations are NamedTuples, which ``json`` writes as arrays (nested ones too), in the
        # canonical order; no per-observation conversion (it was most of the cost per batch).
        "open": {
            str(k): {
                "events": sorted(b.events.values()),
                "slates": sorted(b.slates.values()),
                "outcomes": sorted(b.outcomes.values()),
            }
            for k, b in state.open.items()
        },
        # Lists, not objects: the order detectors were created in is part of the state (it is
        # the order their detections are reported in) and must survive the sorted keys.
        "detectors": [
            [signal.value, [[segment, d.to_dict()] for segment, d in group.items()]]
            for signal, group in state.detectors.items()
        ],
        "exposure": state.exposure.to_dict(),
    }
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    # Level 1: most of the size win at a fraction of the time (the worker writes it per batch).
    return zlib.compress(text.encode("utf-8"), 1)


def from_bytes(raw: bytes, config: MonitorConfig) -> MonitorState:
    try:
        data: dict[str, Any] = json.loads(zlib.decompress(raw))
    except (zlib.error, ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"unreadable monitor state: {exc}", reason="monitor_state") from None
    if data.get("format") != FORMAT or data.get("river") != river.__version__:
        raise SchemaError(
            f"monitor state written by format {data.get('format')} / river {data.get('river')};"
            f" this is format {FORMAT} / river {river.__version__}",
            reason="monitor_state_version",
        )
    try:
        return _state(data, config)
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"malformed monitor state: {exc!r}", reason="monitor_state") from None


def _state(data: dict[str, Any], config: MonitorConfig) -> MonitorState:
    state = new_state(config)
    state.watermark_ms = data["watermark_ms"]
    state.next_window = data["next_window"]
    state.empty_run = int(data["empty_run"])
    last = data["last_sample"]
    state.last_sample = None if last is None else (int(last[0]), int(last[1]))
    for key, held in sorted(data["open"].items(), key=lambda kv: int(kv[0])):
        buffer = WindowBuffer()
        for e in held["events"]:
            buffer.events[e[1]] = EventSeen(*e)
        for s in held["slates"]:
            items = tuple(ServedItem(*i) for i in s[3])
            buffer.slates[s[1]] = SlateServed(s[0], s[1], s[2], items, s[4])
        for o in held["outcomes"]:
            buffer.outcomes[o[1]] = SlotOutcome(*o)
        state.open[int(key)] = buffer
    for name, group in data["detectors"]:
        signal = Signal(name)
        spec = config.spec(signal)
        state.detectors[signal] = {
            segment: Detector.from_dict(spec, stored) for segment, stored in group
        }
    state.exposure.load(data["exposure"])
    return state
