"""The costs page's chart: a stacked bar chart of credits per period, as geometry the
template draws as SVG (no script; the same numbers as the table)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from archiver import report as reports

#: Series colours of the costs chart (colour-blind-safe palette), cycled; statuses keep
#: the colours their badges have on every page.
PALETTE = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb")
STATUS_COLORS = {
    "done": "#228833",
    "failed": "#cc3311",
    "cancelled": "#999999",
    "running": "#ccbb44",
    "waiting": "#66ccee",
}
#: Horizontal room one period label needs on the chart, in SVG units.
LABEL_WIDTH = 72
#: Widest bar, in SVG units: a chart of one or two periods draws bars, not blocks.
MAX_BAR_WIDTH = 56
#: What the y axis counts.
UNIT = "credits"
#: About this many steps up the y axis.
TICK_STEPS = 5


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass
class Chart:
    width: int
    height: int
    bars: list[Bar]
    legend: list[tuple[str, str]]
    ticks: list[tuple[float, str]]
    labels: list[tuple[float, str]]
    #: Where the plot starts (the y axis), and what it counts.
    left: int = 60
    unit: str = UNIT


def tick_step(top: float, steps: int = TICK_STEPS) -> int:
    """A round step (1, 2 or 5 x 10^k, at least 1 credit) that reaches ``top`` in about
    ``steps`` steps."""
    rough = max(top / steps, 1.0)
    power = 10 ** math.floor(math.log10(rough))
    for multiple in (1, 2, 5, 10):
        if multiple * power >= rough:
            return int(multiple * power)
    raise AssertionError("unreachable: 10 x power >= rough")  # pragma: no cover


def axis_ticks(total: int) -> list[int]:
    """The y axis's ticks: 0, then round steps up to the first at or above ``total``."""
    step = tick_step(total)
    return [step * k for k in range(max(math.ceil(total / step), 1) + 1)]


def costs_chart(report: reports.CreditsReport, width: int = 900, height: int = 260) -> Chart:
    """A stacked bar chart of credits per period (stacks: the group), drawn as SVG by the
    template: no script, the same numbers as the table."""
    periods = list(dict.fromkeys(row.period for row in report.rows))
    series = list(dict.fromkeys(row.groups for row in report.rows))
    colors = {
        key: STATUS_COLORS.get(key[0] or "", PALETTE[i % len(PALETTE)])
        if report.group_by == ("status",)
        else PALETTE[i % len(PALETTE)]
        for i, key in enumerate(series)
    }
    totals: dict[Any, int] = {}
    for row in report.rows:
        totals[row.period] = totals.get(row.period, 0) + row.credits_used
    marks = axis_ticks(max(totals.values(), default=0))
    top = marks[-1]
    left, bottom, top_pad = 60, 30, 22
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    slot = plot_w / max(len(periods), 1)
    bar_w = max(min(slot * 0.8, MAX_BAR_WIDTH), 1.0)
    bars: list[Bar] = []
    stacked: dict[Any, int] = {}
    for row in report.rows:
        i = periods.index(row.period)
        base = stacked.get(row.period, 0)
        stacked[row.period] = base + row.credits_used
        h = plot_h * row.credits_used / top
        y = top_pad + plot_h - plot_h * (base + row.credits_used) / top
        name = reports.period_label(row.period, report.by) or reports.NO_DATE
        group = " / ".join(g or reports.NONE_LABEL for g in row.groups)
        bars.append(
            Bar(
                x=left + i * slot + (slot - bar_w) / 2,
                y=y,
                width=bar_w,
                height=h,
                color=colors[row.groups],
                title=f"{name} {group}: {row.credits_used:,} credits, US${row.usd:,.2f}".replace(
                    "  ", " "
                ),
            )
        )
    ticks = [(top_pad + plot_h - plot_h * mark / top, f"{mark:,}") for mark in marks]
    step = max(1, math.ceil(LABEL_WIDTH / slot))
    labels = [
        (left + i * slot + slot / 2, reports.period_label(p, report.by) or reports.NO_DATE)
        for i, p in enumerate(periods)
        if i % step == 0
    ]
    legend = [
        (" / ".join(g or reports.NONE_LABEL for g in key), colors[key])
        for key in series
        if report.group_by
    ]
    return Chart(width, height, bars, legend, ticks, labels, left=left)
