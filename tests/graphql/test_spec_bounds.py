"""Spec bounds through the API (issue 11, point 6): clear INVALID_INPUT errors at save, for run params too,
and a big spec validated without holding the event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.graphql.harness import Server

pytestmark = [
    pytest.mark.usefixtures("users"),
    pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True),
]

CREATE_WF = "mutation($spec: JSON!) { createWorkflow(spec: $spec) { id } }"
CREATE_RUN = "mutation($v: ID!, $params: JSON) { createRun(versionId: $v, params: $params) { id } }"


@pytest.fixture
def app_options() -> dict[str, Any]:
    return {"run_engine": False}


def _chain(count: int) -> dict[str, Any]:
    return {
        "name": "big",
        "nodes": [
            {"name": f"n{i}", "command": "true", **({"depends_on": [f"n{i - 1}"]} if i else {})}
            for i in range(count)
        ],
    }


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"name": "huge", "nodes": [{"name": "a", "command": "x" * 1024**2}]}, "command: is 1048576 bytes"),
        ({"name": "huge", "nodes": [{"name": "a", "command": "x" * 5 * 1024**2}]}, "AIHUB_MAX_SPEC_BYTES"),
        (_chain(22_000), "22000 nodes, more than the limit of 10000 (AIHUB_MAX_SPEC_NODES)"),
        (
            {"name": "nul", "nodes": [{"name": "a", "command": "true", "env": {"X": "a\x00b"}}]},
            "env.X: contains a NUL",
        ),
        (
            {"name": "shim", "nodes": [{"name": "a", "command": "true", "env": {"_aihub_log": "/x"}}]},
            "reserved",
        ),
    ],
    ids=["long-command", "big-document", "many-nodes", "nul", "reserved-name"],
)
async def test_unbounded_specs_are_refused_at_save(users: Server, spec: dict[str, Any], needle: str) -> None:
    """The hazard: such specs were saved, and failed at launch (or held the server while being checked)."""
    error = await users.error(CREATE_WF, {"spec": spec}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "spec"}
    assert needle in error["message"]
    assert (await users.gql("{ workflows { items { id } } }", as_="alice"))["workflows"]["items"] == []


async def test_run_params_with_nul_are_refused(users: Server) -> None:
    spec = {
        "name": "p",
        "params": [{"name": "x"}],
        "nodes": [{"name": "a", "command": "echo $x", "inputs": [{"name": "x", "from": "params.x"}]}],
    }
    version = (await users.gql(CREATE_WF, {"spec": spec}, as_="alice"))["createWorkflow"]["id"]
    error = await users.error(CREATE_RUN, {"v": version, "params": {"x": "a\x00b"}}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "params"}
    assert "NUL" in error["message"]


async def test_a_big_spec_does_not_hold_the_event_loop(users: Server) -> None:
    """While a spec of the largest allowed size is checked, the server's event loop (this test's loop: the
    server runs in-process) keeps turning: no pause is more than a fraction of the request's time. (Checked on
    the loop itself, as a ratio, so that a busy machine slows both sides alike.)"""
    spec = _chain(10_000)
    for node in spec["nodes"]:
        node.update(
            env={"A": "1", "B": "2"}, inputs=[{"name": "a", "value": "x"}, {"name": "b", "value": "y"}]
        )
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = loop.time()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    await users.gql(CREATE_WF, {"spec": spec}, as_="alice")
    duration = time.perf_counter() - started
    done.set()
    await ticker
    assert max(gaps) < duration / 2, (max(gaps), duration)
