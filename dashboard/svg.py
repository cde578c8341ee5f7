"""Charts drawn server-side as SVG strings: no CDN, no JavaScript, nothing to vendor.

Two shapes cover the page: :func:`line_chart` (lines over wall-clock time, with dashed lines for
estimates and vertical alarm markers) and :func:`bar_chart` (grouped bars over categories). Each
data line is one ``<path class="series" data-series="…">`` and each bar one
``<rect class="bar" data-series="…" data-category="…">``, so tests (and a browser's DOM) can find
the data. Every text that reaches the markup goes through :func:`esc`. Without data a chart is a
frame saying "no data yet": a process that does not export a series yet must not break the page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from html import escape

Point = tuple[float, float]
Formatter = Callable[[float], str]

PALETTE = (
    "#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed",
    "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c",
)  # fmt: skip
WIDTH, HEIGHT = 460, 210
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 12, 26, 40  # room for the axes' labels and the legend
NO_DATA = "no data yet"


# Characters XML 1.0 does not allow (C0 controls but tab, newline, return; lone surrogates):
# a label from a process is data, and one stray control character must not break the document.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def esc(text: object) -> str:
    return escape(_NOT_XML.sub("\ufffd", str(text)), quote=True)


def number(value: float) -> str:
    """Compact, for tick labels and the status strip: 0.0123, 1.5, 12.3k."""
    if value is None or math.isnan(value):
        return "–"
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e3:
        return f"{value / 1e3:.3g}k"
    if magnitude == 0:
        return "0"
    return f"{value:.3g}"


def percent(value: float) -> str:
    return f"{value * 100:.3g}%"


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _open(title: str, width: int, height: int, kind: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
        f"<title>{esc(title)}</title>",
        f'<text class="chart-title" x="{_LEFT}" y="16">{esc(title)}</text>',
    ]


def no_data(title: str, width: int = WIDTH, height: int = HEIGHT, why: str = NO_DATA) -> str:
    parts = _open(title, width, height, "empty")
    parts.append(
        f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{width - _LEFT - _RIGHT}" '
        f'height="{height - _TOP - _BOTTOM}" fill="none" stroke="#cbd5e1"/>'
    )
    parts.append(
        f'<text class="no-data" x="{width / 2:.1f}" y="{height / 2:.1f}" '
        f'text-anchor="middle">{esc(why)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]``, first < last."""
    if high - low <= max(abs(high), abs(low)) * 1e-9 or high - low < 1e-300:
        # A flat line: show it against zero (a constant 5 % CTR is drawn at 5 %, not at the
        # centre of a float-noise-thin axis).
        if high > 0:
            low, high = min(low, 0.0), high * 1.25
        elif low < 0:
            low, high = low * 1.25, max(high, 0.0)
        else:
            low, high = 0.0, 1.0
    raw = (high - low) / count
    if not 1e-300 < raw < 1e300:  # denormal or overflowing extremes: a plain unit axis
        low, high, raw = min(low, 0.0) if math.isfinite(low) else 0.0, 1.0, 1.0 / count
    step = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5, 10):
        if raw <= multiple * step:
            step *= multiple
            break
    first = math.floor(low / step + 1e-9)
    last = max(math.ceil(high / step - 1e-9), first + 1)  # the top tick covers the highest value
    return [i * step for i in range(first, last + 1)]


def relative_time(seconds_before_end: float) -> str:
    if seconds_before_end < 0.5:
        return "now"
    if seconds_before_end < 120:
        return f"-{seconds_before_end:.0f}s"
    return f"-{seconds_before_end / 60:.0f}m"


