"""The run timeline (Gantt chart) drawn on the server as SVG: one row per node, one bar per attempt, from the
attempt's start to its end (or now, while it runs), on a shared time axis — where the time of a run went.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from aihub.domain.messages import msg
from aihub.services.editor import TimelineBar
from aihub.web.svg import colour

LABEL_W, CHART_W, ROW_H, BAR_H, AXIS_H = 170, 620, 22, 14, 22
MAX_ROWS = 300  # beyond this the chart shows the nodes that started first
STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)


@dataclass(frozen=True)
class Bar:
    id: str
    node: str
    attempt: int
    status: str
    fill: str
    x: float
    y: int
    w: float
    title: str


@dataclass(frozen=True)
class Chart:
    rows: list[tuple[str, int]]  # node name, y of its row
    bars: list[Bar]
    ticks: list[tuple[float, str]]  # x, label
    width: int
    height: int
    hidden: int  # nodes left out (more than MAX_ROWS)


def duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _ticks(span: float) -> list[tuple[float, str]]:
    step = next((s for s in STEPS if span / s <= 8), STEPS[-1])
    count = int(span // step)
    return [(LABEL_W + CHART_W * i * step / span, duration(i * step)) for i in range(count + 1)]


def chart(attempts: Sequence[TimelineBar], now: datetime) -> Chart:
    if not attempts:
        return Chart([], [], [], LABEL_W + CHART_W, AXIS_H, 0)
    start = min(a.started_at for a in attempts)
    end = max((a.finished_at or now) for a in attempts)
    span = max((end - start).total_seconds(), 1.0)
    order = list(dict.fromkeys(a.node for a in attempts))
    shown = order[:MAX_ROWS]
    row_y = {name: AXIS_H + i * ROW_H for i, name in enumerate(shown)}
    bars = []
    for a in attempts:
        if a.node not in row_y:
            continue
        until = a.finished_at or now
        x = LABEL_W + CHART_W * (a.started_at - start).total_seconds() / span
        w = max(CHART_W * (until - a.started_at).total_seconds() / span, 2.0)
        took = duration((until - a.started_at).total_seconds())
        exit_code = msg(", exit code {code}", code=a.exit_code) if a.exit_code is not None else ""
        title = msg(
            "{node} attempt {attempt}: {status}, {took}{exit_code}",
            node=a.node,
            attempt=a.attempt,
            status=msg(a.status),
            took=took,
            exit_code=exit_code,
        )
        y = row_y[a.node] + (ROW_H - BAR_H) // 2
        bars.append(
            Bar(f"bar-{a.node}-{a.attempt}", a.node, a.attempt, a.status, colour(a.status), x, y, w, title)
        )
    height = AXIS_H + len(shown) * ROW_H + 4
    return Chart(
        list(row_y.items()), bars, _ticks(span), LABEL_W + CHART_W + 10, height, len(order) - len(shown)
    )
