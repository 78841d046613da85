"""Access-checked reads of stored files: a node's output archive, an attempt's log (a page of it, its end, the
whole file, or its lines live until the attempt is over).

Web pages, the download API, GraphQL and the CLI all read through these, so "may the caller see this run" (and
for a run token, "is it its own run") and "is this attempt's log finished" are decided once. A store that
cannot answer (S3 away) is :class:`Unavailable`, never an unhandled error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aihub.db.models import ApiToken, Attempt, NodeRun, Run, User
from aihub.domain.messages import msg
from aihub.domain.status import NodeStatus
from aihub.services.artifacts import is_stored
from aihub.services.errors import NotFound
from aihub.services.queries import attempt_log_finished, get_attempt, output_artifact
from aihub.services.tokens import check_run_token_operation
from aihub.storage.base import ArtifactStore
from aihub.storage.local import LocalLogStore

DoneCheck = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class Download:
    """A file to send: its bytes as they are read, and the name to save it under."""

    chunks: AsyncIterator[bytes]
    filename: str


@dataclass(frozen=True)
class LogTail:
    """The end of an attempt's log, from a line's start: what a page shows before it follows the log live."""

    attempt: Attempt
    lines: list[str]
    #: where the live view goes on from
    offset: int
    #: the log is longer than what was read
    truncated: bool


async def output_download(
    artifacts: ArtifactStore,
    user: User,
    run_id: int,
    node: str,
    output: str,
    *,
    token: ApiToken | None = None,
) -> Download:
    """A node's ``path`` output as its ``.tar.gz``. ``token``: the bearer token the API caller presented (a run
    token reaches its own run only)."""
    if token is not None:
        check_run_token_operation(token, "run", run_id)
    digest = await output_artifact(user, run_id, node, output)
    if not await is_stored(artifacts, digest):
        raise NotFound(msg("the artifact is no longer stored"), field="output")
    # the store checks the sha256 as the bytes go out: a corrupt object ends the download early
    return Download(artifacts.stream(digest), f"run{run_id}-{node}-{output}.tar.gz")


async def log_download(logs: LocalLogStore, user: User, run_id: int, node: str, number: int) -> Download:
    """The whole log of an attempt."""
    await get_attempt(user, run_id, node, number)
    chunks = await logs.download(run_id, node, number)
    if chunks is None:
        raise NotFound(
            msg("attempt {number} of {node} has no log yet", number=number, node=repr(node)), field="attempt"
        )
    return Download(chunks, f"run{run_id}-{node}-attempt{number}.log")


async def log_tail(
    logs: LocalLogStore, user: User, run_id: int, node: str, number: int, size: int
) -> LogTail:
    """The last ``size`` bytes of an attempt's log, starting at a line's start."""
    _, attempt = await get_attempt(user, run_id, node, number)
    start = max(0, await logs.size(run_id, node, number) - size)
    data, offset = await logs.read(run_id, node, number, start, size)
    if start and b"\n" in data:
        data = data[data.index(b"\n") + 1 :]
    return LogTail(attempt, data.decode(errors="replace").splitlines(), offset, start > 0)


async def read_log(
    logs: LocalLogStore, run_id: int, node: str, number: int, offset: int, limit: int
) -> tuple[bytes, int]:
    """Up to ``limit`` bytes of the log of a node the caller was given (a field of a visible node) from
    ``offset``, and the log's size so far; attempt 0 (never started) has an empty log."""
    size = await logs.size(run_id, node, number) if number else 0
    if not number or offset >= size:
        return b"", size
    data, _ = await logs.read(run_id, node, number, offset, limit)
    return data, size


async def follow_log(
    logs: LocalLogStore,
    run_id: int,
    node: str,
    number: int,
    *,
    offset: int = 0,
    done: DoneCheck | None = None,
    wake: asyncio.Event | None = None,
) -> AsyncIterator[str]:
    """The lines of the log of a node the caller was allowed to see, from ``offset``, as they are written,
    until the attempt is over (``done``, by default: the database says so) and the log is drained; ``wake``:
    see ``LogStore.follow``."""

    async def over() -> bool:
        return await attempt_log_finished(run_id, node, number)

    async for line in logs.follow(run_id, node, number, done=done or over, offset=offset, wake=wake):
        yield line


async def failed_node_logs(logs: LocalLogStore, run: Run, lines: int) -> list[tuple[NodeRun, list[str]]]:
    """Each failed node of a finished run the caller owns, with the last ``lines`` lines of its last attempt."""
    return [
        (row, await logs.tail_lines(run.id, row.name, row.attempt, lines))
        for row in await NodeRun.filter(run_id=run.id, status=NodeStatus.FAILED)
    ]
