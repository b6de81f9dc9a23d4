"""A timeline as an SVG: every probe's outcomes over time, with the moments marked.

Plain SVG text, no plotting library and nothing fetched: it must render
offline, inside summary.html and as an Allure attachment alike.
"""

from __future__ import annotations

from html import escape
from typing import Any

WIDTH, ROW, LEFT, TOP, BOTTOM = 760, 34, 70, 44, 34
COLOURS = {"ok": "#2e7d32", "plaintext": "#b00020"}
FAILED = "#f9a825"
MOMENTS = (("fault_at", "fault", "#b00020"), ("expected_fail_closed_at", "expected fail-closed", "#6a1b9a"),
           ("restored_at", "restore", "#1565c0"))


def timeline_svg(timeline: dict[str, Any]) -> str:
    samples = timeline.get("samples") or []
    probes = sorted({s["probe"] for s in samples}) or ["mesh", "vault"]
    end = float(max([s.get("end", s["t"]) for s in samples] + [timeline.get(k) or 0 for k, _, _ in MOMENTS] + [1.0]))
    height = TOP + ROW * len(probes) + BOTTOM
    span = WIDTH - LEFT - 10

    def x(t: float) -> float:
        return round(LEFT + span * t / end, 1)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11" role="img">',
             f'<title>{escape(str(timeline.get("scenario")))}: outcomes over time</title>',
             f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>']
    for row, probe in enumerate(probes):
        y = TOP + row * ROW
        parts.append(f'<text x="4" y="{y + ROW / 2 + 4}">{escape(probe)}</text>')
        parts.append(f'<line x1="{LEFT}" y1="{y + ROW / 2}" x2="{WIDTH - 10}" y2="{y + ROW / 2}" stroke="#ddd"/>')
        for sample in (s for s in samples if s["probe"] == probe):
            colour = COLOURS.get(sample["outcome"], FAILED)
            # Each sample is drawn over the interval it took (older timelines carry no end).
            answered = float(sample.get("end", sample["t"]))
            width = max(2.0, round(x(answered) - x(sample["t"]), 1))
            parts.append(f'<rect x="{x(sample["t"])}" y="{y + 6}" width="{width}" height="{ROW - 12}" '
                         f'fill="{colour}" fill-opacity="0.8"><title>t={sample["t"]:.3f}..{answered:.3f}s '
                         f'{escape(sample["outcome"])}</title></rect>')
    axis = TOP + ROW * len(probes)
    for tick in range(0, int(end) + 1, max(1, int(end // 8) or 1)):
        parts.append(f'<text x="{x(tick)}" y="{axis + 14}" text-anchor="middle" fill="#555">{tick}s</text>')
    for index, (key, label, colour) in enumerate(MOMENTS):
        moment = timeline.get(key)
        if moment is None:
            continue
        label_y = 11 + 11 * index  # one line each, so the marks never overwrite one another
        parts.append(f'<line x1="{x(moment)}" y1="{label_y + 2}" x2="{x(moment)}" y2="{axis}" stroke="{colour}" '
                     f'stroke-dasharray="4 3"/>')
        # Near the right edge the label runs leftwards, so it is never cut off.
        anchor, shift = ("end", -3) if x(moment) > WIDTH * 0.6 else ("start", 3)
        parts.append(f'<text x="{x(moment) + shift}" y="{label_y}" text-anchor="{anchor}" fill="{colour}">'
                     f'{escape(label)} (t={moment:.1f}s)</text>')
    legend = " ".join(f"{name}: {colour}" for name, colour in (("ok", COLOURS["ok"]), ("failed", FAILED),
                                                               ("plaintext", COLOURS["plaintext"])))
    parts.append(f'<text x="{LEFT}" y="{height - 4}" fill="#555">green ok · amber failed closed · '
                 f'red plaintext success</text><desc>{escape(legend)}</desc>')
    parts.append("</svg>")
    return "\n".join(parts)
