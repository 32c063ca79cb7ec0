"""Charts as SVG, drawn on the server: the supervisor page shows them as images, so no
charting library runs in the browser and nothing third-party is committed or fetched.

Every label (an agent's name, a queue) is XML-escaped; the document has no script and no
external reference, and is served with a CSP that forbids both (hub/reports_api.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 46, 44  # TOP: the title, then the unit under it
# Okabe-Ito colours, darkened where needed for 3:1 contrast on white (WCAG non-text).
PALETTE = ("#0063a6", "#b35900", "#007a5a", "#a3336b", "#5c4bb3", "#806600", "#333333")


def _fmt(value: float) -> str:
    """Axis and value labels: whole numbers as such, one decimal from 1 up, and two
    significant digits below (a first response of seconds is a fraction of a minute: the
    axis must not read 0.0 at every line)."""
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.2g}"


def _nice_max(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _frame(title: str, description: str, body: list[str]) -> str:
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label={quoteattr(title)} '
        'font-family="system-ui, sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f"<desc>{escape(description)}</desc>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="20" font-size="14" font-weight="600" fill="#1a1a1a">'
        f"{escape(title)}</text>",
        *body,
        "</svg>",
    ])


def _y_axis(top: float, unit: str) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    out = []
    for i in range(5):
        value = top * i / 4
        y = HEIGHT - BOTTOM - plot_h * i / 4
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#d0d0d0" stroke-width="1"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#404040">'
                   f"{escape(_fmt(value))}</text>")
    out.append(f'<text x="12" y="{TOP - 8}" fill="#404040">{escape(unit)}</text>')
    return out


def line_chart(title: str, x_labels: Sequence[str], series: dict[str, list[float | None]],
               unit: str, *, empty: str = "no data in this range") -> str:
    """One line per series over ``x_labels``; a None is a gap (no data that interval)."""
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    peak = max((v for values in series.values() for v in values if v is not None),
               default=0.0)
    top = _nice_max(peak)
    n = max(1, len(x_labels) - 1)

    def x(i: int) -> float:
        return LEFT + plot_w * i / n

    def y(v: float) -> float:
        return HEIGHT - BOTTOM - plot_h * v / top

    body = _y_axis(top, unit)
    step = max(1, math.ceil(len(x_labels) / 8))
    for i in range(0, len(x_labels), step):
        body.append(f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                    f'fill="#404040">{escape(x_labels[i][-5:])}</text>')
    for k, (name, values) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for i, v in enumerate(values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                body.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>')
            elif run:
                body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                            f'points="{" ".join(run)}"/>')
        ly = TOP + 16 * k + 8
        body.append(f'<rect x="{WIDTH - RIGHT + 12}" y="{ly - 8}" width="10" height="10" '
                    f'fill="{colour}"/>')
        body.append(f'<text x="{WIDTH - RIGHT + 28}" y="{ly + 1}" fill="#1a1a1a">'
                    f"{escape(name[:18])}</text>")
    if not series:
        body.append(f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" '
                    f'text-anchor="middle" fill="#404040">{escape(empty)}</text>')
    description = "; ".join(
        f"{name}: " + ", ".join("-" if v is None else _fmt(v) for v in values)
        for name, values in series.items())
    return _frame(title, description or empty, body)


def bar_chart(title: str, rows: Sequence[tuple[str, float]], unit: str, *,
              empty: str = "no data in this range") -> str:
    """Horizontal bars, longest first as given (a leaderboard)."""
    rows = list(rows)[:10]
    plot_w = WIDTH - LEFT - RIGHT - 60
    top = _nice_max(max((v for _, v in rows), default=0.0))
    body: list[str] = []
    bar_h = min(22.0, (HEIGHT - TOP - 24) / max(1, len(rows)) - 4)
    for i, (label, value) in enumerate(rows):
        y = TOP + 8 + i * (bar_h + 4)
        w = plot_w * value / top
        body.append(f'<text x="{LEFT + 56}" y="{y + bar_h / 2 + 4:.1f}" text-anchor="end" '
                    f'fill="#1a1a1a">{escape(label[:16])}</text>')
        body.append(f'<rect x="{LEFT + 62}" y="{y:.1f}" width="{w:.1f}" height="{bar_h:.1f}" '
                    f'fill="{PALETTE[0]}"/>')
        body.append(f'<text x="{LEFT + 68 + w:.1f}" y="{y + bar_h / 2 + 4:.1f}" '
                    f'fill="#1a1a1a">{escape(_fmt(value))}</text>')
    if not rows:
        body.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
                    f'fill="#404040">{escape(empty)}</text>')
    description = ", ".join(f"{label}: {_fmt(value)} {unit}" for label, value in rows)
    return _frame(title, description or empty, body)
