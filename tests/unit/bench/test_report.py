"""bench/out/report.md and latency.svg: the table carries every figure with its target and verdict,
and the plot is well-formed SVG with one cumulative line per series, rising left to right, whose
0.5 crossing sits at the series' median on the log axis."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from bench import report

NS = {"s": "http://www.w3.org/2000/svg"}


def _verdict(name: str, value: float) -> tuple[str, str] | None:
    return ("<= 1.2", "ok" if value <= 1.2 else "MISSED") if name.startswith("ratio") else None


def test_report_table_and_plot(tmp_path: Path) -> None:
    series = {"hook": [0.004, 0.005, 0.006, 0.020], "floor": [0.003, 0.004, 0.004, 0.010]}
    written = report.write(
        tmp_path, {"ratio_a": 1.3, "ratio_b": 1.1, "hook_ms_p50": 5.0}, _verdict, "# run", series
    )
    assert written == [tmp_path / "report.md", tmp_path / "latency.svg"]
    text = (tmp_path / "report.md").read_text()
    assert "| `ratio_a` | 1.3 | <= 1.2 | **MISSED** |" in text
    assert "| `ratio_b` | 1.1 | <= 1.2 | ok |" in text
    assert "| `hook_ms_p50` | 5 |  |  |" in text
    assert "![latency distributions](latency.svg)" in text

    root = ET.parse(tmp_path / "latency.svg").getroot()
    lines = root.findall("s:polyline", NS)
    assert len(lines) == 2
    legend = [t.text for t in root.findall("s:text", NS) if t.text and "(n=" in t.text]
    assert legend == ["hook (n=4)", "floor (n=4)"]
    ticks = {
        float(t.text or "nan"): float(t.get("x", "0"))
        for t in root.findall("s:text", NS)
        if t.get("y") == "446"
    }
    assert ticks and sorted(ticks.values()) == [ticks[k] for k in sorted(ticks)]
    for line in lines:
        points = [tuple(map(float, p.split(","))) for p in line.get("points", "").split()]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # SVG y grows downwards
    # hook's second sample (5 ms) is its 0.5 point: between the 2 and 10 ms ticks, log-placed.
    hook = [tuple(map(float, p.split(","))) for p in lines[0].get("points", "").split()]
    expected = ticks[2.0] + (ticks[10.0] - ticks[2.0]) * math.log10(5 / 2) / math.log10(10 / 2)
    assert abs(hook[1][0] - expected) < 1.0


def test_no_series_no_plot(tmp_path: Path) -> None:
    assert report.write(tmp_path, {"x": 1.0}, _verdict, "# run", {}) == [tmp_path / "report.md"]
    assert not (tmp_path / "latency.svg").exists()
