"""The human-readable side of a bench run: bench/out/report.md (the results table with each target and
verdict, the run's time and load) and bench/out/latency.svg (the latency distributions next to their
references, from the raw samples the sections recorded with `bench.common.record_series`).

The plot is a cumulative distribution per series on a log time axis: a driver line to the right of its
reference is the overhead, and the p50/p99 the table gives are where a line crosses 0.5/0.99. It is
drawn as plain SVG so the report needs nothing beyond the standard library.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping
from pathlib import Path

WIDTH, HEIGHT = 900, 480
LEFT, RIGHT, TOP, BOTTOM = 70, 260, 30, 50
CHAR_WIDTH = 7  # px per legend character at font-size 12: generous, so a long label is never cut off
COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
DASHES = ("", "6 3", "2 2", "8 3 2 3")


def markdown(
    results: Mapping[str, float],
    verdict: Callable[[str, float], tuple[str, str] | None],
    header: str,
) -> str:
    """`verdict(name, value)`: (target text, ok/MISSED) or None for a figure without a target."""
    rows = [header, "", "| metric | value | target | verdict |", "|---|---:|---|---|"]
    for name, value in results.items():
        judged = verdict(name, value)
        target, word = judged if judged is not None else ("", "")
        shown = str(int(value)) if float(value).is_integer() else f"{value:g}"
        rows.append(f"| `{name}` | {shown} | {target} | {'**MISSED**' if word == 'MISSED' else word} |")
    return "\n".join(rows) + "\n"


def _ticks(low: float, high: float) -> list[float]:
    ticks: list[float] = []
    decade = 10 ** math.floor(math.log10(low))
    while decade <= high:
        ticks += [t for t in (decade, 2 * decade, 5 * decade) if low <= t <= high]
        decade *= 10
    return ticks


def _el(tag: str, text: str | None = None, /, **attrs: object) -> str:
    """One SVG element; attribute names use `_` for `-` (stroke_width -> stroke-width)."""
    rendered = " ".join(
        f'{key.replace("_", "-")}="{html.escape(str(value))}"' for key, value in attrs.items()
    )
    return f"<{tag} {rendered}/>" if text is None else f"<{tag} {rendered}>{html.escape(text)}</{tag}>"


def svg(series: Mapping[str, list[float]], title: str) -> str:
    """CDFs of `series` (samples in seconds), x in milliseconds on a log scale."""
    drawn = {name: sorted(s * 1000 for s in samples if s > 0) for name, samples in series.items() if samples}
    if not drawn:
        return ""
    low = 10 ** math.floor(math.log10(min(v[0] for v in drawn.values())))
    high = 10 ** math.ceil(math.log10(max(v[-1] for v in drawn.values())))
    span_x, span_y = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    labels = [f"{name} (n={len(values)})" for name, values in drawn.items()]
    # The legend column widens for long labels (host-device: hook StopPodSandbox); the plot keeps its size.
    width = LEFT + span_x + max(RIGHT, 12 + 30 + CHAR_WIDTH * max(map(len, labels)) + 12)

    def x(value: float) -> float:
        return round(LEFT + span_x * math.log10(value / low) / math.log10(high / low), 1)

    def y(fraction: float) -> float:
        return round(TOP + span_y * (1 - fraction), 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" '
        'font-family="sans-serif" font-size="12">',
        _el("rect", width=width, height=HEIGHT, fill="white"),
        _el("text", title, x=LEFT, y=18, font_size=14),
    ]
    for tick in _ticks(low, high):
        parts.append(_el("line", x1=x(tick), y1=TOP, x2=x(tick), y2=TOP + span_y, stroke="#ddd"))
        parts.append(_el("text", f"{tick:g}", x=x(tick), y=TOP + span_y + 16, text_anchor="middle"))
    for fraction in (0, 0.25, 0.5, 0.75, 0.99, 1):
        colour = "#bbb" if fraction in (0.5, 0.99) else "#eee"
        parts.append(_el("line", x1=LEFT, y1=y(fraction), x2=LEFT + span_x, y2=y(fraction), stroke=colour))
        parts.append(_el("text", f"{fraction:g}", x=LEFT - 6, y=y(fraction) + 4, text_anchor="end"))
    mid_y = TOP + span_y / 2
    parts.append(
        _el("text", "milliseconds (log scale)", x=LEFT + span_x / 2, y=HEIGHT - 10, text_anchor="middle")
    )
    parts.append(
        _el(
            "text",
            "fraction of samples",
            x=16,
            y=mid_y,
            transform=f"rotate(-90 16 {mid_y})",
            text_anchor="middle",
        )
    )
    for index, (label, values) in enumerate(zip(labels, drawn.values(), strict=True)):
        style = {
            "fill": "none",
            "stroke": COLOURS[index % len(COLOURS)],
            "stroke_width": 1.6,
            "stroke_dasharray": DASHES[(index // len(COLOURS)) % len(DASHES)] or "none",
        }
        count = len(values)
        points = " ".join(f"{x(v)},{y((i + 1) / count)}" for i, v in enumerate(values))
        parts.append(_el("polyline", points=points, **style))
        legend_x, legend_y = LEFT + span_x + 12, TOP + 14 + 18 * index
        parts.append(_el("line", x1=legend_x, y1=legend_y - 4, x2=legend_x + 24, y2=legend_y - 4, **style))
        parts.append(_el("text", label, x=legend_x + 30, y=legend_y))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write(
    out_dir: Path,
    results: Mapping[str, float],
    verdict: Callable[[str, float], tuple[str, str] | None],
    header: str,
    series: Mapping[str, list[float]],
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.md"]
    text = markdown(results, verdict, header)
    plot = svg(series, "latency distributions (CDF): driver paths next to their references")
    if plot:
        (out_dir / "latency.svg").write_text(plot)
        written.append(out_dir / "latency.svg")
        text += "\n![latency distributions](latency.svg)\n"
    (out_dir / "report.md").write_text(text)
    return written
