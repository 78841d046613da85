"""Collecting a node's declared outputs once its attempt has exited 0 (SPEC.md §3).

A node declares outputs as absolute paths *in its own filesystem*; where that filesystem lives on the
executor's side is the executor's business, so the collector takes a ``resolve(node_path) -> host path``
function (the local executor maps its private ``/tmp`` to the attempt's scratch dir; the Kubernetes executor
reads from a volume). The rules are the same for every executor:

- ``text``: the file is read, ONE trailing newline is stripped, and the value must stay under ``max_text``
  characters — larger values belong in a ``path`` output, and the error says so. A missing file fails.
- ``path``: the file or directory is packed (:func:`aihub.engine.artifacts.pack`, in a thread: it can be
  large) and put in the content-addressed artifact store; the value is the node-visible path, so a
  downstream node finds it unpacked at the same absolute path. A missing path fails.

Collection is all or nothing: the first failing output ends it and no value is returned, because outputs
only ever come from a successful attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from aihub.engine.artifacts import ArtifactError, pack
from aihub.engine.executors.base import OutputDecl, OutputValue
from aihub.storage.base import ArtifactStore, StoreError

__all__ = ["OutputError", "collect_outputs", "read_text_output"]

# Past this size a text output is certainly too long; it is reported in bytes instead of being read whole.
_READ_CAP = 1024 * 1024


class OutputError(Exception):
    """A declared output could not be collected; the message names the output and says why."""


async def collect_outputs(
    decls: Iterable[OutputDecl],
    resolve: Callable[[str], Path],
    artifacts: ArtifactStore,
    max_text: int,
    *,
    tmp_dir: Path | None = None,
) -> tuple[dict[str, OutputValue], str | None]:
    """Collect every output; returns (values by name, None) or ({}, the first error message).

    ``tmp_dir`` is where archives are packed before they go into the store (ideally on the store's file
    system, so that putting them is a rename); by default the system temp dir.
    """
    values: dict[str, OutputValue] = {}
    try:
        for decl in decls:
            values[decl.name] = await _collect_one(decl, resolve, artifacts, max_text, tmp_dir)
    except OutputError as exc:
        return {}, str(exc)
    return values, None


async def _collect_one(
    decl: OutputDecl,
    resolve: Callable[[str], Path],
    artifacts: ArtifactStore,
    max_text: int,
    tmp_dir: Path | None,
) -> OutputValue:
    try:
        host = resolve(decl.path)
    except ValueError as exc:
        raise OutputError(f"output '{decl.name}': {exc}") from exc
    if decl.type == "text":
        return OutputValue(decl.name, "text", read_text_output(decl, host, max_text))
    digest, size = await _store_path(decl, host, artifacts, tmp_dir)
    return OutputValue(decl.name, "path", decl.path, digest=digest, size=size)


def read_text_output(decl: OutputDecl, host: Path, max_text: int) -> str:
    """The value of a ``text`` output read from ``host``, or :class:`OutputError`."""
    try:
        st = os.stat(host)
    except FileNotFoundError:
        raise OutputError(f"output '{decl.name}': file {decl.path} was not written") from None
    except OSError as exc:
        raise OutputError(f"output '{decl.name}': cannot read {decl.path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"output '{decl.name}': {decl.path} is not a regular file")
    if st.st_size > _READ_CAP:
        raise OutputError(_too_long(decl, f"{st.st_size} bytes", max_text))
    with open(host, "rb") as f:
        text = f.read(_READ_CAP + 1).decode("utf-8", errors="replace")
    text = text.removesuffix("\n")
    if len(text) >= max_text:
        raise OutputError(_too_long(decl, f"{len(text)} characters", max_text))
    return text


def _too_long(decl: OutputDecl, size: str, max_text: int) -> str:
    return (
        f"output '{decl.name}' is {size}; text outputs must be under {max_text}"
        " — use type: path for larger values"
    )


async def _store_path(
    decl: OutputDecl, host: Path, artifacts: ArtifactStore, tmp_dir: Path | None
) -> tuple[str, int]:
    archive = await asyncio.to_thread(_pack_to_temp, decl, host, tmp_dir)
    try:
        return await artifacts.put_file(archive)
    except StoreError as exc:  # the store down or refusing, after its retries: nothing was recorded
        raise OutputError(f"output '{decl.name}': {exc}") from exc
    finally:
        _discard(archive)  # put_file normally consumes it


def _pack_to_temp(decl: OutputDecl, host: Path, tmp_dir: Path | None) -> Path:
    if not host.exists():
        raise OutputError(f"output '{decl.name}': path {decl.path} does not exist")
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=f".output-{decl.name}.", suffix=".tar.gz")
    os.close(fd)
    try:
        pack(host, Path(name))
    except ArtifactError as exc:
        _discard(Path(name))
        raise OutputError(f"output '{decl.name}': {exc}") from exc
    except BaseException:
        _discard(Path(name))
        raise
    return Path(name)


def _discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
