"""``runEvents`` and ``nodeLogs`` over the real ``graphql-transport-ws`` websocket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from aihub.bus.base import RunEvent
from aihub.graphql import live
from aihub.services import auth as auth_services
from aihub.services import live as live_feed
from aihub.services import runs as run_services
from aihub.services.access import get_run
from tests.graphql.harness import RUN_EVENTS, GraphQLErrors, Server, WsClient
from tests.polling import gate_wait, until

pytestmark = pytest.mark.usefixtures("users")

CREATE_WF = "mutation($spec: JSON!) { createWorkflow(spec: $spec) { id } }"
CREATE_RUN = "mutation($v: ID!, $p: JSON) { createRun(versionId: $v, params: $p) { id } }"
NODE_LOGS = "subscription($id: ID!, $node: String!, $a: Int) { nodeLogs(runId: $id, node: $node, attempt: $a) { text } }"

# declared children first: the snapshot must still list parents first
BACKWARDS = {
    "name": "backwards",
    "nodes": [
        {"name": "last", "depends_on": ["middle"], "command": "true"},
        {"name": "middle", "depends_on": ["first"], "command": "true"},
        {"name": "first", "command": "true"},
    ],
}


async def start(server: Server, spec: Any, params: dict[str, Any] | None = None) -> str:
    version = (await server.gql(CREATE_WF, {"spec": spec}, as_="alice"))["createWorkflow"]["id"]
    return (await server.gql(CREATE_RUN, {"v": version, "p": params}, as_="alice"))["createRun"]["id"]  # type: ignore[no-any-return]


async def take(ws: WsClient, op: str, count: int) -> list[dict[str, Any]]:
    events = []
    async for data in ws.results(op):
        events.append(data["runEvents"])
        if len(events) == count:
            break
    return events


def brief(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["node"], event["nodeStatus"], event["runStatus"], event["snapshot"])


def stopped(changes: list[dict[str, Any]]) -> bool:
    """The four changes of stopping a pending run: the run and each node STOPPED (in commit order)."""
    return (
        not any(e["snapshot"] for e in changes)
        and {(e["node"], e["nodeStatus"]) for e in changes}
        == {
            (None, None),
            ("first", "STOPPED"),
            ("middle", "STOPPED"),
            ("last", "STOPPED"),
        }
        and next(e for e in changes if e["node"] is None)["runStatus"] == "STOPPED"
    )


class TestRunEventsEngineOff:
    @pytest.fixture
    def app_options(self) -> dict[str, Any]:
        return {"run_engine": False}

    async def test_snapshot_in_topological_order_then_every_change(self, users: Server) -> None:
        run_id = await start(users, BACKWARDS)
        async with users.ws(users.tokens["alice"]) as ws:
            op = await ws.subscribe(RUN_EVENTS, {"id": run_id})
            snapshot = await take(ws, op, 4)
            assert [brief(e) for e in snapshot] == [
                (None, None, "PENDING", True),
                ("first", "WAITING", "PENDING", True),
                ("middle", "WAITING", "PENDING", True),
                ("last", "WAITING", "PENDING", True),
            ]
            assert {e["runId"] for e in snapshot} == {run_id}
            await users.gql("mutation($id: ID!) { stopRun(id: $id) { status } }", {"id": run_id}, as_="alice")
            changes = await take(ws, op, 4)
            assert stopped(changes)
            # and it keeps going: a retry re-opens the run
            await users.gql(
                "mutation($id: ID!) { retryRun(id: $id) { status } }", {"id": run_id}, as_="alice"
            )
            changes = await take(ws, op, 4)
            assert [brief(e) for e in changes][-1] == (None, None, "PENDING", False)
            assert changes[-1]["retryCount"] == 1

    async def test_a_change_while_the_snapshot_is_read_is_not_lost(
        self, users: Server, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Hazard: subscribing to the bus only after reading the snapshot loses what happens in between (the run
        feed of ``aihub.services.live``, which the web page's stream sends too)."""
        run_id = await start(users, BACKWARDS)
        read_snapshot = live_feed.run_snapshot

        async def snapshot_then_change(user: Any, rid: int) -> Any:
            stale = await read_snapshot(user, rid)
            await run_services.stop_run(users.rt.bus, user, rid)  # happens after the read, before sending
            return stale

        monkeypatch.setattr(live_feed, "run_snapshot", snapshot_then_change)
        async with users.ws(users.tokens["alice"]) as ws:
            op = await ws.subscribe(RUN_EVENTS, {"id": run_id})
            events = await take(ws, op, 8)
        assert [e["runStatus"] for e in events[:4]] == ["PENDING"] * 4
        assert stopped(events[4:])
        assert (await get_run(users.users["alice"], int(run_id))).status == "STOPPED"

    async def test_a_revoked_token_ends_an_open_subscription(
        self, users: Server, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Hazard: a token checked only at connection_init would keep a revoked client listening forever."""
        monkeypatch.setattr(live, "REAUTHORISE_SECONDS", 0.2)
        run_id = await start(users, BACKWARDS)
        alice = users.users["alice"]
        token, row = await auth_services.create_personal_token(alice, "watcher")
        async with users.ws(token) as ws:
            op = await ws.subscribe(RUN_EVENTS, {"id": run_id})
            assert len(await take(ws, op, 4)) == 4  # the snapshot arrives while the token is valid
            await auth_services.revoke_personal_token(alice, row.id)
            with pytest.raises(GraphQLErrors) as errors:
                [_ async for _ in ws.results(op)]
        assert errors.value.first["extensions"]["code"] == "UNAUTHENTICATED"

    async def test_errors(self, users: Server) -> None:
        run_id = await start(users, BACKWARDS)
        async with users.ws(users.tokens["carol"]) as ws:
            for query, variables, code, field in (
                (RUN_EVENTS, {"id": run_id}, "NOT_FOUND", "id"),
                (RUN_EVENTS, {"id": "x"}, "INVALID_INPUT", "runId"),
                (NODE_LOGS, {"id": run_id, "node": "first"}, "NOT_FOUND", "id"),
            ):
                op = await ws.subscribe(query, variables)
                with pytest.raises(GraphQLErrors) as errors:
                    [_ async for _ in ws.results(op)]
                assert errors.value.first["extensions"] == {"code": code, "field": field}
        async with users.ws(users.tokens["alice"]) as ws:
            for variables, code, field in (
                ({"id": run_id, "node": "nope"}, "NOT_FOUND", "node"),
                ({"id": run_id, "node": "first", "a": 0}, "INVALID_INPUT", "attempt"),
            ):
                op = await ws.subscribe(NODE_LOGS, variables)
                with pytest.raises(GraphQLErrors) as errors:
                    [_ async for _ in ws.results(op)]
                assert errors.value.first["extensions"] == {"code": code, "field": field}


def gated(gate: Path) -> dict[str, Any]:
    wait = gate_wait(gate)
    return {
        "name": "gated",
        "nodes": [
            {"name": "a", "command": f"echo before; {wait}; echo after"},
            {"name": "b", "depends_on": ["a"], "command": "echo b1; echo b2"},
        ],
    }


async def test_node_logs_from_the_start_then_live_ending_with_the_attempt(
    users: Server, shared_dir: Path
) -> None:
    gate = shared_dir / "gate"
    run_id = await start(users, gated(gate))
    async with users.ws(users.tokens["alice"]) as ws:
        op_a = await ws.subscribe(NODE_LOGS, {"id": run_id, "node": "a"})
        op_b = await ws.subscribe(NODE_LOGS, {"id": run_id, "node": "b"})  # b has not started yet
        lines_a = ws.results(op_a)
        first = await anext(lines_a)
        assert first == {"nodeLogs": {"text": "before"}}  # live: the attempt is still running
        gate.write_text("")
        assert [d["nodeLogs"]["text"] async for d in lines_a] == ["after"]  # then complete
        assert [d["nodeLogs"]["text"] async for d in ws.results(op_b)] == ["b1", "b2"]
    # a finished attempt: everything, then complete
    async with users.ws(users.tokens["alice"]) as ws:
        op = await ws.subscribe(NODE_LOGS, {"id": run_id, "node": "a", "a": 1})
        assert [d["nodeLogs"]["text"] async for d in ws.results(op)] == ["before", "after"]


async def test_a_revoked_token_ends_an_open_log_stream(
    users: Server, shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hazard: a log stream checked only at connection_init would keep a revoked client reading new lines."""
    monkeypatch.setattr(live, "REAUTHORISE_SECONDS", 0.2)
    gate = shared_dir / "gate"
    run_id = await start(users, gated(gate))
    alice = users.users["alice"]
    token, row = await auth_services.create_personal_token(alice, "tail")
    async with users.ws(token) as ws:
        op = await ws.subscribe(NODE_LOGS, {"id": run_id, "node": "a"})
        lines = ws.results(op)
        assert await anext(lines) == {"nodeLogs": {"text": "before"}}
        await auth_services.revoke_personal_token(alice, row.id)
        # the stream is idle (the node waits on its gate): the check must not need a new line to happen
        with pytest.raises(GraphQLErrors) as errors:
            [_ async for _ in lines]
    assert errors.value.first["extensions"] == {"code": "UNAUTHENTICATED", "field": "token"}
    gate.write_text("")
    # the node ends before the test does: its gate is gone with the test's shared dir, and a node that missed
    # it would poll for it for ever, outliving the server (it did, in every run of the suite)
    await until(lambda: _run_status(users, run_id), "the run to end")


async def _run_status(users: Server, run_id: str) -> bool:
    data = await users.gql("query($id: ID!) { run(id: $id) { status } }", {"id": run_id}, as_="alice")
    return data["run"]["status"] == "SUCCEEDED"


async def test_node_logs_of_an_attempt_that_never_starts_end_with_the_run(
    users: Server, shared_dir: Path
) -> None:
    run_id = await start(users, gated(shared_dir / "never"))
    async with users.ws(users.tokens["alice"]) as ws:
        op = await ws.subscribe(NODE_LOGS, {"id": run_id, "node": "b"})
        await users.gql("mutation($id: ID!) { stopRun(id: $id) { status } }", {"id": run_id}, as_="alice")
        assert [d async for d in ws.results(op)] == []


class TestAttemptWatchEngineOff:
    @pytest.fixture
    def app_options(self) -> dict[str, Any]:
        return {"run_engine": False}

    async def test_a_dropped_watch_falls_back_to_the_database(self, users: Server) -> None:
        """Hazard: a log stream whose status watch overflowed would never learn that its attempt ended."""
        run_id = await start(users, BACKWARDS)
        bus = users.rt.bus
        watch = live_feed.AttemptWatch(bus.subscribe(int(run_id), maxsize=1), int(run_id), "first", 1)
        for _ in range(3):  # more than the watch's buffer, before it reads anything
            await bus.publish(RunEvent(int(run_id), "PENDING", "middle", "WAITING"))
        await watch.watch()
        assert watch.lost_events and not await watch.done()
        await users.gql("mutation($id: ID!) { stopRun(id: $id) { status } }", {"id": run_id}, as_="alice")
        assert await asyncio.wait_for(watch.done(), 10)