def line_chart(
    title: str,
    series: Mapping[str, Sequence[Point]],
    *,
    dashed: Mapping[str, Sequence[Point]] | None = None,
    markers: Sequence[tuple[float, str]] = (),
    y_format: Formatter = number,
    y_min: float | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Lines over time (x: epoch seconds, labelled relative to the newest point).

    ``dashed`` lines (e.g. a detector's estimate) take the colour of the solid line of the same
    name; ``markers`` are ``(x, label)`` vertical alarm lines.
    """
    dashed = dashed or {}
    all_points = [p for line in (*series.values(), *dashed.values()) for p in line]
    if not all_points:
        return no_data(title, width, height)
    xs = [p[0] for p in all_points]
    ys = [p[1] for p in all_points if math.isfinite(p[1])]
    if not ys:
        return no_data(title, width, height)
    x_low, x_high = min(xs), max(xs)
    if x_high - x_low < 1e-9:
        x_low -= 1.0
    ticks = _nice_ticks(min(ys) if y_min is None else min(y_min, *ys), max(ys))
    y_low, y_high = ticks[0], ticks[-1]
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def sy(y: float) -> float:
        return _TOP + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    parts = _open(title, width, height, "line")
    parts.extend(_y_axis(ticks, sy, width, y_format))
    for x, anchor in ((x_low, "start"), (x_high, "end")):
        parts.append(
            f'<text class="tick" x="{sx(x):.1f}" y="{height - _BOTTOM + 14}" '
            f'text-anchor="{anchor}">{esc(relative_time(x_high - x))}</text>'
        )
    for x, label in markers:
        if x_low <= x <= x_high:
            parts.append(
                f'<line class="alarm" data-label="{esc(label)}" x1="{sx(x):.1f}" '
                f'x2="{sx(x):.1f}" y1="{_TOP}" y2="{_TOP + plot_h}" stroke="#dc2626" '
                f'stroke-width="1.5" stroke-dasharray="3 2"><title>drift: {esc(label)}</title></line>'
            )
    names = sorted(set(series) | set(dashed))
    for index, name in enumerate(names):
        for line, style in ((series.get(name), ""), (dashed.get(name), ' stroke-dasharray="5 3"')):
            points = [p for p in (line or ()) if math.isfinite(p[1])]
            if not points:
                continue
            kind = "estimate" if style else "series"
            d = " ".join(
                f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}"
                for i, (x, y) in enumerate(points)
            )
            parts.append(
                f'<path class="{kind}" data-series="{esc(name)}" data-points="{len(points)}" '
                f'd="{d}" fill="none" stroke="{color(index)}" stroke-width="1.8"{style}/>'
            )
            if len(points) == 1:  # one point draws no line: show it
                x, y = points[0]
                parts.append(
                    f'<circle class="point" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" '
                    f'fill="{color(index)}"/>'
                )
    parts.extend(_legend(names, width, height, dashed_names=set(dashed)))
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    title: str,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    y_format: Formatter = number,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Grouped bars: for each category, one bar per series (``series[name][i]`` ↔ category i)."""
    names = [n for n, values in series.items() if values]
    values = [v for n in names for v in series[n] if math.isfinite(v)]
    if not categories or not names or not values:
        return no_data(title, width, height)
    for name in names:
        if len(series[name]) != len(categories):
            raise ValueError(
                f"series {name!r} has {len(series[name])} values for {len(categories)} categories"
            )
    ticks = _nice_ticks(min(0.0, *values), max(values))
    y_low, y_high = ticks[0], ticks[-1]
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM

    def sy(y: float) -> float:
        return _TOP + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    parts = _open(title, width, height, "bar")
    parts.extend(_y_axis(ticks, sy, width, y_format))
    group_w = plot_w / len(categories)
    bar_w = max(group_w * 0.8 / len(names), 1.0)
    label_every = max(1, math.ceil(len(categories) * 28 / plot_w))  # keep labels from overlapping
    for c, category in enumerate(categories):
        x0 = _LEFT + c * group_w + group_w * 0.1
        for s, name in enumerate(names):
            value = series[name][c]
            if not math.isfinite(value):
                continue
            top, base = sy(max(value, 0.0)), sy(min(value, 0.0))
            parts.append(
                f'<rect class="bar" data-series="{esc(name)}" data-category="{esc(category)}" '
                f'data-value="{value:.6g}" x="{x0 + s * bar_w:.1f}" y="{top:.1f}" '
                f'width="{bar_w:.1f}" height="{max(base - top, 0.0):.1f}" fill="{color(s)}">'
                f"<title>{esc(name)} {esc(category)}: {esc(y_format(value))}</title></rect>"
            )
        if c % label_every == 0:
            parts.append(
                f'<text class="tick" x="{x0 + group_w * 0.4:.1f}" y="{height - _BOTTOM + 14}" '
                f'text-anchor="middle">{esc(category)}</text>'
            )
    parts.extend(_legend(names, width, height))
    parts.append("</svg>")
    return "".join(parts)


def _y_axis(
    ticks: Sequence[float], sy: Callable[[float], float], width: int, fmt: Formatter
) -> list[str]:
    parts = []
    for tick in ticks:
        y = sy(tick)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{width - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#e2e8f0"/>'
        )
        parts.append(
            f'<text class="tick" x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{esc(fmt(tick))}</text>'
        )
    return parts


def _legend(
    names: Sequence[str], width: int, height: int, dashed_names: set[str] | None = None
) -> list[str]:
    parts = []
    x, y = float(_LEFT), height - 8.0
    for index, name in enumerate(names):
        label = name + (" (- - estimate)" if dashed_names and name in dashed_names else "")
        step = 24 + 6.5 * len(label)
        if x + step > width and x > _LEFT:
            break  # the legend is a hint; the data attributes carry every name
        parts.append(
            f'<rect class="legend-key" x="{x:.1f}" y="{y - 8:.1f}" width="10" height="10" '
            f'fill="{color(index)}"/>'
            f'<text class="legend" x="{x + 13:.1f}" y="{y + 1:.1f}">{esc(label)}</text>'
        )
        x += step
    return parts
