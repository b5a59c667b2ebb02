"""Inline SVG plots for the monitor page: no JavaScript, no external assets.

Each function returns one ``<svg>`` element as a string; every text it draws is escaped.

>>> bar_chart("states", {"done": 3, "failed": 1}).startswith('<svg id="states"')
True
"""

from __future__ import annotations

import time
from html import escape

STATE_COLOURS = {
    "pending": "#9aa5b1",
    "running": "#3b82f6",
    "held": "#f59e0b",
    "done": "#16a34a",
    "failed": "#dc2626",
    "cancelled": "#6b7280",
}
_FONT = 'font-family="sans-serif" font-size="11"'


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.1f}k"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.2g}"


def _clock(timestamp: float, span: float) -> str:
    fmt = "%H:%M:%S" if span < 600 else ("%H:%M" if span < 2 * 86400 else "%m-%d %H:%M")
    return time.strftime(fmt, time.gmtime(timestamp))


def throughput_chart(
    element_id: str,
    starts: list[float],
    width_s: float,
    per_bin: list[float],
    moving: list[float],
    unit: str,
    width: int = 640,
    height: int = 220,
) -> str:
    """Bars per time bin and a moving-window line, time axis in UTC."""
    left, right, top, bottom = 56, 12, 14, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg id="{escape(element_id)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="throughput over time ({escape(unit)})">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    if not starts:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" {_FONT}>'
            "no finished job yet</text></svg>"
        )
        return "".join(parts)
    peak = max(max(per_bin), max(moving), 1e-12)
    t0, span = starts[0], starts[-1] + width_s - starts[0]

    def x(t: float) -> float:
        return left + plot_w * (t - t0) / span

    def y(value: float) -> float:
        return top + plot_h * (1 - value / peak)

    for fraction in (0.0, 0.5, 1.0):
        value = peak * fraction
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#e5e5e5"/>'
            f'<text x="{left - 4}" y="{y(value) + 4:.1f}" text-anchor="end" {_FONT}>{_number(value)}</text>'
        )
    bar_w = max(plot_w * width_s / span - 1, 1)
    for start, value in zip(starts, per_bin, strict=True):
        if value > 0:
            parts.append(
                f'<rect class="bin" x="{x(start):.1f}" y="{y(value):.1f}" width="{bar_w:.1f}" '
                f'height="{top + plot_h - y(value):.1f}" fill="#93c5fd"><title>{_clock(start, span)}: '
                f"{_number(value)} {escape(unit)}</title></rect>"
            )
    line = " ".join(f"{x(s + width_s):.1f},{y(v):.1f}" for s, v in zip(starts, moving, strict=True))
    parts.append(
        f'<polyline class="moving" points="{line}" fill="none" stroke="#1d4ed8" stroke-width="2"/>'
    )
    for t, anchor in ((t0, "start"), (t0 + span / 2, "middle"), (t0 + span, "end")):
        parts.append(
            f'<text x="{x(t):.1f}" y="{height - 10}" text-anchor="{anchor}" {_FONT}>{_clock(t, span)}</text>'
        )
    parts.append(
        f'<text x="{left + 4}" y="{top + 12}" {_FONT} fill="#555">{escape(unit)} '
        "(bars: per bin, line: moving window)</text></svg>"
    )
    return "".join(parts)


