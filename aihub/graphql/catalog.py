"""The module catalogue as read by users: ``modules``, ``module(id)``, ``moduleReviews``.

Module mutations (create, update, publish, review) are in ``aihub.graphql.modules`` with their services.
"""

from __future__ import annotations

import strawberry

from aihub.graphql.context import Info
from aihub.graphql.types.common import ModuleStatusEnum, parse_id
from aihub.graphql.types.modules import ModuleReviewType, ModuleType, module_types
from aihub.services import queries
from aihub.services.errors import NotFound


@strawberry.type
class CatalogQuery:
    @strawberry.field(
        description="published modules, the caller's own in any state, and (for reviewers) the modules whose "
        "publishing they are asked to decide; each as the caller sees it: others than the owner see the "
        "published build, not an edit waiting for its build or review (status filters on that)"
    )
    async def modules(
        self,
        info: Info,
        status: ModuleStatusEnum | None = None,
        search: str | None = None,
        category: str | None = None,
    ) -> list[ModuleType]:
        user = info.context.require_user()
        rows = await queries.list_modules(user, search=search, category=category)
        shown = await module_types(user, rows)
        return [m for m in shown if status is None or m.status == status]

    @strawberry.field
    async def module(self, info: Info, id: strawberry.ID) -> ModuleType | None:
        try:
            user = info.context.require_user()
            return (await module_types(user, [await queries.get_module(user, parse_id(id))]))[0]
        except NotFound:
            return None

    @strawberry.field(description="admins: every review; team leaders: their team's; members: their own")
    async def module_reviews(self, info: Info, pending_only: bool = False) -> list[ModuleReviewType]:
        rows = await queries.list_module_reviews(info.context.require_user(), pending_only=pending_only)
        return [ModuleReviewType.from_row(r) for r in rows]
