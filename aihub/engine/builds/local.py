"""The local build backend: a module "image" as a directory of this host.

Instead of building an image, the backend replays the final stage's ``COPY``/``ADD`` instructions from the
build context onto ``<data_dir>/builds/<module>/<build_id>/`` — a directory standing for the image's
filesystem, holding only what the Dockerfile copied — and maps the ``WORKDIR`` and the ``ENTRYPOINT`` onto it:
the local executor then runs the entrypoint with that directory's ``WORKDIR`` as its working directory, and
absolute paths of the entrypoint that point at copied files are rewritten to their place on this host.

Documented limits: ``RUN`` steps are not executed (the module's dependencies must already be installed on the
host), ``COPY --from`` and remote ``ADD`` are skipped, archives are not unpacked, variables are not expanded and
programs named by absolute paths outside the copied files (``/usr/local/bin/python``) must exist on the host.
``.git`` directories are never copied.
"""

from __future__ import annotations

import asyncio
import glob
import os
import posixpath
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aihub.engine.builds.backend import BuiltImage
from aihub.engine.builds.dockerfile import CopyStep, DockerfileInfo

if TYPE_CHECKING:
    from aihub.engine.builds.manager import BuildJob

__all__ = ["BuildFailure", "LocalBuildBackend", "LocalImage", "inside"]


class BuildFailure(Exception):
    """A build step failed for a reason the module author can fix; the message says which and how."""


@dataclass(frozen=True)
class LocalImage:
    root: Path  # the directory standing for the image's filesystem
    workdir: Path
    entrypoint: list[str]


def inside(base: Path, relative: str) -> Path | None:
    """``base/relative`` if it stays inside ``base`` lexically and after resolving symlinks, else None."""
    normal = posixpath.normpath("/" + relative.strip().lstrip("/"))
    candidate = base / normal.lstrip("/")
    try:
        resolved = candidate.resolve()
        base_resolved = base.resolve()
    except (OSError, RuntimeError):
        return None
    if resolved != base_resolved and base_resolved not in resolved.parents:
        return None
    return candidate


def _copy_one(source: Path, target: Path) -> None:
    if source.is_dir() and not source.is_symlink():
        shutil.copytree(
            source, target, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git")
        )
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir() and not target.is_symlink():
            target = target / source.name
        shutil.copy2(source, target, follow_symlinks=False)


def _replay(step: CopyStep, context: Path, root: Path) -> None:
    matches: list[Path] = []
    for pattern in step.sources:
        relative = posixpath.normpath(pattern.lstrip("/")) if pattern.strip("/") else "."
        if relative == ".." or relative.startswith("../"):
            raise BuildFailure(f"Dockerfile line {step.line}: {pattern!r} is outside the build context")
        found = (
            sorted(glob.glob(glob.escape(str(context)) + "/" + relative))
            if relative != "."
            else [str(context)]
        )
        if not found:
            raise BuildFailure(
                f"Dockerfile line {step.line}: {pattern!r} does not exist in the build context {context.name!r}"
            )
        for path in found:
            if inside(context, os.path.relpath(path, context)) is None:
                raise BuildFailure(
                    f"Dockerfile line {step.line}: {pattern!r} points outside the build context"
                )
            matches.append(Path(path))
    into_dir = step.dest.endswith("/") or len(matches) > 1
    dest = inside(root, step.dest)
    if dest is None:
        raise BuildFailure(f"Dockerfile line {step.line}: destination {step.dest!r} is not usable")
    for source in matches:
        if source.is_dir() and not source.is_symlink():
            _copy_one(source, dest)  # a directory's contents go into the destination
        elif into_dir:
            dest.mkdir(parents=True, exist_ok=True)
            _copy_one(source, dest / source.name)
        else:
            _copy_one(source, dest)


def _map_entrypoint(entrypoint: tuple[str, ...], root: Path) -> list[str]:
    mapped = []
    for arg in entrypoint:
        if arg.startswith("/"):
            local = inside(root, arg)
            if local is not None and (local.exists() or local.is_symlink()):
                mapped.append(str(local))
                continue
        mapped.append(arg)
    return mapped


def materialize(info: DockerfileInfo, context: Path, root: Path) -> LocalImage:
    """Replay the copies of ``info`` from ``context`` onto ``root`` (blocking; run it in a thread)."""
    root.mkdir(parents=True, exist_ok=True)
    for step in info.copies:
        _replay(step, context, root)
    workdir = inside(root, info.workdir)
    if workdir is None:
        raise BuildFailure(f"WORKDIR {info.workdir!r} is not usable")
    workdir.mkdir(parents=True, exist_ok=True)
    return LocalImage(root=root, workdir=workdir, entrypoint=_map_entrypoint(info.entrypoint, root))


class LocalBuildBackend:
    """Keeps ``<builds_dir>/<module>/<build_id>/`` as the module's runnable "image" on this host."""

    name = "local"

    def __init__(self, builds_dir: Path) -> None:
        self.builds_dir = builds_dir

    def target(self, module: str, build_id: int) -> Path:
        return self.builds_dir / module / str(build_id)

    async def build(
        self, *, module: str, build_id: int, info: DockerfileInfo, context: Path, log: Callable[[str], None]
    ) -> LocalImage:
        target = self.target(module, build_id)
        if target.exists():  # a retried build after an interruption starts from scratch
            await asyncio.to_thread(shutil.rmtree, target)
        for note in info.notes:
            log(f"note: {note}")
        try:
            image = await asyncio.to_thread(materialize, info, context, target)
        except BuildFailure:
            await asyncio.to_thread(shutil.rmtree, target, True)
            raise
        log(f"local image at {image.root}; working directory {image.workdir}")
        log("entrypoint: " + " ".join(image.entrypoint))
        return image

    async def produce(
        self,
        job: BuildJob,
        *,
        sha: str,
        image: str,
        info: DockerfileInfo,
        context: Path,
        log: Callable[[str], None],
    ) -> BuiltImage:
        local = await self.build(
            module=job.module, build_id=job.build_id, info=info, context=context, log=log
        )
        return BuiltImage(
            entrypoint=tuple(local.entrypoint), workdir=str(local.workdir), context_path=str(local.root)
        )

    async def close(self) -> None:
        pass

    async def remove(self, module: str, build_id: int) -> None:
        await asyncio.to_thread(shutil.rmtree, self.target(module, build_id), True)
