"""The executor's view of an attempt (``aihub.services.executors``) on the node panel's container and events
tabs and in GraphQL: an attempt the executor cannot describe — here one recorded by another executor (a
Kubernetes pod's handle read by an installation that now runs the local executor) — says so in the tab, in
English and Chinese, instead of failing the whole panel with a 500."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

import pytest
from babel import Locale
from babel.dates import format_datetime

from aihub.db.models import Attempt, NodeRun, User
from aihub.services.errors import Unavailable
from aihub.services.executors import ExecutorUnavailable, attempt_executor_events, describe_attempt
from aihub.services.workflows import create_workflow
from aihub.web.runs import _time_shown
from tests.engine.support import wait_for_run
from tests.web.webapp import Web, example

#: what the Kubernetes executor stores for a pod: the local executor finds none of its own fields in it
FOREIGN_HANDLE = {"executor": "kubernetes", "id": "aihub-r1-step1-a1", "data": {"namespace": "aihub"}}


async def _foreign_attempt(web: Web) -> str:
    """A finished run whose first node's attempt carries another executor's handle; the run's URL."""
    client = await web.client("alice")
    version = await create_workflow(await User.get(username="alice"), example())
    run_url = (await client.post(f"/versions/{version.id}/run", {"name": "r"})).headers["location"]
    run_id = int(run_url.rsplit("/", 1)[1])
    await wait_for_run(web.rt, run_id)
    node = await NodeRun.get(run_id=run_id, name="step1")
    await Attempt.filter(node_run_id=node.id, number=1).update(handle=FOREIGN_HANDLE)
    return run_url


async def test_a_tab_the_executor_cannot_fill_says_so(web: Web) -> None:
    run_url = await _foreign_attempt(web)
    client = await web.client("alice")
    tab = await client.get(f"{run_url}/nodes/step1?tab=container", htmx=True)
    assert tab.status_code == 200
    assert 'id="container-error"' in tab.text
    assert "The executor cannot describe this attempt: " in html.unescape(tab.text)
    events = await client.get(f"{run_url}/nodes/step1?tab=events", htmx=True)
    assert events.status_code == 200 and 'id="container-error"' not in events.text
    # the local executor lists no events of its own, whatever the handle: the node's events are there
    assert 'id="cluster-events-error"' not in events.text and 'id="events"' in events.text

    # a handle no executor can read (no executor named): the events tab says so too
    node = await NodeRun.get(run_id=int(run_url.rsplit("/", 1)[1]), name="step1")
    await Attempt.filter(node_run_id=node.id, number=1).update(handle={"id": "gone"})
    unread = await client.get(f"{run_url}/nodes/step1?tab=events", htmx=True)
    assert unread.status_code == 200 and 'id="cluster-events-error"' in unread.text
    assert "The executor cannot list the events of this attempt: " in html.unescape(unread.text)

    await client.post("/language", {"lang": "zh_CN", "next": "/"})
    zh = html.unescape((await client.get(f"{run_url}/nodes/step1?tab=container", htmx=True)).text)
    assert "执行器无法描述此次尝试：" in zh
    zh = html.unescape((await client.get(f"{run_url}/nodes/step1?tab=events", htmx=True)).text)
    assert "执行器无法列出此次尝试的事件：" in zh


async def test_the_service_says_why(web: Web) -> None:
    run_url = await _foreign_attempt(web)
    run_id = int(run_url.rsplit("/", 1)[1])
    node = await NodeRun.get(run_id=run_id, name="step1")
    attempt = await Attempt.get(node_run_id=node.id, number=1)
    with pytest.raises(ExecutorUnavailable) as caught:
        await describe_attempt(web.rt.attempt_views, attempt.handle)
    assert isinstance(caught.value, Unavailable) and caught.value.code == "UNAVAILABLE"
    assert caught.value.message.startswith("the executor cannot describe this attempt: ")
    assert await describe_attempt(web.rt.attempt_views, {}) == {}  # never started: nothing to describe
    assert await attempt_executor_events(web.rt.attempt_views, attempt.handle) == []


async def test_the_container_tab_writes_its_times_as_the_page_does(web: Web) -> None:
    """The executor reports when the node started as ISO 8601 text (``started_at``; the API keeps it so); the
    container tab shows it the way the run's header shows its times, in the reader's language — not
    ``2026-12-08T00:08:43.280705+00:00`` beside ``2026年12月8日 00:08:43``."""
    client = await web.client("alice")
    version = await create_workflow(await User.get(username="alice"), example())
    run_url = (await client.post(f"/versions/{version.id}/run", {"name": "r"})).headers["location"]
    await wait_for_run(web.rt, int(run_url.rsplit("/", 1)[1]))
    node = await NodeRun.get(run_id=int(run_url.rsplit("/", 1)[1]), name="step1")
    attempt = await Attempt.get(node_run_id=node.id, number=1)
    reported = (await describe_attempt(web.rt.attempt_views, attempt.handle))["started_at"]
    started = datetime.fromisoformat(reported)

    def row(page: str) -> str:
        """The container tab's started_at (开始时间 in Chinese)."""
        cells = dict(re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", page[page.index('id="container"') :]))
        return cells["开始时间" if "开始时间" in cells else "started_at"]

    en = html.unescape((await client.get(f"{run_url}/nodes/step1?tab=container", htmx=True)).text)
    assert row(en) == format_datetime(started, "medium", locale="en_US"), row(en)
    assert reported not in en
    await client.post("/language", {"lang": "zh_CN", "next": "/"})
    zh = html.unescape((await client.get(f"{run_url}/nodes/step1?tab=container", htmx=True)).text)
    assert row(zh) == format_datetime(started, "medium", locale="zh_CN"), row(zh)
    assert f"{started.year}年" in row(zh)


def test_an_executors_times_are_read_whatever_their_precision() -> None:
    """What the executors give: Python's ISO text, RFC 3339 with nanoseconds and ``Z`` (podman, docker,
    Kubernetes), the zero time a container engine gives for what has not happened, no time at all."""
    micro = "2026-12-08T00:08:43.280705+00:00"
    assert _time_shown(micro) == format_datetime(datetime.fromisoformat(micro), "medium", locale="en")
    nano = "2026-12-08T00:08:43.123456789Z"
    expected = datetime(2026, 12, 8, 0, 8, 43, 123456, tzinfo=UTC)
    time_of_day = Locale.parse("en").time_formats["medium"].pattern
    assert _time_shown(nano, "time") == format_datetime(expected, time_of_day, locale="en")
    assert _time_shown("0001-01-01T00:00:00Z") == "0001-01-01T00:00:00Z"
    assert _time_shown("yesterday") == "yesterday"
    assert _time_shown(None) is None