def bar_chart(element_id: str, values: dict[str, float], width: int = 320) -> str:
    """Horizontal bars, one per label (job states use their usual colours)."""
    row_h, label_w = 22, 80
    height = row_h * max(len(values), 1) + 8
    peak = max(list(values.values()) + [1])
    parts = [
        f'<svg id="{escape(element_id)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(element_id)}">'
    ]
    for row, (label, value) in enumerate(values.items()):
        y = 4 + row * row_h
        bar = (width - label_w - 50) * value / peak
        colour = STATE_COLOURS.get(label, "#64748b")
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" {_FONT}>{escape(label)}</text>'
            f'<rect class="bar" data-label="{escape(label)}" x="{label_w}" y="{y + 3}" width="{bar:.1f}" '
            f'height="{row_h - 6}" fill="{colour}"/>'
            f'<text x="{label_w + bar + 4:.1f}" y="{y + 15}" {_FONT}>{_number(value)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def heatmap(
    element_id: str, rows: list[str], columns: list[str], counts: dict[tuple[str, str], int]
) -> str:
    """Failure matrix: rows = exit/error codes, columns = sites, colour = failed attempts."""
    cell_w, cell_h, label_w, header_h = 78, 24, 170, 60
    width = label_w + cell_w * max(len(columns), 1) + 10
    height = header_h + cell_h * max(len(rows), 1) + 10
    parts = [
        f'<svg id="{escape(element_id)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="failure matrix: exit code by site">'
    ]
    if not rows:
        parts.append(f'<text x="10" y="30" {_FONT}>no failed attempt</text></svg>')
        return "".join(parts)
    peak = max(counts.values())
    for column, site in enumerate(columns):
        x = label_w + column * cell_w + cell_w / 2
        parts.append(
            f'<text x="{x:.1f}" y="{header_h - 8}" text-anchor="start" {_FONT} '
            f'transform="rotate(-30 {x:.1f} {header_h - 8})">{escape(site)}</text>'
        )
    for row, code in enumerate(rows):
        y = header_h + row * cell_h
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end" {_FONT}>{escape(code)}</text>'
        )
        for column, site in enumerate(columns):
            count = counts.get((code, site), 0)
            intensity = count / peak if peak else 0.0
            # White to red; the text turns white on dark cells.
            green_blue = int(255 - 200 * intensity)
            fill = f"rgb(255,{green_blue},{green_blue})" if count else "#f5f5f5"
            x = label_w + column * cell_w
            parts.append(
                f'<rect class="cell" data-code="{escape(code)}" data-site="{escape(site)}" '
                f'data-count="{count}" x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                f'fill="{fill}"><title>{escape(code)} at {escape(site)}: {count}</title></rect>'
            )
            if count:
                colour = "#fff" if intensity > 0.6 else "#111"
                parts.append(
                    f'<text x="{x + cell_w / 2 - 1}" y="{y + 16}" text-anchor="middle" {_FONT} '
                    f'fill="{colour}">{count}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)


def distribution_chart(
    element_id: str,
    edges: list[float],
    reference: list[float],
    weighted: list[float],
    label: str,
    width: int = 300,
    height: int = 150,
) -> str:
    """Normalised histograms: ``reference`` as grey bars, ``weighted`` as a blue step line
    (bin index on the x axis, so discrete and continuous variables look alike)."""
    left, right, top, bottom = 8, 8, 16, 18
    plot_w, plot_h = width - left - right, height - top - bottom
    ref_total, w_total = sum(reference) or 1.0, sum(weighted) or 1.0
    ref = [v / ref_total for v in reference]
    wgt = [v / w_total for v in weighted]
    peak = max(ref + wgt + [1e-12])
    n_bins = max(len(ref), 1)
    bin_w = plot_w / n_bins

    def y(value: float) -> float:
        return top + plot_h * (1 - value / peak)

    parts = [
        f'<svg id="{escape(element_id)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}: control vs weighted">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
        f'<text x="{left}" y="11" {_FONT}>{escape(label)}</text>',
    ]
    for index, value in enumerate(ref):
        parts.append(
            f'<rect class="control" x="{left + index * bin_w:.1f}" y="{y(value):.1f}" '
            f'width="{bin_w:.1f}" height="{top + plot_h - y(value):.1f}" fill="#cbd5e1"/>'
        )
    steps = " ".join(
        f"{left + index * bin_w:.1f},{y(value):.1f} {left + (index + 1) * bin_w:.1f},{y(value):.1f}"
        for index, value in enumerate(wgt)
    )
    parts.append(f'<polyline class="weighted" points="{steps}" fill="none" stroke="#2563eb"/>')
    if edges:
        parts.append(
            f'<text x="{left}" y="{height - 4}" {_FONT}>{_number(edges[0])}</text>'
            f'<text x="{width - right}" y="{height - 4}" text-anchor="end" {_FONT}>'
            f"{_number(edges[-1])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
