"""The monitor page's charts, drawn by matplotlib as inline SVG (no JavaScript, nothing
fetched). Artists that carry a figure's data get an SVG id (``gid``) naming it, e.g.
``job-states-done``, so the page can be checked in a browser.

>>> "job-states-done" in bar_chart("job-states", {"done": 3, "failed": 1})
True
"""

from __future__ import annotations

import functools
import io
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import matplotlib
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from smartbkg_prod.filter.control import VariableBias

STATE_COLOURS = {
    "pending": "#9aa5b1",
    "running": "#3b82f6",
    "held": "#f59e0b",
    "done": "#16a34a",
    "failed": "#dc2626",
    "cancelled": "#6b7280",
}
# Text stays text (the browser's font, searchable); small type like the rest of the page;
# names from reports are drawn as written ("$" starts no TeX).
_STYLE = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_NO_METADATA = dict.fromkeys(("Creator", "Date", "Format", "Type"))
_XLINK = ' xmlns:xlink="http://www.w3.org/1999/xlink"'
_LOCK = threading.Lock()


def _chart(draw: Callable[..., Figure]) -> Callable[..., str]:
    """``draw`` in the page's style, as inline SVG, redrawn only when its data change (the
    page reloads every 30 s; a chart costs matplotlib 0.1-0.4 s). Margins are set by hand:
    a tight bounding box would draw every chart twice."""
    drawn: dict[str, str] = {}

    @functools.wraps(draw)
    def chart(*arguments) -> str:
        key = json.dumps(arguments, default=lambda model: model.model_dump())
        if key not in drawn:
            buffer = io.StringIO()
            with _LOCK, matplotlib.rc_context(_STYLE):  # rcParams are global
                draw(*arguments).savefig(buffer, format="svg", metadata=_NO_METADATA)
            text = buffer.getvalue()
            if len(drawn) >= 64:
                drawn.pop(next(iter(drawn)), None)
            # Inline in HTML the namespaces are implied: no URL on the page but links.
            drawn[key] = text[text.index("<svg") :].replace(_XLINK, "")
        return drawn[key]

    return chart


@_chart
def throughput_chart(
    element_id: str,
    starts: list[float],
    width_s: float,
    per_bin: list[float],
    moving: list[float],
    unit: str,
) -> Figure:
    """Bars per time bin (``<id>-bin-<i>``) and the moving-window line, time axis in UTC."""
    figure = Figure(figsize=(6.4, 2.2))
    figure.subplots_adjust(left=0.11, right=0.98, bottom=0.2, top=0.96)
    ax = figure.add_subplot()
    if not starts:
        ax.text(0.5, 0.5, "no finished job yet", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return figure
    times = [datetime.fromtimestamp(t, UTC) for t in starts]
    days = width_s / 86400
    bars = ax.bar(times, per_bin, width=days, align="edge", color="#93c5fd", label="per bin")
    for index, (bar, value) in enumerate(zip(bars, per_bin, strict=True)):
        bar.set_gid(f"{element_id}-bin-{index}" if value > 0 else None)
    ends = [datetime.fromtimestamp(t + width_s, UTC) for t in starts]
    ax.plot(ends, moving, color="#1d4ed8", linewidth=2, label="moving window")
    locator = AutoDateLocator()
    ax.xaxis.set(major_locator=locator, major_formatter=ConciseDateFormatter(locator))
    ax.set_ylabel(unit)
    ax.legend(loc="upper left", frameon=False)
    return figure


@_chart
def bar_chart(element_id: str, values: dict[str, float]) -> Figure:
    """Horizontal bars, one per label (``<id>-<label>``; job states in their usual colours)."""
    height = 0.25 * max(len(values), 1) + 0.2
    figure = Figure(figsize=(3.2, height))
    figure.subplots_adjust(left=0.24, right=0.9, bottom=0.1 / height, top=1 - 0.1 / height)
    ax = figure.add_subplot()
    labels = list(values)[::-1]
    colours = [STATE_COLOURS.get(label, "#64748b") for label in labels]
    bars = ax.barh(labels, [values[label] for label in labels], color=colours)
    for bar, label in zip(bars, labels, strict=True):
        bar.set_gid(f"{element_id}-{label}")
    ax.bar_label(bars, fmt="{:,.0f}", padding=3)
    ax.spines["bottom"].set_visible(False)
    ax.set_xticks([])
    return figure


@_chart
def distribution_charts(variables: list[VariableBias]) -> Figure:
    """One small panel per variable (``bias-<variable>``): the control sample as grey bars,
    the weighted filter-kept events as a blue step line, both normalised; bin index on the
    x axis, so discrete and continuous variables look alike."""
    columns = 5
    rows = max(-(-len(variables) // columns), 1)
    height = 1.9 * rows
    figure = Figure(figsize=(12, height))
    figure.subplots_adjust(0.01, 0.25 / height, 0.99, 1 - 0.25 / height, wspace=0.08, hspace=0.5)
    for index, variable in enumerate(variables):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.set_gid(f"bias-{variable.variable}")
        control = [v / (sum(variable.control_estimate) or 1) for v in variable.control_estimate]
        weighted = [v / (sum(variable.weighted_estimate) or 1) for v in variable.weighted_estimate]
        ax.stairs(control, fill=True, color="#cbd5e1")
        ax.stairs(weighted, color="#2563eb")
        ax.set_title(variable.variable, loc="left")
        ax.set_yticks([])
        edges = variable.edges
        ax.set_xticks([0, len(control)], [f"{edges[0]:.4g}", f"{edges[-1]:.4g}"])
    return figure
