"""Small server-rendered SVG charts for the reports page: no JavaScript, no library.

Each chart is one `<svg role="img" aria-label="…">` with a `<title>`; the page shows
the same numbers in a table, so a screen reader (or a printout) loses nothing. The
output depends only on the input (fixed geometry, fixed number formatting), and every
label is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Geometry in SVG user units; the svg scales to its container (width 100 %).
_WIDTH = 360
_BAR_HEIGHT = 200
_TOP = 20  # room for the value above the tallest bar
_LEFT = 40  # room for the axis labels
_BOTTOM = 28  # room for the bar labels
_ROW = 34  # one gauge row
_GAUGE_LEFT = 112
_GAUGE_RIGHT = 60
_MAX_WIDTH = 520

# Colours with at least 4.5:1 contrast on white; text uses the page's own colour.
_BAR_FILL = "#1f5fa8"
_MET_FILL = "#1e7b34"
_TRACK_FILL = "#d9dde3"
_GRID = "#9aa3ad"


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float


@dataclass(frozen=True, slots=True)
class Gauge:
    """A share from 0 to 1; None when there is nothing to measure."""

    label: str
    fraction: float | None


def scale(largest: float, *, steps: int = 4) -> tuple[float, float]:
    """A round axis for values from 0 to `largest`: (top, step), step 1, 2 or 5 times 10^k,
    top a multiple of it. Counts never get a step below 1; an empty axis is 0..1."""
    if not math.isfinite(largest) or largest <= 0:
        return 1.0, 1.0
    raw = largest / steps
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(step, 1.0)
    return step * math.ceil(largest / step), step


def number(value: float) -> str:
    """Deterministic short text for a figure: 3, 2.5, 0.33."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def percent(fraction: float | None) -> str:
    return "no data" if fraction is None else f"{fraction * 100:.1f} %"


def bar_chart(bars: Sequence[Bar], *, label: str, empty: str = "No data") -> Markup:
    """Vertical bars from a zero baseline, the value above each bar."""
    height = _TOP + _BAR_HEIGHT + _BOTTOM
    parts = [_open(label, height)]
    values = [b.value if math.isfinite(b.value) and b.value > 0 else 0.0 for b in bars]
    if not bars:
        parts.append(_text(_WIDTH / 2, height / 2, empty, anchor="middle"))
        return _close(parts)
    top, step = scale(max(values))
    base = _TOP + _BAR_HEIGHT
    tick = 0.0
    while tick <= top + step / 2:
        y = base - _BAR_HEIGHT * tick / top
        parts.append(f'<line x1="{_LEFT}" y1="{_f(y)}" x2="{_WIDTH}" y2="{_f(y)}" '
                     f'stroke="{_GRID}" stroke-width="0.5"/>')
        parts.append(_text(_LEFT - 6, y + 4, number(tick), anchor="end"))
        tick += step
    slot = (_WIDTH - _LEFT) / len(bars)
    width = slot * 0.6
    for i, (bar, value) in enumerate(zip(bars, values, strict=True)):
        x = _LEFT + slot * i + (slot - width) / 2
        h = _BAR_HEIGHT * value / top
        centre = x + width / 2
        parts.append(
            f'<rect x="{_f(x)}" y="{_f(base - h)}" width="{_f(width)}" height="{_f(h)}" '
            f'fill="{_BAR_FILL}"><title>{escape(bar.label)}: {number(bar.value)}</title></rect>')
        parts.append(_text(centre, base - h - 5, number(bar.value), anchor="middle"))
        parts.append(_text(centre, base + 18, bar.label, anchor="middle"))
    return _close(parts)


def gauges(rows: Sequence[Gauge], *, label: str, empty: str = "No data") -> Markup:
    """One horizontal bar per row: the filled part is the share, the track is 100 %."""
    height = max(len(rows), 1) * _ROW + 8
    parts = [_open(label, height)]
    if not rows:
        parts.append(_text(_WIDTH / 2, height / 2, empty, anchor="middle"))
        return _close(parts)
    track = _WIDTH - _GAUGE_LEFT - _GAUGE_RIGHT
    for i, row in enumerate(rows):
        y = 8 + i * _ROW
        share = 0.0 if row.fraction is None else min(max(row.fraction, 0.0), 1.0)
        parts.append(_text(_GAUGE_LEFT - 8, y + 15, row.label, anchor="end"))
        parts.append(f'<rect x="{_GAUGE_LEFT}" y="{y}" width="{track}" height="20" '
                     f'fill="{_TRACK_FILL}"/>')
        if share > 0:
            parts.append(
                f'<rect x="{_GAUGE_LEFT}" y="{y}" width="{_f(track * share)}" height="20" '
                f'fill="{_MET_FILL}"><title>{escape(row.label)}: {percent(row.fraction)}'
                '</title></rect>')
        parts.append(_text(_GAUGE_LEFT + track + 6, y + 15, percent(row.fraction)))
    return _close(parts)


def _open(label: str, height: float) -> str:
    text = escape(label)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
            f'aria-label="{text}" viewBox="0 0 {_WIDTH} {_f(height)}" width="100%" '
            # As wide as a phone allows, at most a third above its drawn size: past that
            # the text grows out of proportion with the page's own.
            f'style="max-width: {_MAX_WIDTH}px; height: auto" '
            f'preserveAspectRatio="xMinYMin meet" font-size="13" '
            f'font-family="system-ui, sans-serif"><title>{text}</title>')


def _close(parts: list[str]) -> Markup:
    parts.append("</svg>")
    # Every piece above is built from numbers and escaped text only.
    return Markup("".join(parts))


def _text(x: float, y: float, content: str, *, anchor: str = "start") -> str:
    return (f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" fill="currentColor">'
            f"{escape(content)}</text>")


def _f(value: float) -> str:
    """Coordinates with two decimals at most: the same input gives the same bytes."""
    return f"{value:.2f}".rstrip("0").rstrip(".")
