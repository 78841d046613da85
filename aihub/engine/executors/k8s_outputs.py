"""The outputs of a Kubernetes attempt, as the pod's wrapper reported them on marker lines.

After the node's command exits 0 the wrapper writes, on lines that start with the attempt's mark, each
output: a text value in base64 chunks, a ``path`` output as the digest of the archive it uploaded to the
platform's API (stored by :func:`~aihub.engine.executors.k8s_artifacts.store_uploaded_output`) or as an
upload to the object store through a presigned URL; or the problem it met. :class:`Marks` parses those
lines; :func:`attempt_report` makes the attempt's report from them and how its pod ended, with the outputs
of :func:`collect_outputs`, by the rules every executor follows (:mod:`aihub.engine.outputs`).
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aihub.engine.artifacts import ArtifactError
from aihub.engine.executors.base import ExitReport, OutputDecl, OutputValue
from aihub.engine.executors.k8s_artifacts import store_uploaded_output
from aihub.engine.executors.k8s_logs import Follower, append_line
from aihub.engine.executors.k8s_status import End
from aihub.engine.outputs import OutputError, read_text_output
from aihub.storage.base import ArtifactMissing, ArtifactStore, StoreError

__all__ = ["Marks", "attempt_report", "collect_outputs"]


@dataclass
class Marks:
    """What the wrapper reported on its marker lines."""

    exit: int | None = None
    done: bool = False
    input_error: str | None = None
    texts: dict[str, list[str]] = field(default_factory=dict)
    texts_done: set[str] = field(default_factory=set)
    paths: dict[str, tuple[str, int]] = field(default_factory=dict)
    uploads: dict[str, Literal["file", "dir"]] = field(default_factory=dict)  # put in the object store
    errors: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, lines: list[str]) -> Marks:
        marks = cls()
        for line in lines:
            verb, _, rest = line.partition(" ")
            args = rest.split(" ")
            if verb == "exit" and args[0].isdigit():
                marks.exit = int(args[0])
            elif verb == "done":
                marks.done = True
            elif verb == "input-error":
                marks.input_error = rest
            elif verb == "text" and len(args) == 2:
                marks.texts.setdefault(args[0], []).append(args[1])
            elif verb == "text-end":
                marks.texts.setdefault(args[0], [])
                marks.texts_done.add(args[0])
            elif verb == "path" and len(args) == 3 and args[2].isdigit():
                marks.paths[args[0]] = (args[1], int(args[2]))
            elif verb == "upload" and len(args) == 2 and args[1] in ("file", "dir"):
                marks.uploads[args[0]] = args[1]  # type: ignore[assignment]
            elif verb == "output-error":
                marks.errors[args[0]] = args[1:]
        return marks


async def attempt_report(
    end: End, follower: Follower, *, stopped: bool, log_complete: bool, store: ArtifactStore, max_upload: int
) -> ExitReport:
    """The report of an ended attempt: how its pod ended (:class:`End`), what its wrapper reported on the
    marker lines of its log, and its outputs (``max_upload``: the largest a pod may put in ``store``)."""
    marks = Marks.parse(follower.markers)
    report = ExitReport(
        exit_code=end.exit_code,
        error=end.error,
        started_at=end.started_at,
        finished_at=end.finished_at or datetime.now(UTC),
        stopped=stopped,
    )
    if marks.input_error and not stopped:
        report.exit_code, report.error = None, marks.input_error
    elif report.exit_code == 0 and not stopped and report.error is None:
        data = follower.handle.data
        decls = [OutputDecl(**o) for o in data["outputs"]]
        if decls and not (log_complete and marks.done):
            report.error = "the outputs were not reported: the pod's log could not be read to its end"
        elif decls:
            report.outputs, report.error = await collect_outputs(
                store, decls, marks, data["max_text"], data["key"], max_upload
            )
    elif stopped and report.error is None and report.exit_code is None:
        report.error = "stopped before its command ended"
    if report.error:
        await append_line(follower.log_path, f"aihub: {report.error}")
    return report


async def collect_outputs(
    artifacts: ArtifactStore,
    decls: list[OutputDecl],
    marks: Marks,
    max_text: int,
    key: dict[str, Any],
    max_upload_bytes: int,
) -> tuple[dict[str, OutputValue], str | None]:
    """The attempt's outputs, or the first problem with one of them."""
    values: dict[str, OutputValue] = {}
    try:
        for decl in decls:
            if decl.type == "path" and decl.name in marks.uploads and decl.name not in marks.errors:
                kind = marks.uploads[decl.name]
                values[decl.name] = await _take_upload(artifacts, decl, kind, key, max_upload_bytes)
                continue
            values[decl.name] = await _output(artifacts, decl, marks, max_text)
    except OutputError as exc:
        return {}, str(exc)
    return values, None


