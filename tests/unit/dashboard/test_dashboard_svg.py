"""SVG builders: well-formed SVG, one element per series/bar with every data point, text escaped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from dashboard.svg import NO_DATA, bar_chart, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on anything that is not well-formed XML
    assert root.tag == f"{SVG}svg"
    return root


def commands(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+),(-?[\d.]+)", d)]


def test_line_chart_draws_each_series_with_all_its_points() -> None:
    series = {
        "click": [(100.0, 1.0), (105.0, 2.0), (110.0, 4.0)],
        "view": [(100.0, 10.0), (105.0, 12.0), (110.0, 9.0)],
    }
    root = parse(line_chart("Event rate", series, markers=[(105.0, "arm=b")]))

    paths = {p.get("data-series"): p for p in root.iter(f"{SVG}path") if p.get("class") == "series"}
    assert set(paths) == {"click", "view"}
    for name, path in paths.items():
        points = commands(path.get("d", ""))
        assert len(points) == len(series[name])
        xs = [x for x, _ in points]
        assert xs == sorted(xs) and xs[0] < xs[-1]
    # a larger value is drawn higher (smaller y)
    click = commands(paths["click"].get("d", ""))
    assert click[2][1] < click[1][1] < click[0][1]
    alarms = [line for line in root.iter(f"{SVG}line") if line.get("class") == "alarm"]
    assert [a.get("data-label") for a in alarms] == ["arm=b"]


def test_estimates_are_dashed_paths_of_their_own() -> None:
    root = parse(
        line_chart(
            "CTR", {"a": [(0.0, 0.05), (1.0, 0.05)]}, dashed={"a": [(0.0, 0.049), (1.0, 0.05)]}
        )
    )
    estimates = [p for p in root.iter(f"{SVG}path") if p.get("class") == "estimate"]
    assert len(estimates) == 1
    assert estimates[0].get("stroke-dasharray")


def test_bar_chart_has_one_rect_per_category_and_series() -> None:
    root = parse(
        bar_chart("Mix", ["ann", "popular"], {"candidates": [0.7, 0.3], "slots": [0.6, 0.4]})
    )
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert {(b.get("data-series"), b.get("data-category")) for b in bars} == {
        ("candidates", "ann"), ("candidates", "popular"), ("slots", "ann"), ("slots", "popular"),
    }  # fmt: skip
    heights = {
        (b.get("data-series"), b.get("data-category")): float(b.get("height", 0)) for b in bars
    }
    assert (
        heights[("candidates", "ann")] > heights[("slots", "ann")] > heights[("slots", "popular")]
    )


def test_names_are_escaped_not_markup() -> None:
    hostile = '<script>alert("x")</script>&'
    svg = line_chart(hostile, {hostile: [(0.0, 1.0), (1.0, 2.0)]}) + bar_chart(
        hostile, [hostile], {hostile: [1.0]}
    )
    assert "<script>" not in svg
    root = parse(line_chart(hostile, {hostile: [(0.0, 1.0), (1.0, 2.0)]}))
    assert [p.get("data-series") for p in root.iter(f"{SVG}path")] == [hostile]


def test_no_data_is_a_frame_that_says_so() -> None:
    for svg in (
        line_chart("Latency", {}),
        line_chart("Latency", {"p50": []}),
        bar_chart("Mix", [], {}),
    ):
        root = parse(svg)
        assert NO_DATA in "".join(root.itertext())
        assert not [p for p in root.iter(f"{SVG}path")]


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.lists(st.tuples(st.floats(min_value=0, max_value=1e9), finite), min_size=1, max_size=30),
        min_size=1,
        max_size=5,
    )
)
def test_any_finite_series_gives_well_formed_svg_inside_the_frame(series: dict) -> None:
    series = {k: sorted(v) for k, v in series.items()}
    root = parse(line_chart("t", series, width=400, height=200))
    drawn = [p for p in root.iter(f"{SVG}path") if p.get("class") == "series"]
    assert len(drawn) == len(series)
    for path in drawn:
        for x, y in commands(path.get("d", "")):
            assert 0 <= x <= 400 and 0 <= y <= 200


@given(
    st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=12, unique=True),
    st.data(),
)
def test_any_bars_give_well_formed_svg(categories: list[str], data: st.DataObject) -> None:
    values = data.draw(st.lists(finite, min_size=len(categories), max_size=len(categories)))
    root = parse(bar_chart("t", categories, {"s": values}))
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert len(bars) == len(categories)
    assert all(float(b.get("height", -1)) >= 0 for b in bars)
