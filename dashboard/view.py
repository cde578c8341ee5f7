"""What the page shows, as one JSON-ready dict: the page renders it, ``/api/status`` returns it.

Every figure is read from the metrics of docs/metrics.md (exact names, as Prometheus would read
them: per-target increases summed over targets), from the drift log and from the exposure
window. A series that no process exports yet gives ``None`` or an empty chart, never an error:
the processes are instrumented one by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dashboard.drift_log import DriftEntry
from dashboard.exposure_view import ExposureSnapshot
from dashboard.series import ScrapeRing, densities, histogram_quantile, last_values, shares

# Metric names of the contract (docs/metrics.md) that the page reads.
EVENTS = "aether_stream_events_total"
EVENTS_BY_TYPE = "aether_stream_events_by_type_total"
LAG_RECORDS = "aether_stream_consumer_lag_records"
LAG_SECONDS = "aether_stream_consumer_lag_seconds"
FRESHNESS = "aether_stream_freshness_seconds"
IMPRESSIONS = "aether_bandit_impressions_total"
REWARDS = "aether_bandit_rewards_total"
DISMISSALS = "aether_bandit_dismissals_total"
DRIFT_DETECTIONS = "aether_drift_detections_total"
DRIFT_STATISTIC = "aether_drift_statistic"
REQUESTS = "aether_recommend_requests_total"
LATENCY = "aether_recommend_seconds"
TOP_SCORE = "aether_recommend_top_score"
CANDIDATES = "aether_recommend_candidates_total"
SLATE_ITEMS = "aether_recommend_slate_items_total"
MODEL_INFO = "aether_model_info"

# The monitor's signal names (monitoring.config.Signal) whose estimates the page overlays.
CTR_SIGNAL, DISMISS_SIGNAL = "ctr", "dismiss_rate"
EXPOSURE_SIGNALS = {
    "gini": "exposure_gini",
    "coverage": "catalogue_coverage",
    "cold_share": "cold_slot_share",
    "js": "exposure_decile_js",
}
SCORE_SIGNAL = "top_score"


@dataclass(frozen=True, slots=True)
class TargetState:
    name: str
    url: str
    up: bool | None  # None: not scraped yet
    error: str | None
    last_success: float | None


def _iso(epoch_s: float | None) -> str | None:
    return (
        None
        if epoch_s is None
        else datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")
    )


def _points(lines: Mapping[str, Sequence[tuple[float, float]]]) -> dict[str, list[list[float]]]:
    return {name: [[round(x, 3), y] for x, y in pts] for name, pts in sorted(lines.items()) if pts}


def _arm_of(segment: str) -> str | None:
    return segment.removeprefix("arm=") if segment.startswith("arm=") else None


def build_view(
    ring: ScrapeRing,
    *,
    targets: Sequence[TargetState],
    drift: Sequence[DriftEntry],
    drift_skipped: int,
    exposure: ExposureSnapshot,
    window_rounds: int,
    interval_s: float,
    computed_at: float,
    drift_topic: str,
    events_topic: str | None = None,
    topics_error: str | None = None,
    drift_rows: int = 50,
) -> dict[str, Any]:
    last_scrape = ring.rounds[-1].at if len(ring) else None
    return {
        "computed_at": _iso(computed_at),
        "last_scrape_at": _iso(last_scrape),
        "scrape_interval_s": interval_s,
        "window_s": window_rounds * interval_s,
        "targets": [
            {
                "name": t.name,
                "url": t.url,
                "up": t.up,
                "error": t.error,
                "last_success": _iso(t.last_success),
            }
            for t in targets
        ],
        "status": _status(ring, window_rounds, events_topic),
        "charts": {
            "event_rate": {
                "unit": "events/s",
                "series": _points(ring.rate_history(EVENTS_BY_TYPE, "event_type")),
            },
            "ctr": _arm_rates(ring, REWARDS, CTR_SIGNAL, window_rounds, drift),
            "dismiss_rate": _arm_rates(ring, DISMISSALS, DISMISS_SIGNAL, window_rounds, drift),
            "score": _score(ring, window_rounds),
            "source_mix": _source_mix(ring, window_rounds),
            "exposure": _exposure(ring, exposure),
            "latency": {
                "unit": "seconds",
                "series": _points(
                    {
                        "p50": ring.quantile_history(LATENCY, 0.5, window_rounds),
                        "p99": ring.quantile_history(LATENCY, 0.99, window_rounds),
                    }
                ),
            },
        },
        "drift": {
            "topic": drift_topic,
            "error": topics_error,
            "skipped_records": drift_skipped,
            "detections_total": ring.latest_by(DRIFT_DETECTIONS, "signal"),
            "log": [entry.to_json() for entry in drift[:drift_rows]],
        },
    }


def _status(ring: ScrapeRing, window: int, events_topic: str | None) -> dict[str, Any]:
    lag_records = ring.latest(LAG_RECORDS)
    lag_seconds = ring.latest(LAG_SECONDS)
    span = min(window, len(ring) - 1)
    freshness = ring.bucket_increase(FRESHNESS, -1 - span, -1) if span >= 1 else None
    if freshness is None or freshness[-1][1] <= 0:
        freshness = ring.bucket_totals(FRESHNESS, -1)  # nothing new in the window: since start
    models = sorted(
        dict(labels).get("model_version", "")
        for labels, value in ring.latest(MODEL_INFO).items()
        if value > 0
    )
    return {
        "consumer_lag_records": sum(lag_records.values()) if lag_records else None,
        "consumer_lag_seconds": max(lag_seconds.values()) if lag_seconds else None,
        # records arriving on the events topic, whatever their outcome (not the internal
        # re-keyed topics the worker also counts); without the topic: applied interactions
        "events_per_s": ring.rate_now(EVENTS, window, {"topic": events_topic})
        if events_topic
        else ring.rate_now(EVENTS_BY_TYPE, window),
        "requests_per_s": ring.rate_now(REQUESTS, window),
        "freshness_p50_s": histogram_quantile(0.5, freshness or []),
        "freshness_p99_s": histogram_quantile(0.99, freshness or []),
        "model_version": ", ".join(m for m in models if m) or None,
    }


def _arm_rates(
    ring: ScrapeRing, numerator: str, signal: str, window: int, drift: Sequence[DriftEntry]
) -> dict[str, Any]:
    """Per arm: the observed rate over a sliding window, the detector's estimate, its alarms."""
    observed = ring.ratio_history(numerator, IMPRESSIONS, "arm", window)
    estimates: dict[str, list[tuple[float, float]]] = {}
    for segment, points in ring.gauge_history(
        DRIFT_STATISTIC, "segment", {"signal": signal}
    ).items():
        arm = _arm_of(segment)
        if arm is not None:
            estimates[arm] = points
    markers = [
        (at, arm)
        for at, segment in ring.increase_markers(DRIFT_DETECTIONS, "segment", {"signal": signal})
        if (arm := _arm_of(segment)) is not None
    ]
    if not markers:  # a worker without the counter yet: the drift log's arrivals mark alarms
        markers = [
            (e.received_at, arm)
            for e in drift
            if e.detection.signal == signal and (arm := _arm_of(e.detection.segment)) is not None
        ]
    return {
        "unit": "ratio",
        "series": _points(observed),
        "estimate": _points(estimates),
        "alarms": [[round(at, 3), arm] for at, arm in sorted(markers)],
    }


