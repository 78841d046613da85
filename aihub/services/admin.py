"""Administration: users, teams, virtual clusters, data storages and module categories.

Everybody may read the lists a spec author needs (clusters, storages, categories); changing them, and managing
users and teams, is for admins. A non-admin asking to change something gets ``Forbidden`` (these objects are
not secret, so there is nothing to hide by pretending they do not exist).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.queryset import QuerySet

from aihub.db.models import Category, DataStorage, Module, Team, User, VirtualCluster
from aihub.domain.messages import msg
from aihub.domain.names import is_human_name
from aihub.services.errors import Conflict, Forbidden, InvalidInput, NotFound
from aihub.services.tokens import revoke_user_tokens, tokens_changed
from aihub.services.users import hash_password, validate_username

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MIN_PASSWORD = 8
RESERVED_CLUSTERS = {"local"}

M = TypeVar("M", bound=Model)
#: what the messages below call the rows they name (listed so that the catalogues carry them)
_KINDS = (
    msg("team"),
    msg("category"),
    msg("cluster"),
    msg("storage"),
    msg("virtual cluster"),
    msg("data storage"),
)


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise Forbidden(msg("only administrators may do this"))


def check_password(password: str, field: str = "password") -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(
            msg("the password must have at least {count} characters", count=MIN_PASSWORD), field=field
        )


def _check_name(name: str, what: str) -> str:
    """Names of clusters and storages reach Kubernetes objects: lowercase ASCII only."""
    name = name.strip()
    if not NAME.fullmatch(name):
        raise InvalidInput(
            msg(
                "invalid {what} name {name}: use lowercase letters, digits and '-', starting with a letter or "
                "digit (it is used in Kubernetes objects)",
                what=msg(what),
                name=repr(name),
            ),
            field="name",
        )
    return name


def _check_human_name(name: str, what: str) -> str:
    """Names of teams and categories are only shown: Chinese is as good as English."""
    name = name.strip()
    if not is_human_name(name):
        raise InvalidInput(
            msg(
                "invalid {what} name {name}: use 1 to 63 letters (Chinese too; Latin ones lowercase), digits "
                "and '-', starting with a letter or digit",
                what=msg(what),
                name=repr(name),
            ),
            field="name",
        )
    return name


async def _get(model: type[M], row_id: int, what: str, field: str = "id") -> M:
    row = await model.get_or_none(id=row_id)
    if row is None:
        raise NotFound(msg("{what} {id} not found", what=msg(what), id=row_id), field=field)
    return row


async def _save_unique(row: Model, what: str, name: str) -> None:
    try:
        await row.save()
    except IntegrityError as exc:
        raise Conflict(
            msg("a {what} named {name} already exists", what=msg(what), name=repr(name)), field="name"
        ) from exc


def _apply(row: Model, changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if value is not None:
            setattr(row, key, value)


# ------------------------------------------------------------------------------------------------ users


async def list_users(user: User) -> list[User]:
    """Admins see everybody; others see themselves and their team."""
    if user.is_admin:
        return await User.all().order_by("username")
    if user.team_id is None:  # type: ignore[attr-defined]
        return [user]
    return await User.filter(team_id=user.team_id).order_by("username")  # type: ignore[attr-defined]


def users_query(actor: User, *, search: str = "", team: str = "") -> QuerySet[User]:
    """Every user, for an administrator's listing (by username), narrowed by a part of the username and by
    the name of their team."""
    require_admin(actor)
    query = User.all()
    if search:
        query = query.filter(username__icontains=search)
    if team:
        query = query.filter(team__name=team)
    return query.order_by("username")


async def _team_id(team_id: int | None) -> int | None:
    if team_id is None:
        return None
    return (await _get(Team, team_id, "team", "teamId")).id


async def create_user(
    actor: User,
    *,
    username: str,
    password: str,
    display_name: str = "",
    is_admin: bool = False,
    team_id: int | None = None,
    is_team_leader: bool = False,
) -> User:
    require_admin(actor)
    username = username.strip()
    validate_username(username)
    check_password(password)
    if is_team_leader and team_id is None:
        raise InvalidInput(msg("a team leader needs a team"), field="isTeamLeader")
    user = User(
        username=username,
        display_name=display_name,
        password_hash=await asyncio.to_thread(hash_password, password),
        is_admin=is_admin,
        team_id=await _team_id(team_id),
        is_team_leader=is_team_leader,
    )
    try:
        await user.save()
    except IntegrityError as exc:
        raise Conflict(
            msg("a user named {name} already exists", name=repr(username)), field="username"
        ) from exc
    return user


async def update_user(
    actor: User,
    user_id: int,
    *,
    display_name: str | None = None,
    password: str | None = None,
    is_admin: bool | None = None,
    is_active: bool | None = None,
    team_id: int | None = None,
    clear_team: bool = False,
    is_team_leader: bool | None = None,
) -> User:
    require_admin(actor)
    user = await _get(User, user_id, "user")
    if user.id == actor.id and (is_admin is False or is_active is False):
        raise InvalidInput(
            msg("you cannot remove your own administrator rights or deactivate yourself"), field="id"
        )
    if password is not None:
        check_password(password)
        user.password_hash = await asyncio.to_thread(hash_password, password)
    deactivated = is_active is False and user.is_active
    _apply(user, {"display_name": display_name, "is_admin": is_admin, "is_active": is_active})
    if clear_team:
        user.team_id = None  # type: ignore[attr-defined]
        user.is_team_leader = False
    elif team_id is not None:
        user.team_id = await _team_id(team_id)  # type: ignore[attr-defined]
    if is_team_leader is not None:
        if is_team_leader and user.team_id is None:  # type: ignore[attr-defined]
            raise InvalidInput(msg("a team leader needs a team"), field="isTeamLeader")
        user.is_team_leader = is_team_leader
    await user.save()
    if deactivated:  # re-enabling the user later must not revive what they held
        await revoke_user_tokens(user.id)
    return user


# ------------------------------------------------------------------------------------------------ teams


async def list_teams() -> list[Team]:
    return await Team.all().order_by("name")


async def count_teams() -> int:
    return await Team.all().count()


async def teams_named(names: Iterable[str]) -> list[Team]:
    return await Team.filter(name__in=list(names))


async def team_by_name(name: str) -> Team | None:
    return await Team.get_or_none(name=name)


def teams_query(actor: User, *, search: str = "") -> QuerySet[Team]:
    """Every team, for an administrator's listing (by name), narrowed by a part of the name."""
    require_admin(actor)
    query = Team.all()
    if search:
        query = query.filter(name__icontains=search)
    return query.order_by("name")


