"""Users, teams and personal access tokens."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import strawberry

from aihub.graphql.context import Info

if TYPE_CHECKING:
    from aihub.db.models import ApiToken, Team, User


@strawberry.type(name="Team")
class TeamType:
    id: strawberry.ID
    name: str
    peer_review: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: Team) -> TeamType:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            peer_review=row.peer_review,
            created_at=row.created_at,
        )


@strawberry.type(name="User")
class UserType:
    id: strawberry.ID
    username: str
    display_name: str
    is_admin: bool
    is_active: bool
    is_team_leader: bool
    created_at: datetime
    team_id: strawberry.Private[int | None]

    @classmethod
    def from_row(cls, row: User) -> UserType:
        return cls(
            id=strawberry.ID(str(row.id)),
            username=row.username,
            display_name=row.display_name,
            is_admin=row.is_admin,
            is_active=row.is_active,
            is_team_leader=row.is_team_leader,
            created_at=row.created_at,
            team_id=row.team_id,  # type: ignore[attr-defined]
        )

    @strawberry.field
    async def team(self, info: Info) -> TeamType | None:
        if self.team_id is None:
            return None
        row = await info.context.loaders.team.load(self.team_id)
        return TeamType.from_row(row) if row else None


async def load_user(info: Info, user_id: int) -> UserType | None:
    row = await info.context.loaders.user.load(user_id)
    return UserType.from_row(row) if row else None


@strawberry.type(name="PersonalToken")
class PersonalTokenType:
    id: strawberry.ID
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_row(cls, row: ApiToken) -> PersonalTokenType:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )


@strawberry.type(name="NewPersonalToken")
class NewPersonalTokenPayload:
    """The secret is shown once, here; only its hash is stored."""

    token: str
    info: PersonalTokenType


@strawberry.type(name="LoginPayload")
class LoginPayload:
    token: str
    user: UserType