def _score(ring: ScrapeRing, window: int) -> dict[str, Any]:
    """Top-score distribution over the window ("now") against everything before it."""
    span = min(window, len(ring) - 1)
    now = ring.bucket_increase(TOP_SCORE, -1 - span, -1) if span >= 1 else None
    reference = ring.bucket_totals(TOP_SCORE, -1 - span) if span >= 1 else None
    if now is None or now[-1][1] <= 0:
        now, reference = ring.bucket_totals(TOP_SCORE, -1), None  # all there is is "now"
    bounds = [b for b, _ in (now or reference or [])]
    estimate = last_values(ring.gauge_history(DRIFT_STATISTIC, "segment", {"signal": SCORE_SIGNAL}))
    return {
        "bounds": [("+Inf" if b == float("inf") else b) for b in bounds],
        "now": densities(now) if now and now[-1][1] > 0 else [],
        "reference": densities(reference) if reference and reference[-1][1] > 0 else [],
        "now_count": now[-1][1] if now else 0,
        "reference_count": reference[-1][1] if reference else 0,
        "p50_now": histogram_quantile(0.5, now or []),
        "detector_estimate": estimate.get("all"),
    }


def _source_mix(ring: ScrapeRing, window: int) -> dict[str, Any]:
    span = min(window, len(ring) - 1)
    candidates = ring.increase_by(CANDIDATES, "source", -1 - span, -1) if span >= 1 else None
    slots = ring.increase_by(SLATE_ITEMS, "source", -1 - span, -1) if span >= 1 else None
    if not candidates or sum(candidates.values()) <= 0:  # quiet window: since process start
        candidates = ring.latest_by(CANDIDATES, "source")
    if not slots or sum(slots.values()) <= 0:
        slots = ring.latest_by(SLATE_ITEMS, "source")
    names = sorted(set(candidates) | set(slots))
    candidate_shares, slot_shares = shares(candidates), shares(slots)
    return {
        "sources": names,
        "candidates": [candidate_shares.get(n, 0.0) for n in names] if candidates else [],
        "slots": [slot_shares.get(n, 0.0) for n in names] if slots else [],
    }


def _exposure(ring: ScrapeRing, snapshot: ExposureSnapshot) -> dict[str, Any]:
    worker = {
        key: ring.latest_by(DRIFT_STATISTIC, "segment", {"signal": signal}).get("all")
        for key, signal in EXPOSURE_SIGNALS.items()
    }
    return {
        "deciles": [f"D{i + 1}" for i in range(len(snapshot.reference_shares))],
        "reference": list(snapshot.reference_shares),
        "now": list(snapshot.now_shares),
        "window_slots": snapshot.window_slots,
        "reference_slots": snapshot.reference_slots,
        "reference_target": snapshot.reference_target,
        # the worker's monitor when it exports them; the page's own window otherwise
        "gini": worker["gini"] if worker["gini"] is not None else snapshot.gini,
        "coverage": worker["coverage"] if worker["coverage"] is not None else snapshot.coverage,
        "js": worker["js"] if worker["js"] is not None else snapshot.js,
        "cold_share": worker["cold_share"],
        "from_worker": {k: v is not None for k, v in worker.items()},
    }
