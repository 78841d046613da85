"""Module nodes: find, for each ``module:`` of a spec, the newest build its author may use, and pin it."""

from __future__ import annotations

from tortoise.expressions import Q

from aihub.db.models import BuildStatus, ModuleBuild, User
from aihub.domain.spec import ModuleInterface, OutputDecl, WorkflowSpec


def interface_of(build: ModuleBuild) -> ModuleInterface:
    snap = build.snapshot or {}
    return ModuleInterface(
        inputs=[i["name"] for i in snap.get("inputs", [])],
        outputs=[OutputDecl(**o) for o in snap.get("outputs", [])],
        env=dict(snap.get("env", {})),
    )


async def usable_build(user: User, module_name: str) -> ModuleBuild | None:
    """Newest BUILT build the user may use: their own module's, or a published one."""
    query = Q(module__name=module_name, status=BuildStatus.BUILT)
    if not user.is_admin:
        query &= Q(module__owner_id=user.id) | Q(published=True)
    return await ModuleBuild.filter(query).order_by("-id").first()


async def resolve_modules(
    user: User, spec: WorkflowSpec
) -> tuple[dict[str, ModuleInterface], dict[str, int]]:
    """Returns (module name -> interface, node name -> pinned build id) for the spec's module nodes."""
    interfaces: dict[str, ModuleInterface] = {}
    pins: dict[str, int] = {}
    for node in spec.nodes:
        if not node.module:
            continue
        build = await usable_build(user, node.module)
        if build is None:
            continue  # parse_spec reports the unknown module with the node's location
        interfaces[node.module] = interface_of(build)
        pins[node.name] = build.id
    return interfaces, pins
