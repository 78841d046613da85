"""The module catalogue as read by users: ``modules``, ``module(id)``, ``moduleReviews``.

Module mutations (create, update, publish, review) are in ``aihub.graphql.modules`` with their services.
"""

from __future__ import annotations

import strawberry

from aihub.graphql.context import Info
from aihub.graphql.types.common import ModuleStatusEnum, parse_id
from aihub.graphql.types.modules import ModuleReviewType, ModuleType
from aihub.services import queries
from aihub.services.errors import NotFound


@strawberry.type
class CatalogQuery:
    @strawberry.field(description="published modules, and the caller's own in any state")
    async def modules(
        self,
        info: Info,
        status: ModuleStatusEnum | None = None,
        search: str | None = None,
        category: str | None = None,
    ) -> list[ModuleType]:
        rows = await queries.list_modules(
            info.context.require_user(), status=status, search=search, category=category
        )
        return [ModuleType.from_row(m) for m in rows]

    @strawberry.field
    async def module(self, info: Info, id: strawberry.ID) -> ModuleType | None:
        try:
            return ModuleType.from_row(await queries.get_module(info.context.require_user(), parse_id(id)))
        except NotFound:
            return None

    @strawberry.field(description="admins: every review; team leaders: their team's; members: their own")
    async def module_reviews(self, info: Info, pending_only: bool = False) -> list[ModuleReviewType]:
        rows = await queries.list_module_reviews(info.context.require_user(), pending_only=pending_only)
        return [ModuleReviewType.from_row(r) for r in rows]