async def team_members(team_ids: Iterable[int]) -> dict[int, list[User]]:
    """The members of each team, by username."""
    members: dict[int, list[User]] = {}
    for user in await User.filter(team_id__in=list(team_ids)).order_by("username"):
        members.setdefault(user.team_id, []).append(user)  # type: ignore[attr-defined]
    return members


async def create_team(actor: User, *, name: str, peer_review: bool = False) -> Team:
    require_admin(actor)
    name = _check_human_name(name, "team")
    team = Team(name=name, peer_review=peer_review)
    await _save_unique(team, "team", name)
    return team


async def update_team(
    actor: User, team_id: int, *, name: str | None = None, peer_review: bool | None = None
) -> Team:
    require_admin(actor)
    team = await _get(Team, team_id, "team")
    _apply(
        team,
        {"name": _check_human_name(name, "team") if name is not None else None, "peer_review": peer_review},
    )
    await _save_unique(team, "team", team.name)
    return team


async def delete_team(actor: User, team_id: int) -> None:
    require_admin(actor)
    team = await _get(Team, team_id, "team")
    await User.filter(team_id=team.id).update(is_team_leader=False)
    await team.delete()
    await tokens_changed()  # several users changed at once (not through save()): forget every cached login


# ------------------------------------------------------------------------------------------------ clusters


async def list_clusters() -> list[VirtualCluster]:
    return await VirtualCluster.all().order_by("name")


def _check_cluster(values: Mapping[str, Any]) -> None:
    for key, minimum in (("gpu", 0), ("cpu_millis", 1), ("memory_mib", 1), ("capacity", 1)):
        value = values.get(key)
        if value is not None and value < minimum:
            field = re.sub(r"_(\w)", lambda m: m.group(1).upper(), key)
            raise InvalidInput(
                msg(
                    "{field} must be at least {minimum} (got {value})",
                    field=field,
                    minimum=minimum,
                    value=value,
                ),
                field=field,
            )
    selector = values.get("node_selector")
    if selector is not None and not (
        isinstance(selector, Mapping) and all(isinstance(v, str) for v in selector.values())
    ):
        raise InvalidInput(
            msg("nodeSelector must be an object of label: value strings"), field="nodeSelector"
        )


