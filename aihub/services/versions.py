"""Workflow versions beyond creation: copy (as a new version or a new workflow), YAML export, templates, sharing.

A version marked as a template is readable by every user (that is what a template is for), so "create from
template" works across owners; everything else follows the workflow's visibility.
"""

from __future__ import annotations

from aihub.db.models import User, Workflow, WorkflowVersion
from aihub.domain.messages import msg
from aihub.domain.spec import parse_spec
from aihub.services.access import get_workflow, workflows_visible_to
from aihub.services.errors import InvalidInput, NotFound
from aihub.services.workflows import create_version, create_workflow


async def get_readable_version(user: User, version_id: int) -> WorkflowVersion:
    """A version the caller may read: of a visible workflow, or marked as a template."""
    version = await WorkflowVersion.get_or_none(id=version_id).prefetch_related("workflow")
    if version is not None and (
        version.is_template or await workflows_visible_to(user).filter(id=version.workflow_id).exists()  # type: ignore[attr-defined]
    ):
        return version
    raise NotFound(msg("workflow version {version} not found", version=version_id), field="versionId")


def _can_edit(user: User, workflow: Workflow) -> bool:
    return user.is_admin or workflow.owner_id == user.id  # type: ignore[attr-defined]


async def copy_version(
    user: User, version_id: int, *, as_new_workflow: bool, name: str | None = None
) -> WorkflowVersion:
    """Copy a version's spec into a new version of its workflow, or into a new workflow of the caller."""
    source = await get_readable_version(user, version_id)
    if not as_new_workflow:
        if not _can_edit(user, source.workflow):
            raise NotFound(
                msg("workflow {workflow} not found", workflow=source.workflow.id), field="versionId"
            )
        return await create_version(
            user, source.workflow.id, source.spec, description=f"copy of version {source.number}"
        )
    new_name = (name or "").strip() or await _free_name(user, f"{source.workflow.name}-copy")
    return await create_workflow(
        user, {**source.spec, "name": new_name}, name=new_name, description=source.workflow.description
    )


async def _free_name(user: User, base: str) -> str:
    base = base[:58]
    taken = set(await Workflow.filter(owner_id=user.id, name__startswith=base).values_list("name", flat=True))
    if base not in taken:
        return base
    return next(f"{base}-{i}" for i in range(2, len(taken) + 3) if f"{base}-{i}" not in taken)


async def create_from_template(user: User, version_id: int, *, name: str | None = None) -> WorkflowVersion:
    source = await get_readable_version(user, version_id)
    if not source.is_template:
        raise InvalidInput(
            msg("workflow version {version} is not a template", version=version_id), field="versionId"
        )
    return await copy_version(user, version_id, as_new_workflow=True, name=name)


async def export_yaml(user: User, version_id: int) -> str:
    version = await get_readable_version(user, version_id)
    return parse_spec(version.spec).to_yaml()


async def set_template(user: User, version_id: int, is_template: bool) -> WorkflowVersion:
    version = await get_readable_version(user, version_id)
    if not _can_edit(user, version.workflow):
        raise NotFound(msg("workflow version {version} not found", version=version_id), field="versionId")
    version.is_template = is_template
    await version.save(update_fields=["is_template"])
    return version


async def list_templates() -> list[WorkflowVersion]:
    return await WorkflowVersion.filter(is_template=True).order_by("workflow_id", "number")


async def set_workflow_shared(user: User, workflow_id: int, shared: bool) -> Workflow:
    workflow = await get_workflow(user, workflow_id)
    if not _can_edit(user, workflow):
        raise NotFound(msg("workflow {workflow} not found", workflow=workflow_id), field="workflowId")
    workflow.shared_with_team = shared
    await workflow.save(update_fields=["shared_with_team", "updated_at"])
    return workflow
