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
    top = max(totals.values(), default=0) or 1
    left, bottom, top_pad = 60, 30, 10
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    slot = plot_w / max(len(periods), 1)
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
                x=left + i * slot + slot * 0.1,
                y=y,
                width=max(slot * 0.8, 1.0),
                height=h,
                color=colors[row.groups],
                title=f"{name} {group}: {row.credits_used:,} credits, US${row.usd:,.2f}".replace(
                    "  ", " "
                ),
            )
        )
    ticks = [
        (top_pad + plot_h - plot_h * f, f"{round(top * f):,}") for f in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
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
    return Chart(width, height, bars, legend, ticks, labels)