#: called after every change of the virtual clusters, whichever interface (GraphQL, web pages, CLI) made it: the
#: runtime registers its engine's pool reload here, so a change takes effect at once
ClusterListener = Callable[[], Awaitable[None]]
_cluster_listeners: list[ClusterListener] = []


def on_clusters_changed(listener: ClusterListener) -> Callable[[], None]:
    """Call ``listener`` after each cluster change; returns the function that stops it."""
    _cluster_listeners.append(listener)
    return lambda: _cluster_listeners.remove(listener) if listener in _cluster_listeners else None


async def _clusters_changed() -> None:
    for listener in list(_cluster_listeners):
        try:
            await listener()
        except Exception:  # the change is saved; the pools are read again on the next run's start anyway
            logging.getLogger("aihub.services").exception("reloading cluster pools failed")


async def create_cluster(actor: User, *, name: str, **values: Any) -> VirtualCluster:
    require_admin(actor)
    name = _check_name(name, "cluster")
    if name in RESERVED_CLUSTERS:
        raise InvalidInput(msg("{name} is the built-in cluster of this host", name=repr(name)), field="name")
    _check_cluster(values)
    cluster = VirtualCluster(name=name, **{k: v for k, v in values.items() if v is not None})
    await _save_unique(cluster, "virtual cluster", name)
    await _clusters_changed()
    return cluster


async def update_cluster(actor: User, cluster_id: int, **values: Any) -> VirtualCluster:
    require_admin(actor)
    cluster = await _get(VirtualCluster, cluster_id, "virtual cluster")
    _check_cluster(values)
    _apply(cluster, values)
    await cluster.save()
    await _clusters_changed()
    return cluster


async def delete_cluster(actor: User, cluster_id: int) -> None:
    require_admin(actor)
    cluster = await _get(VirtualCluster, cluster_id, "virtual cluster")
    await cluster.delete()
    await _clusters_changed()


# ------------------------------------------------------------------------------------------------ storages


async def list_storages() -> list[DataStorage]:
    return await DataStorage.all().order_by("name")


def _check_storage(values: Mapping[str, Any]) -> None:
    path = values.get("path")
    if path is not None and (not path.startswith("/") or ".." in path.split("/")):
        raise InvalidInput(
            msg("path must be absolute and without '..' (got {value})", value=repr(path)), field="path"
        )
    host_path = values.get("host_path")
    if host_path and not host_path.startswith("/"):
        raise InvalidInput(
            msg("hostPath must be absolute (got {value})", value=repr(host_path)), field="hostPath"
        )
    volume = values.get("volume")
    if volume is not None and not isinstance(volume, Mapping):
        raise InvalidInput(msg("volume must be an object (a Kubernetes volume source)"), field="volume")


async def create_storage(actor: User, *, name: str, path: str, **values: Any) -> DataStorage:
    require_admin(actor)
    name = _check_name(name, "storage")
    _check_storage({"path": path, **values})
    storage = DataStorage(name=name, path=path, **{k: v for k, v in values.items() if v is not None})
    await _save_unique(storage, "data storage", name)
    return storage


async def update_storage(actor: User, storage_id: int, **values: Any) -> DataStorage:
    require_admin(actor)
    storage = await _get(DataStorage, storage_id, "data storage")
    _check_storage(values)
    _apply(storage, values)
    await storage.save()
    return storage


async def delete_storage(actor: User, storage_id: int) -> None:
    require_admin(actor)
    storage = await _get(DataStorage, storage_id, "data storage")
    await storage.delete()


# ------------------------------------------------------------------------------------------------ categories


async def list_categories() -> list[Category]:
    return await Category.all().order_by("name")


async def create_category(actor: User, *, name: str, description: str = "") -> Category:
    require_admin(actor)
    name = _check_human_name(name, "category")
    category = Category(name=name, description=description)
    await _save_unique(category, "category", name)
    return category


async def update_category(
    actor: User, category_id: int, *, name: str | None = None, description: str | None = None
) -> Category:
    require_admin(actor)
    category = await _get(Category, category_id, "category")
    _apply(
        category,
        {
            "name": _check_human_name(name, "category") if name is not None else None,
            "description": description,
        },
    )
    await _save_unique(category, "category", category.name)
    return category


async def delete_category(actor: User, category_id: int) -> None:
    require_admin(actor)
    category = await _get(Category, category_id, "category")
    if await Module.filter(category_id=category.id).exists():
        raise Conflict(msg("category {name} still has modules", name=repr(category.name)), field="id")
    await category.delete()
