"""The reports page's SVG charts: round scales, empty and zero data, escaping, determinism."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from daemon.web.charts import Bar, Gauge, bar_chart, gauges, number, percent, scale

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize(("largest", "expected"), [
    (0, (1.0, 1.0)),
    (-3, (1.0, 1.0)),
    (float("nan"), (1.0, 1.0)),
    (1, (1.0, 1.0)),
    (3, (3.0, 1.0)),
    (4, (4.0, 1.0)),
    (7, (8.0, 2.0)),
    (9, (10.0, 5.0)),
    (18, (20.0, 5.0)),
    (100, (100.0, 50.0)),
    (101, (150.0, 50.0)),
    (1234, (1500.0, 500.0)),
])
def test_scale_is_round_and_covers_the_largest_value(
        largest: float, expected: tuple[float, float]) -> None:
    assert scale(largest) == expected


def test_scale_never_cuts_a_bar() -> None:
    for largest in range(1, 2000):
        top, step = scale(largest)
        assert top >= largest
        assert top / step <= 5 and top % step == 0


def _rects(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return root.findall(f"{SVG}rect")


def _bar_heights(svg: str) -> list[float]:
    return [float(r.get("height", "0")) for r in _rects(svg)]


def test_bars_are_proportional_to_the_scale_top() -> None:
    svg = str(bar_chart([Bar("P1", 2), Bar("P2", 4), Bar("P3", 0)], label="Per priority"))
    root = ET.fromstring(svg)
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Per priority"
    assert root.findtext(f"{SVG}title") == "Per priority"
    # top 4: the P2 bar takes the full 200 units, P1 half of it, P3 nothing
    assert _bar_heights(svg) == [100.0, 200.0, 0.0]
    texts = [t.text for t in root.findall(f"{SVG}text")]
    assert texts[:5] == ["0", "1", "2", "3", "4"]  # the axis, by the step of 1
    assert [t for t in texts if t and t.startswith("P")] == ["P1", "P2", "P3"]
    assert [r.findtext(f"{SVG}title") for r in _rects(svg)] == ["P1: 2", "P2: 4", "P3: 0"]


def test_all_zero_and_empty_data_still_draw() -> None:
    zeros = str(bar_chart([Bar("P1", 0), Bar("P2", 0)], label="none yet"))
    assert _bar_heights(zeros) == [0.0, 0.0]
    assert "nan" not in zeros.lower() and "inf" not in zeros.lower()
    empty = str(bar_chart([], label="nothing", empty="No incidents"))
    root = ET.fromstring(empty)
    assert root.findall(f"{SVG}rect") == []
    assert [t.text for t in root.findall(f"{SVG}text")] == ["No incidents"]
    assert ET.fromstring(str(gauges([], label="x"))).findtext(f"{SVG}text") == "No data"


def test_gauges_fill_their_share_and_say_no_data_when_unmeasured() -> None:
    svg = str(gauges([Gauge("Response", 0.75), Gauge("Resolution", None),
                      Gauge("Odd", 1.5)], label="SLA compliance"))
    root = ET.fromstring(svg)
    widths = [float(r.get("width", "0")) for r in root.findall(f"{SVG}rect")]
    track = widths[0]
    # track, filled share; track only (no data); track, full (clamped to 100 %)
    assert widths == [track, track * 0.75, track, track, track]
    texts = [t.text for t in root.findall(f"{SVG}text")]
    assert texts == ["Response", "75.0 %", "Resolution", "no data", "Odd", "150.0 %"]


def test_labels_are_escaped_everywhere() -> None:
    hostile = '<script>alert("x")</script> & \'q\''
    for svg in (str(bar_chart([Bar(hostile, 1)], label=hostile)),
                str(gauges([Gauge(hostile, 0.5)], label=hostile))):
        assert "<script>" not in svg
        root = ET.fromstring(svg)  # still well-formed XML
        assert root.get("aria-label") == hostile
        assert root.findtext(f"{SVG}title") == hostile
        assert hostile in [t.text for t in root.findall(f"{SVG}text")]


def test_output_is_deterministic_and_compact() -> None:
    bars = [Bar("P1", 1), Bar("P2", 3), Bar("P3", 7)]
    first = str(bar_chart(bars, label="a"))
    assert first == str(bar_chart(list(bars), label="a"))
    # coordinates carry two decimals at most
    assert not re.search(r"\d\.\d{3}", first)


def test_number_and_percent_text() -> None:
    assert [number(v) for v in (3, 3.0, 2.5, 1 / 3, 0)] == ["3", "3", "2.5", "0.33", "0"]
    assert [percent(v) for v in (None, 0, 0.5, 1 / 3, 1)] == [
        "no data", "0.0 %", "50.0 %", "33.3 %", "100.0 %"]
