"""The executor's view of an attempt (``aihub.services.executors``) on the node panel's container and events
tabs and in GraphQL: an attempt the executor cannot describe — here one recorded by another executor (a
Kubernetes pod's handle read by an installation that now runs the local executor) — says so in the tab, in
English and Chinese, instead of failing the whole panel with a 500."""

from __future__ import annotations

import html

import pytest

from aihub.db.models import Attempt, NodeRun, User
from aihub.services.errors import Unavailable
from aihub.services.executors import ExecutorUnavailable, attempt_executor_events, describe_attempt
from aihub.services.workflows import create_workflow
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
