"""Administration pages: users and teams (roles, leaders, peer review), module categories, virtual clusters and
data storages. Only administrators see them; for everybody else they do not exist (404).

Each section is one page: the list, a form per row and a form to add one. A refused change re-renders the page
with the error next to the field of the form it came from, and that form keeps what was typed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from functools import wraps
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aihub.domain.ids import parse_row_id
from aihub.domain.messages import msg
from aihub.services import admin
from aihub.services.errors import InvalidInput, NotFound, ServiceError
from aihub.services.queries import load_related
from aihub.web.i18n import N_
from aihub.web.paging import paginate_query
from aihub.web.render import render
from aihub.web.session import page, redirect

if TYPE_CHECKING:
    from aihub.db.models import User

SECTIONS = (
    ("users", N_("Users")),
    ("teams", N_("Teams")),
    ("categories", N_("Categories")),
    ("clusters", N_("Virtual clusters")),
    ("storages", N_("Data storages")),
)
#: service field names -> form field names
FIELDS = {
    "isTeamLeader": "is_team_leader",
    "cpuMillis": "cpu",
    "memoryMib": "memory_mib",
    "nodeSelector": "node_selector",
    "hostPath": "host_path",
}
STATUS_CODES = {"NOT_FOUND": 404, "FORBIDDEN": 403, "CONFLICT": 409}

Handler = Callable[[Request, "User"], Awaitable[Response]]


def admin_page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A page for administrators only; anybody else gets the same 404 as for a page that does not exist."""

    @wraps(handler)
    async def only_admins(request: Request, user: User) -> Response:
        if not user.is_admin:
            raise NotFound(msg("page {path} not found", path=request.url.path))
        return await handler(request, user)

    return page(only_admins)


# ------------------------------------------------------------------------------------------------ rendering


#: beyond this many teams a user's team is typed (with suggestions) instead of chosen from a list in every row
TEAM_SELECT_MAX = 200


async def _users(actor: User, request: Request) -> dict[str, Any]:
    """One page of users from the database (admin pages are for administrators, who see everybody), filtered
    by a part of the username and by team."""
    search = request.query_params.get("q", "").strip()
    team = request.query_params.get("team", "").strip()
    users, pager = await paginate_query(request, admin.users_query(actor, search=search, team=team))
    await load_related(users, "team")
    many = await admin.count_teams() > TEAM_SELECT_MAX
    teams = (
        await admin.teams_named(u.team.name for u in users if u.team) if many else await admin.list_teams()
    )
    return {"users": users, "teams": teams, "team_names": many, "pager": pager, "q": search, "team": team}


async def _teams(actor: User, request: Request) -> dict[str, Any]:
    search = request.query_params.get("q", "").strip()
    teams, pager = await paginate_query(request, admin.teams_query(actor, search=search))
    members = await admin.team_members(t.id for t in teams)
    return {"teams": teams, "members": members, "pager": pager, "q": search}


async def _categories(actor: User, request: Request) -> dict[str, Any]:
    return {"categories": await admin.list_categories()}


async def _clusters(actor: User, request: Request) -> dict[str, Any]:
    return {"clusters": await admin.list_clusters()}


async def _storages(actor: User, request: Request) -> dict[str, Any]:
    return {"storages": await admin.list_storages()}


LOADERS: dict[str, Callable[[User, Request], Awaitable[dict[str, Any]]]] = {
    "users": _users,
    "teams": _teams,
    "categories": _categories,
    "clusters": _clusters,
    "storages": _storages,
}


async def section_page(
    request: Request,
    section: str,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, Mapping[str, Any]] | None = None,
    status_code: int = 200,
) -> Response:
    ctx = {"section": section, "sections": SECTIONS, "errors": errors or {}, "values": values or {}}
    ctx.update(await LOADERS[section](request.state.user, request))
    return render(request, f"pages/admin/{section}.html", ctx, status_code=status_code)


