"""The run timeline: one bar per attempt on a shared time axis, on the run page, refreshed while the run runs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from aihub.db.models import Run, User
from aihub.domain.status import NODE_COLOURS, NodeStatus
from aihub.services.editor import TimelineBar
from aihub.services.workflows import create_workflow
from aihub.web.timeline import CHART_W, LABEL_W, MAX_ROWS, chart
from tests.engine.support import wait_for_run
from tests.web.webapp import Web, example

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_bars_sit_on_a_shared_time_axis() -> None:
    attempts = [
        TimelineBar("prepare", 1, "FAILED", at(0), at(10), 3),
        TimelineBar("prepare", 2, "SUCCEEDED", at(12), at(40), 0),
        TimelineBar("train", 1, "RUNNING", at(40), None, None),
    ]
    drawn = chart(attempts, now=at(100))
    assert [name for name, _ in drawn.rows] == ["prepare", "train"]
    first, second, running = drawn.bars
    assert first.x == LABEL_W and first.w == CHART_W * 10 / 100
    assert second.x == LABEL_W + CHART_W * 12 / 100 and second.y == first.y  # same row
    assert running.x == LABEL_W + CHART_W * 40 / 100 and running.w == CHART_W * 60 / 100  # runs until now
    assert running.y > first.y
    assert first.fill == NODE_COLOURS[NodeStatus.FAILED] and second.fill == NODE_COLOURS[NodeStatus.SUCCEEDED]
    assert first.title == "prepare attempt 1: FAILED, 10s, exit code 3"
    assert [label for _, label in drawn.ticks] == ["0s", "15s", "30s", "45s", "1m00s", "1m15s", "1m30s"]


def test_short_attempts_stay_visible_and_huge_runs_are_capped() -> None:
    blink = chart(
        [
            TimelineBar("a", 1, "SUCCEEDED", at(0), at(0), 0),
            TimelineBar("b", 1, "SUCCEEDED", at(0), at(3600), 0),
        ],
        now=at(3600),
    )
    assert blink.bars[0].w == 2.0
    many = [TimelineBar(f"n{i}", 1, "SUCCEEDED", at(i), at(i + 1), 0) for i in range(MAX_ROWS + 5)]
    capped = chart(many, now=at(10_000))
    assert len(capped.rows) == MAX_ROWS and capped.hidden == 5
    assert chart([], now=T0).bars == []


async def test_the_run_page_shows_the_timeline_of_its_attempts(web: Web) -> None:
    client = await web.client("alice")
    version = await create_workflow(await User.get(username="alice"), example())
    response = await client.post(f"/versions/{version.id}/run", {"name": "timed"})
    run_id = int(response.headers["location"].rsplit("/", 1)[1])
    await wait_for_run(web.rt, run_id)
    page = (await client.get(f"/runs/{run_id}")).text
    section = page[page.index('<section id="timeline"') :]
    assert "hx-trigger" not in section[: section.index(">")]  # finished: no more polling
    bars = {
        m[1]: float(m[2])
        for m in re.finditer(r'id="bar-(\w+-\d)" data-status="SUCCEEDED" x="([\d.]+)"', section)
    }
    assert set(bars) == {"step1-1", "step2-1"} and bars["step2-1"] >= bars["step1-1"]
    fragment = (await client.get(f"/runs/{run_id}/timeline", htmx=True)).text
    assert fragment.lstrip().startswith('<section id="timeline"')


async def test_the_timeline_refreshes_while_the_run_is_active(web: Web) -> None:
    client = await web.client("alice")
    spec = "name: slow\nnodes:\n  - name: wait\n    command: sleep 30\n"
    version = await create_workflow(await User.get(username="alice"), spec)
    response = await client.post(f"/versions/{version.id}/run", {"name": "slow"})
    run_id = int(response.headers["location"].rsplit("/", 1)[1])
    active = (await client.get(f"/runs/{run_id}/timeline", htmx=True)).text
    assert f'hx-get="/runs/{run_id}/timeline" hx-trigger="sse:timeline, every 2s"' in active
    await client.post(f"/runs/{run_id}/stop")
    run = await wait_for_run(web.rt, run_id)
    assert run.status.is_terminal
    stopped = (await client.get(f"/runs/{run_id}/timeline", htmx=True)).text
    assert "hx-trigger" not in stopped
    carol = await web.client("carol")
    assert (await carol.get(f"/runs/{run_id}/timeline")).status_code == 404
    assert await Run.filter(id=run_id).exists()
