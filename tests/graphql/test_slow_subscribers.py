"""A subscriber that falls behind is told and dropped; the engine and the other subscribers carry on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from aihub.bus.base import RunEvent
from tests.graphql.harness import RUN_EVENTS, SUBPROTOCOL, Server

pytestmark = pytest.mark.usefixtures("users")

BUFFER = 16
EVENTS = 1000
PAYLOAD = "x" * 32_000  # big messages fill the socket buffers quickly


@pytest.fixture
def app_options() -> dict[str, Any]:
    return {"run_engine": False, "subscriber_buffer": BUFFER}


class RawClient:
    """A ``graphql-transport-ws`` client that reads the socket only when told to (the ``websockets`` client
    keeps draining the socket in the background), with a small receive buffer: a client that stops reading."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ClientProtocol
    ) -> None:
        self.reader, self.writer, self.protocol = reader, writer, protocol
        self.pending: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, url: str, port: int) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)  # fixed: no auto-tuning
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        protocol = ClientProtocol(parse_uri(url), subprotocols=[Subprotocol(SUBPROTOCOL)], max_size=1 << 24)
        protocol.send_request(protocol.connect())
        client = cls(reader, writer, protocol)
        await client.flush()
        while protocol.state is not State.OPEN:
            protocol.receive_data(await reader.read(65536))
        client._collect()
        return client

    async def flush(self) -> None:
        for data in self.protocol.data_to_send():
            self.writer.write(data)
        await self.writer.drain()

    async def send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        await self.flush()

    def _collect(self) -> None:
        for event in self.protocol.events_received():
            if getattr(event, "opcode", None) is Opcode.TEXT:
                self.pending.append(json.loads(event.data))

    async def recv(self) -> dict[str, Any]:
        while not self.pending:
            data = await self.reader.read(1 << 16)
            assert data, "connection closed"
            self.protocol.receive_data(data)
            self.pending += [
                json.loads(e.data) for e in self.protocol.events_received() if e.opcode is Opcode.TEXT
            ]
        return self.pending.pop(0)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def test_a_slow_subscriber_is_dropped_and_nobody_waits_for_it(users: Server) -> None:
    spec = {"name": "one", "nodes": [{"name": "a", "command": "true"}]}
    version = (
        await users.gql("mutation($s: JSON!) { createWorkflow(spec: $s) { id } }", {"s": spec}, as_="alice")
    )["createWorkflow"]["id"]
    run_id = (
        await users.gql("mutation($v: ID!) { createRun(versionId: $v) { id } }", {"v": version}, as_="alice")
    )["createRun"]["id"]
    bus = users.rt.bus
    slow = await RawClient.connect(users.ws_url, users.settings.port)
    async with users.ws(users.tokens["alice"]) as fast:
        await slow.send({"type": "connection_init", "payload": {"token": users.tokens["alice"]}})
        assert (await slow.recv())["type"] == "connection_ack"
        subscribe = {"query": RUN_EVENTS, "variables": {"id": run_id}}
        await slow.send({"id": "s", "type": "subscribe", "payload": subscribe})
        assert (await slow.recv())["payload"]["data"]["runEvents"]["snapshot"] is True
        op = await fast.subscribe(RUN_EVENTS, {"id": run_id})
        fast_events = fast.results(op)
        assert [(await anext(fast_events))["runEvents"]["snapshot"] for _ in range(2)] == [True, True]

        # the engine's side: every publish returns at once, while the slow client reads nothing
        for i in range(EVENTS):
            await bus.publish(RunEvent(int(run_id), "RUNNING", message=f"{i} {PAYLOAD}"))
            event = (await anext(fast_events))["runEvents"]
            assert event["message"].startswith(f"{i} ")  # the fast client gets every event, in order

        # the slow client: what was in flight, then the error, then the end of the subscription
        received, errors = 0, None
        while True:
            async with asyncio.timeout(30):
                message = await slow.recv()
            if message["type"] == "complete":
                break
            if message["type"] == "next" and message["payload"].get("errors"):
                errors = message["payload"]["errors"]
            elif message["type"] == "next":
                assert errors is None, "no event after the error"
                received += 1
        assert errors is not None and errors[0]["extensions"]["code"] == "SUBSCRIBER_TOO_SLOW"
        assert "fell more than 16 events behind" in errors[0]["message"]
        assert 0 < received < EVENTS
        assert bus.subscriber_count == 1  # only the fast client is left
    await slow.close()
