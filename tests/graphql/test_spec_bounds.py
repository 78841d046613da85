"""Spec bounds through the API (issue 11, point 6): clear INVALID_INPUT errors at save, for run params too,
and a big spec validated without holding the event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from aihub.services import workflows
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


async def test_a_big_spec_does_not_hold_the_event_loop(
    users: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spec of the largest allowed size is parsed and checked off the server's event loop (this test's loop:
    the server runs in-process), and the loop keeps turning meanwhile: each parse, on its way, has the loop run
    a callback and waits for it. Were a parse on the loop, it would find itself on the loop's thread; were the
    loop held, the callback would never run. (A structural check, not a ratio of timings: those flaked on this
    host's slow spells.)"""
    spec = _chain(10_000)
    for node in spec["nodes"]:
        node.update(
            env={"A": "1", "B": "2"}, inputs=[{"name": "a", "value": "x"}, {"name": "b", "value": "y"}]
        )
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    turned: list[bool] = []
    real_parse = workflows.parse_spec

    def parse_off_the_loop(*args: Any, **kwargs: Any) -> Any:
        assert threading.get_ident() != loop_thread, "the spec was parsed on the event loop"
        ran = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, result=True), loop)
        parsed = real_parse(*args, **kwargs)
        turned.append(ran.result(timeout=30))
        return parsed

    monkeypatch.setattr(workflows, "parse_spec", parse_off_the_loop)
    data = await users.gql(CREATE_WF, {"spec": spec}, as_="alice")
    assert data["createWorkflow"]["id"]
    assert turned == [True, True]  # the bounded parse and the full one
