"""Who is calling: ``me``, ``login``/``logout``, personal access tokens, password changes."""

from __future__ import annotations

import strawberry

from aihub.graphql.context import Info
from aihub.graphql.types.common import parse_id
from aihub.graphql.types.users import LoginPayload, NewPersonalTokenPayload, PersonalTokenType, UserType
from aihub.services import auth


@strawberry.type
class AuthQuery:
    @strawberry.field(description="the caller; null without a token")
    def me(self, info: Info) -> UserType | None:
        if info.context.user is None and not info.context.token:
            return None
        return UserType.from_row(info.context.require_user())

    @strawberry.field(description="the caller's personal access tokens (secrets are never shown again)")
    async def personal_tokens(self, info: Info) -> list[PersonalTokenType]:
        rows = await auth.list_personal_tokens(info.context.require_user())
        return [PersonalTokenType.from_row(r) for r in rows]


@strawberry.type
class AuthMutation:
    @strawberry.mutation(
        description="exchange a username and password for a session token; "
        "repeated failures are refused for a while (RATE_LIMITED)"
    )
    async def login(self, info: Info, username: str, password: str) -> LoginPayload:
        address = info.context.request.client
        token, user = await auth.login(username, password, client=address.host if address else None)
        return LoginPayload(token=token, user=UserType.from_row(user))

    @strawberry.mutation(description="revoke the token this request was made with")
    async def logout(self, info: Info) -> bool:
        info.context.require_user()
        return await auth.logout(info.context.token or "")

    @strawberry.mutation
    async def create_personal_token(
        self, info: Info, name: str, expires_in_days: int | None = None
    ) -> NewPersonalTokenPayload:
        token, row = await auth.create_personal_token(
            info.context.require_user(), name, expires_in_days=expires_in_days
        )
        return NewPersonalTokenPayload(token=token, info=PersonalTokenType.from_row(row))

    @strawberry.mutation
    async def revoke_personal_token(self, info: Info, id: strawberry.ID) -> PersonalTokenType:
        row = await auth.revoke_personal_token(info.context.require_user(), parse_id(id))
        return PersonalTokenType.from_row(row)

    @strawberry.mutation
    async def change_password(self, info: Info, old_password: str, new_password: str) -> bool:
        await auth.change_password(info.context.require_user(), old_password, new_password)
        return True
