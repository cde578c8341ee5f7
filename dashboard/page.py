"""The HTML page: the view dict (``dashboard.view``) as a status strip, charts and the drift log.

One self-contained document: inline CSS, inline SVG, a meta refresh; no script, no CDN. Every
value from a process or a topic goes through ``esc`` (a segment or detector name is data, not
markup).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dashboard.svg import bar_chart, esc, line_chart, no_data, number, percent

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f8fafc;color:#0f172a}
header{background:#0f172a;color:#f8fafc;padding:10px 18px;display:flex;gap:18px;align-items:baseline}
header h1{font-size:18px;margin:0}header span{color:#94a3b8}
main{padding:12px 18px}
.strip{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:12px}
.stat{background:#fff;border:1px solid #e2e8f0;border-radius:6px;padding:8px 12px;min-width:120px}
.stat b{display:block;font-size:20px}.stat small{color:#64748b}
.targets{margin-bottom:12px;color:#475569}.up{color:#16a34a}.down{color:#dc2626}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(470px,1fr));gap:12px}
figure{background:#fff;border:1px solid #e2e8f0;border-radius:6px;margin:0;padding:6px}
figcaption{color:#475569;font-size:12px;padding:2px 6px}
svg text{font:11px system-ui,sans-serif;fill:#334155}svg .chart-title{font-size:13px;font-weight:600}
svg .no-data{fill:#94a3b8;font-size:13px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border-bottom:1px solid #e2e8f0;padding:4px 8px;text-align:left}th{background:#f1f5f9}
.muted{color:#64748b}
"""


def _fmt(value: float | None, unit: str = "", formatter: Any = number) -> str:
    return "no data yet" if value is None else f"{formatter(value)}{unit}"


def _stat(label: str, value: str, hint: str = "") -> str:
    small = f"<small>{esc(hint)}</small>" if hint else ""
    return f'<div class="stat"><small>{esc(label)}</small><b>{esc(value)}</b>{small}</div>'


def _status_strip(view: Mapping[str, Any]) -> str:
    s = view["status"]
    freshness = "no data yet"
    if s["freshness_p50_s"] is not None:
        freshness = f"{number(s['freshness_p50_s'])} s / {number(s['freshness_p99_s'])} s"
    cells = [
        _stat("consumer lag", _fmt(s["consumer_lag_records"], " rec"),
              f"event time {_fmt(s['consumer_lag_seconds'], ' s')}"),
        _stat("events/s", _fmt(s["events_per_s"])),
        _stat("requests/s", _fmt(s["requests_per_s"])),
        _stat("freshness p50 / p99", freshness),
        _stat("model version", s["model_version"] or "no data yet"),
        _stat("computed at", view["computed_at"] or "", f"last scrape {view['last_scrape_at'] or 'none yet'}"),
    ]  # fmt: skip
    return f'<section class="strip" id="status">{"".join(cells)}</section>'


def _targets(view: Mapping[str, Any]) -> str:
    items = []
    for t in view["targets"]:
        state = "not scraped yet" if t["up"] is None else ("up" if t["up"] else "down")
        css = "up" if t["up"] else "down"
        why = f" ({esc(t['error'])})" if t["error"] else ""
        items.append(f'<span class="{css}">{esc(t["name"])} {esc(t["url"])}: {state}</span>{why}')
    return f'<div class="targets">scraping: {" · ".join(items) or "nothing"}</div>'


def _pairs(points: Mapping[str, Sequence[Sequence[float]]]) -> dict[str, list[tuple[float, float]]]:
    return {name: [(p[0], p[1]) for p in pts] for name, pts in points.items()}


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>"


