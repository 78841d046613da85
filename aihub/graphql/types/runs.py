"""Runs, node runs, attempts, outputs, events and log chunks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import strawberry

from aihub.domain.messages import msg
from aihub.domain.status import NodeStatus
from aihub.graphql.context import Info
from aihub.graphql.prebuilt import Plans, Prebuilt
from aihub.graphql.types.common import JSON, NodeStatusEnum, RunStatusEnum
from aihub.graphql.types.users import UserType, load_user
from aihub.graphql.types.workflows import WorkflowType, WorkflowVersionType
from aihub.services import executors, files
from aihub.services.errors import InvalidInput, NotFound, Unavailable

if TYPE_CHECKING:
    from aihub.db.models import Attempt, NodeEvent, NodeRun, Run


MAX_LOG_CHUNK = 1 << 20


def output_url(run_id: int, node: str, output: str) -> str:
    return f"/api/runs/{run_id}/nodes/{quote(node)}/outputs/{quote(output)}"


@strawberry.type(name="NodeOutput")
class OutputType:
    name: str
    type: str
    #: text outputs: the text; path outputs: the absolute path it had in the node
    value: str
    digest: str | None
    size: int
    download_url: str | None = strawberry.field(description="path outputs: where to download the .tar.gz")


@strawberry.type(name="NodeEvent")
class NodeEventType:
    node: str | None
    attempt: int | None
    kind: str
    message: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: NodeEvent) -> NodeEventType:
        return cls(
            node=row.node, attempt=row.attempt, kind=row.kind, message=row.message, created_at=row.created_at
        )


@strawberry.type(name="LogChunk")
class LogChunkType:
    attempt: int
    text: str
    offset: int
    next_offset: int
    size: int = strawberry.field(description="bytes written so far")
    finished: bool = strawberry.field(description="the attempt has ended and the chunk reaches the end")


def complete_utf8_prefix(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # continuation byte: look further back for the lead byte
        if byte & 0x80 == 0:
            return len(data)
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
        return len(data) if back >= need else len(data) - back
    return len(data)


async def read_log(
    info: Info, run_id: int, node: str, attempt: int, attempt_finished: bool, offset: int, limit: int
) -> LogChunkType:
    if offset < 0:
        raise InvalidInput(msg("offset must be >= 0 (got {value})", value=offset), field="offset")
    if not 1 <= limit <= MAX_LOG_CHUNK:
        raise InvalidInput(
            msg("limit must be between 1 and {maximum} (got {value})", maximum=MAX_LOG_CHUNK, value=limit),
            field="limit",
        )
    data, size = await files.read_log(info.context.runtime.logs, run_id, node, attempt, offset, limit)
    keep = complete_utf8_prefix(data) if offset + len(data) < size else len(data)
    end = offset + keep
    return LogChunkType(
        attempt=attempt,
        text=data[:keep].decode("utf-8", errors="replace"),
        offset=offset,
        next_offset=end,
        size=size,
        finished=attempt_finished and end >= size,
    )


async def describe_attempt(info: Info, handle: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return await executors.describe_attempt(info.context.runtime.attempt_views, handle)
    except Unavailable as exc:  # the executor may no longer know it; the tab says so instead of failing
        return {"error": exc.message}


@strawberry.type(name="Attempt")
class AttemptType:
    number: int
    status: NodeStatusEnum
    executor: str
    exit_code: int | None
    message: str
    started_at: datetime | None
    finished_at: datetime | None
    #: the executor's handle of the attempt (what describes it); null: it never started
    handle: strawberry.Private[dict[str, Any] | None]
    run_id: strawberry.Private[int]
    node: strawberry.Private[str]

    @classmethod
    def from_row(cls, row: Attempt, run_id: int, node: str) -> AttemptType:
        return cls(
            number=row.number,
            status=row.status,
            executor=row.executor,
            exit_code=row.exit_code,
            message=row.message,
            started_at=row.started_at,
            finished_at=row.finished_at,
            handle=row.handle,
            run_id=run_id,
            node=node,
        )

    @strawberry.field(description="the executor's view: pod/process, image, host, resources, state")
    async def container(self, info: Info) -> JSON:
        return await describe_attempt(info, self.handle)

    @strawberry.field(
        description="a chunk of the attempt's log from a byte offset (null with an error: bad range)"
    )
    async def logs(self, info: Info, offset: int = 0, limit: int = 65536) -> LogChunkType | None:
        finished = NodeStatus(self.status).is_terminal or self.finished_at is not None
        return await read_log(info, self.run_id, self.node, self.number, finished, offset, limit)


@strawberry.type(name="NodeRun")
class NodeRunType:
    name: str
    status: NodeStatusEnum
    retry_count: int
    attempt: int = strawberry.field(description="the current attempt number (0: never started)")
    inputs: JSON
    message: str
    exit_code: int | None
    started_at: datetime | None
    finished_at: datetime | None
    cache_source_id: strawberry.ID | None
    node_id: strawberry.Private[int]
    run_id: strawberry.Private[int]
    output_values: strawberry.Private[dict[str, Any]]

    @classmethod
    def from_row(cls, row: NodeRun) -> NodeRunType:
        return cls(
            name=row.name,
            status=row.status,
            retry_count=row.retry_count,
            attempt=row.attempt,
            inputs=row.inputs,
            message=row.message,
            exit_code=row.exit_code,
            started_at=row.started_at,
            finished_at=row.finished_at,
            cache_source_id=strawberry.ID(str(row.cache_source_id)) if row.cache_source_id else None,
            node_id=row.id,
            run_id=row.run_id,  # type: ignore[attr-defined]
            output_values=row.outputs or {},
        )

    @strawberry.field
    def outputs(self) -> list[OutputType]:
        return self.output_list()

    def output_list(self) -> list[OutputType]:
        result = []
        for name, value in self.output_values.items():
            is_path = value.get("type") == "path" and value.get("digest")
            result.append(
                OutputType(
                    name=name,
                    type=value.get("type", "text"),
                    value=value.get("value", ""),
                    digest=value.get("digest"),
                    size=value.get("size", 0),
                    download_url=output_url(self.run_id, self.name, name) if is_path else None,
                )
            )
        return result

    async def _attempt_rows(self, info: Info) -> list[Attempt]:
        by_node = await info.context.loaders.attempts_by_node.load(self.run_id)
        return by_node.get(self.node_id, [])

    @strawberry.field
    async def attempts(self, info: Info) -> list[AttemptType]:
        return [AttemptType.from_row(a, self.run_id, self.name) for a in await self._attempt_rows(info)]

    @strawberry.field
    async def events(self, info: Info) -> list[NodeEventType]:
        by_node = await info.context.loaders.events_by_node.load(self.run_id)
        return [NodeEventType.from_row(e) for e in by_node.get(self.name, [])]

    async def _attempt(self, info: Info, number: int | None) -> Attempt | None:
        wanted = self.attempt if number is None else number
        return next((a for a in await self._attempt_rows(info) if a.number == wanted), None)

    @strawberry.field(
        description="the executor's events of an attempt (default: the current one): Kubernetes events of its pod"
    )
    async def executor_events(self, info: Info, attempt: int | None = None) -> JSON:
        row = await self._attempt(info, attempt)
        return await executors.attempt_executor_events(
            info.context.runtime.attempt_views, row.handle if row else None
        )

    @strawberry.field(
        description="the container view of an attempt (default: the current one); null when the node has no "
        "such attempt (a node that never started has none)"
    )
    async def container(self, info: Info, attempt: int | None = None) -> JSON | None:
        row = await self._attempt(info, attempt)
        return await describe_attempt(info, row.handle) if row else None

    @strawberry.field(
        description="a chunk of an attempt's log (default: the current attempt) from a byte offset; "
        "null with a NOT_FOUND error for an attempt the node does not have"
    )
    async def logs(
        self, info: Info, attempt: int | None = None, offset: int = 0, limit: int = 65536
    ) -> LogChunkType | None:
        number = self.attempt if attempt is None else attempt
        if number < 0 or number > self.attempt:
            raise NotFound(
                msg("node {node} has no attempt {number}", node=repr(self.name), number=number),
                field="attempt",
            )
        finished = number < self.attempt or self.status is not NodeStatus.RUNNING
        return await read_log(info, self.run_id, self.name, number, finished, offset, limit)


@strawberry.type(name="Run")
class RunType:
    id: strawberry.ID
    name: str
    status: RunStatusEnum
    params: JSON
    retry_count: int
    message: str
    use_cache: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    copied_from_id: strawberry.ID | None
    run_id: strawberry.Private[int]
    version_id: strawberry.Private[int]
    workflow_id: strawberry.Private[int]
    owner_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: Run) -> RunType:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            status=row.status,
            params=row.params,
            retry_count=row.retry_count,
            message=row.message,
            use_cache=row.use_cache,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            copied_from_id=strawberry.ID(str(row.copied_from_id)) if row.copied_from_id else None,
            run_id=row.id,
            version_id=row.version_id,  # type: ignore[attr-defined]
            workflow_id=row.workflow_id,  # type: ignore[attr-defined]
            owner_id=row.owner_id,  # type: ignore[attr-defined]
        )

    @strawberry.field
    async def version(self, info: Info) -> WorkflowVersionType:
        row = await info.context.loaders.version.load(self.version_id)
        assert row is not None
        return WorkflowVersionType.from_row(row)

    @strawberry.field
    async def workflow(self, info: Info) -> WorkflowType:
        loaders = info.context.loaders
        row = await loaders.workflow.load(self.workflow_id)
        assert row is not None
        return WorkflowType.from_row(row, visible=await loaders.workflow_visible.load(row.id))

    @strawberry.field
    async def owner(self, info: Info) -> UserType | None:
        return await load_user(info, self.owner_id)

    @strawberry.field(description="every node, in declaration order")
    async def nodes(self, info: Info) -> list[NodeRunType]:
        nodes = [NodeRunType.from_row(n) for n in await info.context.loaders.nodes_of_run.load(self.run_id)]
        plan = NODE_PLANS.for_info(info)
        if plan is None:
            return nodes
        loaders = info.context.loaders
        loaded = NodeData(
            attempts=await loaders.attempts_by_node.load(self.run_id) if "attempts" in plan.names else {},
            events=await loaders.events_by_node.load(self.run_id) if "events" in plan.names else {},
        )
        try:
            return Prebuilt([plan.build(n, loaded) for n in nodes])  # type: ignore[return-value]
        except (
            Exception
        ):  # NotPlain, or a value that fails: the general path answers, errors where they belong
            return nodes

    @strawberry.field
    async def node(self, info: Info, name: str) -> NodeRunType | None:
        rows = await info.context.loaders.nodes_of_run.load(self.run_id)
        return next((NodeRunType.from_row(n) for n in rows if n.name == name), None)

    @strawberry.field(description="run-level engine events (node events are on each node)")
    async def events(self, info: Info) -> list[NodeEventType]:
        by_node = await info.context.loaders.events_by_node.load(self.run_id)
        return [NodeEventType.from_row(e) for e in by_node.get(None, [])]


@dataclass
class NodeData:
    """What a run's node list needs beyond the nodes, loaded once for all of them."""

    attempts: dict[int, list[Attempt]]
    events: dict[str | None, list[NodeEvent]]


#: a plain selection of ``Run.nodes`` is built by hand (``aihub.graphql.prebuilt``): the list fields of a node
#: have resolvers, given here as functions of the node and the run's loaded rows
NODE_PLANS = Plans(
    {
        "NodeRun.outputs": lambda node, data: node.output_list(),
        "NodeRun.attempts": lambda node, data: [
            AttemptType.from_row(a, node.run_id, node.name) for a in data.attempts.get(node.node_id, [])
        ],
        "NodeRun.events": lambda node, data: [
            NodeEventType.from_row(e) for e in data.events.get(node.name, [])
        ],
    }
)


@strawberry.type(name="RunPage")
class RunPage:
    items: list[RunType]
    next_cursor: str | None