async def _take_upload(
    artifacts: ArtifactStore,
    decl: OutputDecl,
    kind: Literal["file", "dir"],
    key: dict[str, Any],
    max_bytes: int,
) -> OutputValue:
    """An output the pod put in the object store with its presigned URL: fetched, checked and repacked
    like an upload through the API (``store_uploaded_output``), then stored under its digest."""
    staging = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".pod-upload-"))
    upload = staging / "upload.tar.gz"
    try:
        await artifacts.take_upload(  # type: ignore[attr-defined]
            key["run_id"], key["node"], key["attempt"], decl.name, upload, max_bytes=max_bytes
        )
        digest, size = await store_uploaded_output(upload, kind, artifacts)
    except ArtifactMissing:
        raise OutputError(
            f"output '{decl.name}': the pod reported an upload the store does not hold"
        ) from None
    except (ArtifactError, StoreError) as exc:
        raise OutputError(f"output '{decl.name}': {exc}") from exc
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)
    return OutputValue(decl.name, "path", decl.path, digest=digest, size=size)


async def _output(artifacts: ArtifactStore, decl: OutputDecl, marks: Marks, max_text: int) -> OutputValue:
    problem = marks.errors.get(decl.name)
    if decl.type == "path":
        if problem is not None:
            raise OutputError(_path_problem(decl, problem))
        if decl.name not in marks.paths:
            raise OutputError(f"output '{decl.name}' was not reported")
        digest, size = marks.paths[decl.name]
        if not await artifacts.exists(digest):
            raise OutputError(f"output '{decl.name}': the uploaded artifact {digest} is not in the store")
        return OutputValue(decl.name, "path", decl.path, digest=digest, size=size)
    if problem is None and decl.name not in marks.texts_done:
        raise OutputError(f"output '{decl.name}' was not reported")
    chunks = marks.texts.get(decl.name, [])
    value = await asyncio.to_thread(_text_value, decl, problem, chunks, max_text)
    return OutputValue(decl.name, "text", value)


def _text_value(decl: OutputDecl, problem: list[str] | None, chunks: list[str], max_text: int) -> str:
    """The value of a text output from the wrapper's report, by the same rules as every executor
    (:func:`aihub.engine.outputs.read_text_output` reads it from a file shaped like the node's)."""
    with tempfile.TemporaryDirectory(prefix="aihub-text-") as work:
        host = Path(work) / "value"
        if problem and problem[0] == "notfile":
            host.mkdir()
        elif problem and problem[0] == "toolarge":
            with open(host, "wb") as f:  # sparse: only its size matters
                f.truncate(int(problem[1]) if len(problem) > 1 and problem[1].isdigit() else 1 << 30)
        elif problem is None:
            try:
                host.write_bytes(base64.b64decode("".join(chunks), validate=True))
            except ValueError as exc:
                raise OutputError(f"output '{decl.name}': the reported value is garbled") from exc
        return read_text_output(decl, host, max_text)


def _path_problem(decl: OutputDecl, problem: list[str]) -> str:
    what = problem[0] if problem else ""
    if what == "missing":
        return f"output '{decl.name}': path {decl.path} does not exist"
    if what == "pack":
        return f"output '{decl.name}': cannot pack {decl.path} (see the log)"
    if what == "upload":
        return f"output '{decl.name}': the upload to the platform failed (see the log)"
    return f"output '{decl.name}': {' '.join(problem) or 'failed'}"
