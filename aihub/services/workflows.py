"""Workflows and their immutable versions: create, version, copy, export."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from aihub.db.models import DataStorage, User, VirtualCluster, Workflow, WorkflowVersion
from aihub.domain.bounds import DEFAULT_LIMITS, SpecLimits, check_document, check_spec
from aihub.domain.messages import msg
from aihub.domain.names import MAX_LENGTH as MAX_NAME_LENGTH
from aihub.domain.spec import ModuleInterface, SpecError, WorkflowName, WorkflowSpec, parse_spec
from aihub.services.access import get_workflow, workflows_visible_to
from aihub.services.errors import InvalidInput, NotFound
from aihub.services.modules_resolve import resolve_modules

LOCAL_CLUSTER = "local"

#: bounds of a spec being saved (``aihub.domain.bounds``); set from the settings when the runtime opens
spec_limits: SpecLimits = DEFAULT_LIMITS


def configure_spec_limits(limits: SpecLimits) -> None:
    global spec_limits
    spec_limits = limits


async def validate_spec(user: User, source: str | bytes | Mapping[str, Any]) -> tuple[WorkflowSpec, dict]:
    """Parse and check a spec against this installation and the bounds; returns it and the module builds it
    pins. Parsing runs in a worker thread: a big spec does not hold the event loop."""
    clusters = {LOCAL_CLUSTER, *await VirtualCluster.all().values_list("name", flat=True)}
    storages = set(await DataStorage.all().values_list("name", flat=True))
    limits = spec_limits
    try:
        raw = await asyncio.to_thread(_bounded_parse, source, limits)
        modules, pins = await resolve_modules(user, raw)
        del raw  # (not kept alive beside the second parse: two parsed copies of a big spec at once)
        spec = await asyncio.to_thread(_full_parse, source, clusters, storages, modules)
    except SpecError as exc:
        raise InvalidInput(exc.message, field="spec") from exc
    return spec, pins


def _bounded_parse(source: str | bytes | Mapping[str, Any], limits: SpecLimits) -> WorkflowSpec:
    check_document(source, limits)
    spec = parse_spec(source)
    check_spec(spec, limits)
    return spec


def _full_parse(
    source: str | bytes | Mapping[str, Any],
    clusters: set[str],
    storages: set[str],
    modules: dict[str, ModuleInterface],
) -> WorkflowSpec:
    return parse_spec(source, clusters=clusters, storages=storages, modules=modules)


_WORKFLOW_NAME = TypeAdapter(WorkflowName)


def check_workflow_name(name: str, field: str = "name") -> str:
    """A workflow name given apart from its spec (``createWorkflow(name:)``), under the spec's rule for names.

    An empty name and the length are checked first, on their own: the characters' rule is ``domain.names``'s."""
    name = name.strip()
    if not name:
        raise InvalidInput(msg("a workflow name is required"), field=field)
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(
            msg(
                "a workflow name has at most {maximum} characters (got {count})",
                maximum=MAX_NAME_LENGTH,
                count=len(name),
            ),
            field=field,
        )
    try:
        return _WORKFLOW_NAME.validate_python(name)
    except ValidationError as exc:
        raise InvalidInput(str(exc.errors()[0]["msg"]).removeprefix("Value error, "), field=field) from exc


async def create_workflow(
    user: User,
    spec_source: str | bytes | Mapping[str, Any],
    *,
    name: str | None = None,
    description: str | None = None,
) -> WorkflowVersion:
    if name is not None:
        name = check_workflow_name(name)
    spec, pins = await validate_spec(user, spec_source)
    if name is not None and name != spec.name:
        spec = spec.model_copy(update={"name": name})  # the stored (and exported) spec names this workflow
    wf_name = spec.name
    if await Workflow.filter(owner_id=user.id, name=wf_name).exists():
        raise InvalidInput(
            msg(
                "you already have a workflow named {name}; save a new version of it instead",
                name=repr(wf_name),
            ),
            field="name",
        )
    try:
        async with in_transaction():
            wf = await Workflow.create(
                name=wf_name,
                description=description if description is not None else spec.description,
                owner=user,
            )
            return await _add_version(user, wf, spec, pins)
    except IntegrityError as exc:  # a concurrent create with the same name
        raise InvalidInput(msg("workflow {name} already exists", name=repr(wf_name)), field="name") from exc


async def create_version(
    user: User, workflow_id: int, spec_source: str | bytes | Mapping[str, Any], *, description: str = ""
) -> WorkflowVersion:
    wf = await get_workflow(user, workflow_id)
    if wf.owner_id != user.id and not user.is_admin:  # type: ignore[attr-defined]
        raise NotFound(msg("workflow {workflow} not found", workflow=workflow_id), field="workflowId")
    spec, pins = await validate_spec(user, spec_source)
    async with in_transaction():
        return await _add_version(user, wf, spec, pins, description=description)


async def _add_version(
    user: User, wf: Workflow, spec: WorkflowSpec, pins: dict, *, description: str = ""
) -> WorkflowVersion:
    last = await WorkflowVersion.filter(workflow_id=wf.id).order_by("-number").first()
    number = (last.number + 1) if last else 1
    version = await WorkflowVersion.create(
        workflow=wf,
        number=number,
        spec=spec.to_dict(),
        description=description,
        pinned_builds=pins,
        created_by=user,
    )
    await wf.save(update_fields=["updated_at"])
    version.workflow = wf
    return version


async def get_version(user: User, version_id: int) -> WorkflowVersion:
    version = await WorkflowVersion.get_or_none(id=version_id).prefetch_related("workflow")
    if version is None or not await workflows_visible_to(user).filter(id=version.workflow_id).exists():  # type: ignore[attr-defined]
        raise NotFound(msg("workflow version {version} not found", version=version_id), field="versionId")
    return version


async def find_or_create_for_file(
    user: User, spec_source: str | bytes | Mapping[str, Any]
) -> WorkflowVersion:
    """`aihub run FILE`: reuse the user's workflow of that name, adding a version only when the spec changed."""
    spec, _ = await validate_spec(user, spec_source)
    wf = await Workflow.get_or_none(owner_id=user.id, name=spec.name)
    if wf is None:
        return await create_workflow(user, spec_source)
    last = await WorkflowVersion.filter(workflow_id=wf.id).order_by("-number").first()
    if last is not None and last.spec == spec.to_dict():
        last.workflow = wf
        return last
    return await create_version(user, wf.id, spec_source)
