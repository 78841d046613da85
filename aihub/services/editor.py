"""Read use cases of the web UI's editors and views that the other service modules do not offer.

- the choices a spec author has (virtual clusters, data storages, the module palette with each module's
  interface), and every problem of a draft spec as :class:`SpecIssue` rows, so a form can put each next to its
  field (``validate_spec`` raises them folded into one message);
- the starting points of a new workflow: built-in examples (``examples/*.yaml``) and versions marked as templates;
- the attempts of a run for its timeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aihub.db.models import Attempt, DataStorage, User, VirtualCluster, Workflow, WorkflowVersion
from aihub.domain.bounds import check_document
from aihub.domain.messages import msg
from aihub.domain.spec import ModuleInterface, SpecError, SpecIssue, parse_spec
from aihub.services import workflows
from aihub.services.access import get_run
from aihub.services.admin import list_clusters, list_storages
from aihub.services.errors import InvalidInput, NotFound
from aihub.services.modules import module_palette
from aihub.services.modules_resolve import interface_of, usable_build
from aihub.services.versions import list_templates

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@dataclass(frozen=True)
class ModuleChoice:
    """A module the author may put in a workflow, with the interface of the build a save would pin."""

    name: str
    group: str  # "mine" or its category
    description: str
    build_number: int
    inputs: list[dict[str, str]]
    outputs: list[dict[str, str]]
    readme: str = ""  # the build's README (Markdown), shown in the canvas's side panel


@dataclass(frozen=True)
class EditorChoices:
    clusters: list[VirtualCluster]
    storages: list[DataStorage]
    modules: list[ModuleChoice]

    @property
    def module_outputs(self) -> dict[str, list[str]]:
        return {m.name: [o["name"] for o in m.outputs] for m in self.modules}

    def module(self, name: str) -> ModuleChoice | None:
        return next((m for m in self.modules if m.name == name), None)


async def editor_choices(user: User) -> EditorChoices:
    modules = [
        ModuleChoice(
            name=entry.module.name,
            group=entry.group,
            description=entry.build.snapshot.get("description", ""),
            build_number=entry.build.number,
            inputs=list(entry.build.snapshot.get("inputs", [])),
            outputs=list(entry.build.snapshot.get("outputs", [])),
            readme=entry.build.readme or "",
        )
        for entry in await module_palette(user)
    ]
    return EditorChoices(await list_clusters(), await list_storages(), modules)


def spec_issues_of(exc: InvalidInput) -> list[SpecIssue]:
    """The issues behind a service's ``InvalidInput`` (one issue when it was not about the spec's rules)."""
    if isinstance(exc.__cause__, SpecError):
        return list(exc.__cause__.issues)
    return [SpecIssue("workflow", exc.field or "", exc.message)]


async def spec_issues(user: User, spec: Mapping[str, Any]) -> list[SpecIssue]:
    """Every problem of a draft spec against this installation (clusters, storages, the user's modules), all
    at once: unlike ``validate_spec``, the installation's rules are checked even when others are broken."""
    clusters = [c.name for c in await list_clusters()]
    storages = [s.name for s in await list_storages()]
    modules: dict[str, ModuleInterface] = {}
    for name in _module_names(spec):
        build = await usable_build(user, name)
        if build is not None:
            modules[name] = interface_of(build)
    try:
        check_document(spec, workflows.spec_limits)
        await asyncio.to_thread(_parse, spec, clusters, storages, modules)
    except SpecError as exc:
        return list(exc.issues)
    return []


def _parse(
    spec: Mapping[str, Any], clusters: list[str], storages: list[str], modules: dict[str, ModuleInterface]
) -> None:
    parse_spec(spec, clusters=clusters, storages=storages, modules=modules)


def _module_names(spec: Mapping[str, Any]) -> set[str]:
    nodes = spec.get("nodes")
    if not isinstance(nodes, list):
        return set()
    return {n["module"] for n in nodes if isinstance(n, Mapping) and isinstance(n.get("module"), str)}


# ------------------------------------------------------------------------------------------------ starting points


@dataclass(frozen=True)
class Example:
    key: str  # the file's stem
    text: str


def list_examples() -> list[Example]:
    return [Example(path.stem, path.read_text()) for path in sorted(EXAMPLES.glob("*.yaml"))]


def get_example(key: str) -> Example:
    example = next((e for e in list_examples() if e.key == key), None)
    if example is None:
        raise NotFound(msg("no built-in example {name}", name=repr(key)), field="from")
    return example


async def template_versions() -> list[WorkflowVersion]:
    """Versions marked as templates (readable by everybody), with their workflow."""
    versions = await list_templates()
    await WorkflowVersion.fetch_for_list(versions, "workflow")
    return versions


async def free_workflow_name(user: User, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``, ... : a workflow name the user does not have yet."""
    base = base[:58] or "workflow"
    taken = set(await Workflow.filter(owner_id=user.id, name__startswith=base).values_list("name", flat=True))
    if base not in taken:
        return base
    return next(f"{base}-{i}" for i in range(2, len(taken) + 3) if f"{base}-{i}" not in taken)


async def can_add_version(user: User, version: WorkflowVersion) -> bool:
    return user.is_admin or version.workflow.owner_id == user.id  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------ run timeline


@dataclass(frozen=True)
class TimelineBar:
    node: str
    attempt: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None


async def run_attempts(user: User, run_id: int) -> list[TimelineBar]:
    """Every started attempt of a run, in start order (for the timeline)."""
    run = await get_run(user, run_id)
    rows = (
        await Attempt.filter(node_run__run_id=run.id, started_at__isnull=False)
        .order_by("started_at", "id")
        .prefetch_related("node_run")
    )
    return [
        TimelineBar(a.node_run.name, a.number, a.status.value, a.started_at, a.finished_at, a.exit_code)
        for a in rows
        if a.started_at is not None
    ]