def _charts(view: Mapping[str, Any]) -> str:
    c = view["charts"]
    window = f"{number(view['window_s'])} s"
    figures = [
        _figure(
            line_chart("Event rate by type (events/s)", _pairs(c["event_rate"]["series"])),
            "aether_stream_events_by_type_total, per scrape interval",
        )
    ]
    for key, title in (("ctr", "CTR per arm"), ("dismiss_rate", "Dismiss rate per arm")):
        chart = c[key]
        figures.append(
            _figure(
                line_chart(
                    title,
                    _pairs(chart["series"]),
                    dashed=_pairs(chart["estimate"]),
                    markers=[(m[0], m[1]) for m in chart["alarms"]],
                    y_format=percent,
                    y_min=0.0,
                ),
                f"observed over a sliding {window}; dashed: the drift detector's estimate; "
                "red: detections",
            )
        )
    score = c["score"]
    series = {"now": score["now"], "reference": score["reference"]}
    categories = [f"≤{b if isinstance(b, str) else number(b)}" for b in score["bounds"]]
    estimate = score["detector_estimate"]
    figures.append(
        _figure(
            bar_chart(
                "Top score distribution: now vs reference", categories, series, y_format=percent
            ),
            f"now: last {window} ({number(score.get('now_count', 0))} requests); reference: before it"
            + (f"; detector's estimate {number(estimate)}" if estimate is not None else ""),
        )
    )
    mix = c["source_mix"]
    figures.append(
        _figure(
            bar_chart(
                "Candidate-source mix",
                mix["sources"],
                {"candidates": mix["candidates"], "slots": mix["slots"]},
                y_format=percent,
            ),
            f"shares over the last {window}",
        )
    )
    figures.append(_figure(_exposure_chart(c["exposure"]), _exposure_caption(c["exposure"])))
    figures.append(
        _figure(
            line_chart("Recommend latency (s)", _pairs(c["latency"]["series"])),
            f"aether_recommend_seconds, p50 and p99 over a sliding {window}",
        )
    )
    return f'<section class="grid" id="charts">{"".join(figures)}</section>'


def _exposure_chart(e: Mapping[str, Any]) -> str:
    title = "Exposure by popularity decile"
    if not e["reference"]:
        why = f"learning the reference: {e['reference_slots']} of {e['reference_target']} slots"
        return no_data(title, why=why if e["reference_slots"] else "no data yet")
    if not e["now"]:
        return no_data(title, why="reference learned; no slots since")
    return bar_chart(
        title, e["deciles"], {"now": e["now"], "reference": e["reference"]}, y_format=percent
    )


def _exposure_caption(e: Mapping[str, Any]) -> str:
    def show(key: str, formatter: Any) -> str:
        value = e[key]
        return "no data yet" if value is None else formatter(value)

    return (
        f"Gini {show('gini', number)} · coverage {show('coverage', percent)} · "
        f"cold share {show('cold_share', percent)} · JS {show('js', number)} "
        f"(last {e['window_slots']} slots; D1 = most popular)"
    )


def _drift_log(view: Mapping[str, Any]) -> str:
    d = view["drift"]
    notes = []
    if d["error"]:
        notes.append(esc(d["error"]))
    if d["skipped_records"]:
        notes.append(f"{int(d['skipped_records'])} invalid record(s) skipped")
    totals = ", ".join(f"{esc(k)}: {number(v)}" for k, v in sorted(d["detections_total"].items()))
    header = (
        f'<h2>Drift log <span class="muted">({esc(d["topic"])}'
        f"{'; detections by signal: ' + totals if totals else ''})</span></h2>"
    )
    if not d["log"]:
        body = '<p class="muted" id="drift-empty">no drift detected yet</p>'
    else:
        rows = "".join(
            f'<tr class="detection" data-detection-id="{esc(r["detection_id"])}">'
            f"<td>{esc(r['detected_at'])}</td><td>{esc(r['signal'])}</td>"
            f"<td>{esc(r['segment'])}</td><td>{esc(number(r['statistic']))}</td>"
            f"<td>{esc(number(r['reference']))}</td><td>{esc(r['detector'])}</td>"
            f"<td>{esc(r['window_start'])} – {esc(r['window_end'])}</td></tr>"
            for r in d["log"]
        )
        body = (
            "<table><thead><tr><th>detected at (event time)</th><th>signal</th><th>segment</th>"
            "<th>statistic</th><th>reference</th><th>detector</th><th>window</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    note = f'<p class="muted">{" · ".join(notes)}</p>' if notes else ""
    return f'<section id="drift-log">{header}{note}{body}</section>'


def render_page(view: Mapping[str, Any], *, refresh_s: int = 5) -> str:
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s > 0 else ""
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"{refresh}<title>AetherRec operator view</title><style>{_CSS}</style></head><body>"
        f'<header><h1>AetherRec operator view</h1><span>JSON: <a href="/api/status" '
        f'style="color:#93c5fd">/api/status</a> · metrics: /metrics</span></header>'
        f"<main>{_status_strip(view)}{_targets(view)}{_charts(view)}{_drift_log(view)}</main>"
        "</body></html>"
    )