async def submit(
    request: Request, section: str, form_id: str, action: Callable[[FormData], Awaitable[Any]]
) -> Response:
    """Run a change; on a refusal show the section again with the error next to the field of that form."""
    form = await request.form()
    try:
        await action(form)
    except ServiceError as exc:
        field = FIELDS.get(exc.field or "", exc.field or "form")
        key = "page" if exc.code == "NOT_FOUND" else f"{form_id}-{'form' if field == 'id' else field}"
        values = {form_id: {k: v for k, v in form.items() if k not in ("csrf_token", "password")}}
        status = STATUS_CODES.get(exc.code, 400)
        return await section_page(
            request, section, errors={key: exc.message}, values=values, status_code=status
        )
    return redirect(request, f"/admin/{section}")


# ------------------------------------------------------------------------------------------------ form values


def text(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def flag(form: FormData, name: str) -> bool:
    return form.get(name) in ("on", "1", "true")


def whole(form: FormData, name: str, label: str) -> int | None:
    value = text(form, name)
    if not value:
        return None
    if not re.fullmatch(r"-?\d{1,9}", value):
        raise InvalidInput(
            msg("{label} must be a whole number (got {value})", label=label, value=repr(value)), field=name
        )
    return int(value)


def cpu_millis(form: FormData) -> int | None:
    value = text(form, "cpu")
    if not value:
        return None
    try:
        cores = float(value)
    except ValueError:
        raise InvalidInput(
            msg("CPU must be a number of cores, e.g. 10 or 0.5 (got {value})", value=repr(value)), field="cpu"
        ) from None
    return round(cores * 1000)


def key_values(form: FormData, name: str) -> dict[str, str] | None:
    """``key=value`` lines (node selectors)."""
    result: dict[str, str] = {}
    for line in text(form, name).splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(
                msg("write one key=value a line (got {line})", line=repr(line.strip())), field=name
            )
        result[key.strip()] = value.strip()
    return result


def json_object(form: FormData, name: str) -> dict[str, Any] | None:
    value = text(form, name)
    if not value:
        return {}
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            msg("not valid JSON: {problem} at line {line}", problem=exc.msg, line=exc.lineno), field=name
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput(msg("must be a JSON object (a Kubernetes volume source)"), field=name)
    return data


async def team_choice(form: FormData) -> int | None:
    """The team of a user form: ``team_id`` from the list, or ``team_name`` typed (with many teams)."""
    if "team_name" in form:
        name = text(form, "team_name")
        if not name:
            return None
        team = await admin.team_by_name(name)
        if team is None:
            raise InvalidInput(msg("unknown team {value}", value=repr(name)), field="team_id")
        return int(team.id)
    value = text(form, "team_id")
    if value and parse_row_id(value) is None:
        raise InvalidInput(msg("unknown team {value}", value=repr(value)), field="team_id")
    return int(value) if value else None


# ------------------------------------------------------------------------------------------------ pages


def _section(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def show(request: Request, user: User) -> Response:
        return await section_page(request, name)

    show.__name__ = f"admin_{name}"
    return admin_page(show)


@admin_page
async def admin_home(request: Request, user: User) -> Response:
    return redirect(request, "/admin/users")


@admin_page
async def user_create(request: Request, user: User) -> Response:
    async def create(form: FormData) -> None:
        await admin.create_user(
            user,
            username=text(form, "username"),
            password=str(form.get("password", "")),
            display_name=text(form, "display_name"),
            is_admin=flag(form, "is_admin"),
            team_id=await team_choice(form),
            is_team_leader=flag(form, "is_team_leader"),
        )

    return await submit(request, "users", "new", create)


@admin_page
async def user_update(request: Request, user: User) -> Response:
    user_id = request.path_params["id"]

    async def update(form: FormData) -> None:
        team_id = await team_choice(form)
        password = str(form.get("password", ""))
        await admin.update_user(
            user,
            user_id,
            display_name=text(form, "display_name"),
            password=password or None,
            is_admin=flag(form, "is_admin"),
            is_active=flag(form, "is_active"),
            team_id=team_id,
            clear_team=team_id is None,
            is_team_leader=flag(form, "is_team_leader"),
        )

    return await submit(request, "users", f"u{user_id}", update)


@admin_page
async def team_create(request: Request, user: User) -> Response:
    async def create(form: FormData) -> None:
        await admin.create_team(user, name=text(form, "name"), peer_review=flag(form, "peer_review"))

    return await submit(request, "teams", "new", create)


@admin_page
async def team_update(request: Request, user: User) -> Response:
    team_id = request.path_params["id"]

    async def update(form: FormData) -> None:
        await admin.update_team(user, team_id, name=text(form, "name"), peer_review=flag(form, "peer_review"))

    return await submit(request, "teams", f"t{team_id}", update)


@admin_page
async def team_delete(request: Request, user: User) -> Response:
    team_id = request.path_params["id"]
    return await submit(request, "teams", f"t{team_id}", lambda form: admin.delete_team(user, team_id))


@admin_page
async def category_create(request: Request, user: User) -> Response:
    async def create(form: FormData) -> None:
        await admin.create_category(user, name=text(form, "name"), description=text(form, "description"))

    return await submit(request, "categories", "new", create)


@admin_page
async def category_update(request: Request, user: User) -> Response:
    category_id = request.path_params["id"]

    async def update(form: FormData) -> None:
        name, description = text(form, "name"), text(form, "description")
        await admin.update_category(user, category_id, name=name, description=description)

    return await submit(request, "categories", f"c{category_id}", update)


@admin_page
async def category_delete(request: Request, user: User) -> Response:
    category_id = request.path_params["id"]
    return await submit(
        request, "categories", f"c{category_id}", lambda form: admin.delete_category(user, category_id)
    )


def _cluster_values(form: FormData) -> dict[str, Any]:
    return {
        "description": text(form, "description"),
        "gpu": whole(form, "gpu", msg("GPUs")),
        "gpu_type": text(form, "gpu_type"),
        "cpu_millis": cpu_millis(form),
        "memory_mib": whole(form, "memory_mib", msg("memory")),
        "capacity": whole(form, "capacity", msg("capacity")),
        "node_selector": key_values(form, "node_selector"),
    }


@admin_page
async def cluster_create(request: Request, user: User) -> Response:
    async def create(form: FormData) -> None:
        await admin.create_cluster(user, name=text(form, "name"), **_cluster_values(form))

    return await submit(request, "clusters", "new", create)


@admin_page
async def cluster_update(request: Request, user: User) -> Response:
    cluster_id = request.path_params["id"]

    async def update(form: FormData) -> None:
        await admin.update_cluster(user, cluster_id, **_cluster_values(form))

    return await submit(request, "clusters", f"k{cluster_id}", update)


@admin_page
async def cluster_delete(request: Request, user: User) -> Response:
    cluster_id = request.path_params["id"]
    return await submit(
        request, "clusters", f"k{cluster_id}", lambda form: admin.delete_cluster(user, cluster_id)
    )


def _storage_values(form: FormData) -> dict[str, Any]:
    return {
        "description": text(form, "description"),
        "host_path": text(form, "host_path"),
        "read_only": flag(form, "read_only"),
        "volume": json_object(form, "volume"),
    }


@admin_page
async def storage_create(request: Request, user: User) -> Response:
    async def create(form: FormData) -> None:
        await admin.create_storage(
            user, name=text(form, "name"), path=text(form, "path"), **_storage_values(form)
        )

    return await submit(request, "storages", "new", create)


@admin_page
async def storage_update(request: Request, user: User) -> Response:
    storage_id = request.path_params["id"]

    async def update(form: FormData) -> None:
        await admin.update_storage(user, storage_id, path=text(form, "path"), **_storage_values(form))

    return await submit(request, "storages", f"s{storage_id}", update)


@admin_page
async def storage_delete(request: Request, user: User) -> Response:
    storage_id = request.path_params["id"]
    return await submit(
        request, "storages", f"s{storage_id}", lambda form: admin.delete_storage(user, storage_id)
    )


def admin_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = [Route("/admin", admin_home)]
    changes = {
        "users": (user_create, user_update, None),
        "teams": (team_create, team_update, team_delete),
        "categories": (category_create, category_update, category_delete),
        "clusters": (cluster_create, cluster_update, cluster_delete),
        "storages": (storage_create, storage_update, storage_delete),
    }
    for name, (create, update, delete) in changes.items():
        routes.append(Route(f"/admin/{name}", _section(name)))
        routes.append(Route(f"/admin/{name}/new", create, methods=["POST"]))
        routes.append(Route(f"/admin/{name}/{{id:int}}", update, methods=["POST"]))
        if delete is not None:
            routes.append(Route(f"/admin/{name}/{{id:int}}/delete", delete, methods=["POST"]))
    return routes
