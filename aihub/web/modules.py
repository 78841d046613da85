"""Module pages: list, register/edit form with every field, detail (README, build status and live log, builds,
reviews), rebuild, request publish; and the review page where reviewers approve or reject with a reason."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aihub.domain.git import redact_url
from aihub.domain.messages import msg
from aihub.domain.status import BuildStatus, ModuleStatus, ReviewStatus
from aihub.services.admin import list_categories
from aihub.services.errors import Forbidden, InvalidInput, ServiceError
from aihub.services.markdown import render_markdown
from aihub.services.modules import (
    Builds,
    builds_of,
    create_module,
    get_build,
    get_module,
    modules_query,
    read_build_log,
    rebuild_module,
    shown_modules,
    update_module,
    view_module,
)
from aihub.services.queries import load_related
from aihub.services.reviews import (
    can_review,
    get_review,
    request_publish,
    review_module,
    reviews_query,
)
from aihub.web.paging import paginate_query
from aihub.web.render import is_htmx, render
from aihub.web.session import page, redirect

if TYPE_CHECKING:
    from aihub.db.models import Module, User

STATUS_CODES = {"NOT_FOUND": 404, "FORBIDDEN": 403, "CONFLICT": 409}


def builds(request: Request) -> Builds:
    return request.app.state.runtime.builds  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------ the form


SCALARS = (
    "category",
    "name",
    "description",
    "git_url",
    "ref",
    "dockerfile_path",
    "build_context",
    "readme_path",
)
ROWS = {
    "env": ("key", "value"),
    "inputs": ("name", "description"),
    "outputs": ("name", "path", "type", "description"),
}


@dataclass
class ModuleForm:
    """The register/edit form as posted: every field of SPEC.md §5, rows kept as typed."""

    category: str = ""
    name: str = ""
    description: str = ""
    git_url: str = ""
    ref: str = "main"
    dockerfile_path: str = "Dockerfile"
    build_context: str = "."
    readme_path: str = "README.md"
    env: list[dict[str, str]] = field(default_factory=list)
    inputs: list[dict[str, str]] = field(default_factory=list)
    outputs: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def posted(cls, form: FormData) -> ModuleForm:
        items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        values: dict[str, Any] = {k: str(form.get(k, "")) for k in SCALARS if k in form}
        for section, keys in ROWS.items():
            values[section] = _rows(items, section, keys)
        return cls(**values)

    def changes(self) -> dict[str, Any]:
        """The service's keyword arguments (env rows without a name and value are left out)."""
        env = {r["key"].strip(): r["value"] for r in self.env if r["key"].strip() or r["value"]}
        inputs = [{"name": r["name"].strip(), "description": r["description"]} for r in self.inputs]
        outputs = [
            {
                "name": r["name"].strip(),
                "path": r["path"].strip(),
                "type": r["type"],
                "description": r["description"],
            }
            for r in self.outputs
        ]
        values = {k: getattr(self, k) for k in SCALARS}
        return {**values, "env": env, "inputs": inputs, "outputs": outputs}

    def form_errors(self) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        seen: set[str] = set()
        for j, row in enumerate(self.env):
            key = row["key"].strip()
            if not key and row["value"]:
                errors.setdefault(f"env-{j}", []).append(msg("a value needs a variable name"))
            elif key and key in seen:
                errors.setdefault(f"env-{j}", []).append(msg("env {key} is set twice", key=repr(key)))
            seen.add(key)
        return errors

    def apply(self, op: str) -> None:
        match = re.fullmatch(r"(add|remove)-(env|inputs|outputs)(?:-(\d+))?", op)
        if not match:
            return
        rows: list[dict[str, str]] = getattr(self, match[2])
        if match[1] == "add":
            rows.append({key: ("text" if key == "type" else "") for key in ROWS[match[2]]})
        elif match[3] is not None and int(match[3]) < len(rows):
            rows.pop(int(match[3]))


def _rows(items: Iterable[tuple[str, str]], section: str, keys: tuple[str, ...]) -> list[dict[str, str]]:
    pattern = re.compile(rf"{section}-(\d{{1,4}})-(\w+)")
    rows: dict[int, dict[str, str]] = {}
    for key, value in items:
        match = pattern.fullmatch(key)
        if match and match[2] in keys:
            rows.setdefault(int(match[1]), {k: ("text" if k == "type" else "") for k in keys})[match[2]] = (
                value
            )
    return [rows[i] for i in sorted(rows)]


_SERVICE_FIELDS = {
    "gitUrl": "git_url",
    "dockerfilePath": "dockerfile_path",
    "buildContext": "build_context",
    "readmePath": "readme_path",
}
_PROBLEM = re.compile(
    r"(name|category|description|gitUrl|ref|dockerfilePath|buildContext|readmePath|env|inputs|outputs)"
    r"(\.[^:]*|\[\d+\](?:\.\w+)?)?: (.*)"
)


def service_errors(exc: ServiceError, form: ModuleForm) -> dict[str, list[str]]:
    """The service's problems ("gitUrl: ...", "outputs[0].path: ...", one a line) keyed by form field id."""
    errors: dict[str, list[str]] = {}
    keys = [r["key"].strip() for r in form.env]
    # the service's (field, message) pairs keep each message translatable; else its text, one problem a line
    problems = getattr(exc, "problems", None) or [(None, line) for line in exc.message.splitlines()]
    for where, line in problems:
        match = _PROBLEM.fullmatch(f"{where}: x" if where else line)
        if match is None:
            key = _SERVICE_FIELDS.get(exc.field or "", exc.field or "form")
            errors.setdefault(key, []).append(line)
            continue
        name, rest, message = match[1], match[2] or "", line if where else match[3]
        key = _SERVICE_FIELDS.get(name, name)
        item = re.fullmatch(r"\[(\d+)\](?:\.(\w+))?", rest)
        if item:
            key = f"{name}-{item[1]}" + (f"-{item[2]}" if item[2] else "")
        elif rest.startswith(".") and name == "env":
            key = f"env-{keys.index(rest[1:])}" if rest[1:] in keys else "env"
        errors.setdefault(key, []).append(message)
    return errors


async def _form_page(
    request: Request, form: ModuleForm, errors: dict[str, list[str]], module: Module | None, status: int = 200
) -> Response:
    ctx = {"form": form, "errors": errors, "module": module, "categories": await list_categories()}
    return render(request, "pages/modules/form.html", ctx, status_code=status)


async def _save_form(request: Request, user: User, module: Module | None) -> Response:
    posted = await request.form()
    form, op = ModuleForm.posted(posted), str(posted.get("op", "save"))
    if op != "save":
        form.apply(op)
        return await _form_page(request, form, {}, module)
    errors = form.form_errors()
    if not errors:
        changes = form.changes()
        try:
            if module is None:
                module = await create_module(builds(request), user, **changes)
            else:
                changes.pop("name")
                module = await update_module(builds(request), user, module.id, **changes)
            return redirect(request, f"/modules/{module.id}")
        except InvalidInput as exc:
            errors = service_errors(exc, form)
    return await _form_page(request, form, errors, module, 400)


@page
async def module_new(request: Request, user: User) -> Response:
    if request.method == "POST":
        return await _save_form(request, user, None)
    return await _form_page(request, ModuleForm(env=[], inputs=[], outputs=[]), {}, None)


@page
async def module_edit(request: Request, user: User) -> Response:
    module = await get_module(user, request.path_params["module_id"])
    view = await view_module(user, module)
    if not view.can_edit:
        raise Forbidden(
            msg("only the owner of module {name} or an administrator may change it", name=repr(module.name))
        )
    if request.method == "POST":
        return await _save_form(request, user, module)
    form = ModuleForm(
        category=view.category,
        name=module.name,
        description=view.description,
        git_url=view.git_url,
        ref=view.ref,
        dockerfile_path=view.dockerfile_path,
        build_context=view.build_context,
        readme_path=view.readme_path,
        env=[{"key": k, "value": v} for k, v in view.env.items()],
        inputs=[{"name": i["name"], "description": i.get("description", "")} for i in view.inputs],
        outputs=[
            {k: str(o.get(k, "")) for k in ("name", "path", "type", "description")} for o in view.outputs
        ],
    )
    return await _form_page(request, form, {}, module)


# ------------------------------------------------------------------------------------------------ list


@page
async def modules_list(request: Request, user: User) -> Response:
    q = request.query_params
    scope, category, status = q.get("scope", "all"), q.get("category", ""), q.get("status", "")
    query = modules_query(
        user,
        mine=scope == "mine",
        published=scope == "published",
        status=ModuleStatus(status) if status in ModuleStatus.__members__ else None,
        category=category or None,
        search=q.get("q") or None,
        owner=q.get("owner", "").strip() or None,
    )
    rows, pager = await paginate_query(request, query)  # filtered and paged in the database
    await load_related(rows, "category", "owner")
    # each module as this viewer sees it (services.modules.Shown): the owner the edited module and its own
    # status, a reviewer the build under review, everybody else the published build
    views = await shown_modules(user, rows)
    shown = [(m, views[m.id].status) for m in rows]
    groups: dict[str, list[tuple[Module, ModuleStatus]]] = {}
    for module, state in shown:
        groups.setdefault(module.category.name, []).append((module, state))
    ctx = {
        "groups": groups,
        "views": views,
        "pager": pager,
        "scope": scope,
        "category": category,
        "status": status,
        "q": q.get("q", ""),
        "owner": q.get("owner", ""),
        "categories": await list_categories(),
        "statuses": list(ModuleStatus),
    }
    return render(request, "pages/modules/list.html", ctx, partial="partials/modules/table.html")


# ------------------------------------------------------------------------------------------------ detail


async def build_context(request: Request, user: User, module: Module) -> dict[str, Any]:
    view = await view_module(user, module)
    log = await read_build_log(builds(request), user, view.build.id) if view.build else ""
    await module.fetch_related("owner")
    return {
        "module": module,
        "view": view,
        "log": log,
        "building": view.build is not None and view.build.status is BuildStatus.BUILDING,
        # render_markdown's output is sanitised (nh3 allow-list): the only HTML these pages do not escape
        "readme": Markup(view.readme_html),
        "builds": await builds_of(user, module.id),
    }


async def detail_response(
    request: Request, user: User, module_id: int, *, error: ServiceError | None = None
) -> Response:
    module = await get_module(user, module_id)
    ctx = await build_context(request, user, module)
    view = ctx["view"]
    reviews = await reviews_query(user, module_id=module.id)
    await load_related(reviews, "module", "build", "requester", "reviewer")
    rejected = next((r for r in reviews if r.status is ReviewStatus.REJECTED), None)
    ctx.update(
        reviews=reviews,
        rejection=rejected if module.status is ModuleStatus.REJECTED and view.can_edit else None,
        error=error,
    )
    status = STATUS_CODES.get(error.code, 400) if error else 200
    return render(request, "pages/modules/detail.html", ctx, status_code=status)


@page
async def module_detail(request: Request, user: User) -> Response:
    return await detail_response(request, user, request.path_params["module_id"])


@page
async def module_build(request: Request, user: User) -> Response:
    """The latest build's status and log; the page polls it every second while the build runs."""
    module = await get_module(user, request.path_params["module_id"])
    ctx = await build_context(request, user, module)
    return render(request, "partials/modules/build_poll.html", ctx)


@page
async def build_log(request: Request, user: User) -> Response:
    build = await get_build(user, request.path_params["build_id"])
    log = await read_build_log(builds(request), user, build.id)
    return render(request, "partials/modules/build_log.html", {"build": build, "log": log})


async def _action(request: Request, user: User, action: Any) -> Response:
    module_id = request.path_params["module_id"]
    try:
        await action(module_id)
    except ServiceError as exc:
        return await detail_response(request, user, module_id, error=exc)
    return redirect(request, f"/modules/{module_id}")


@page
async def module_rebuild(request: Request, user: User) -> Response:
    return await _action(request, user, lambda module_id: rebuild_module(builds(request), user, module_id))


@page
async def module_publish(request: Request, user: User) -> Response:
    return await _action(request, user, lambda module_id: request_publish(user, module_id))


# ------------------------------------------------------------------------------------------------ reviews


async def reviews_page(
    request: Request,
    user: User,
    *,
    errors: dict[str, str] | None = None,
    reasons: dict[int, str] | None = None,
    status_code: int = 200,
) -> Response:
    status = request.query_params.get("status", "")
    search = request.query_params.get("q", "").strip()
    requester = request.query_params.get("requester", "").strip()
    chosen = ReviewStatus(status) if status in ReviewStatus.__members__ else None
    query = reviews_query(user, status=chosen, search=search, requester=requester)
    # paged in the database: 50 records a page, however many there are
    reviews, pager = await paginate_query(request, query)
    await load_related(reviews, "module", "build", "requester", "reviewer")
    ctx = {
        "reviews": reviews,
        "can_review": {r.id: await can_review(user, r) for r in reviews},
        "pager": pager,
        "q": search,
        "requester": requester,
        "status": status,
        "statuses": list(ReviewStatus),
        "errors": errors or {},
        "reasons": reasons or {},
    }
    return render(
        request,
        "pages/modules/reviews.html",
        ctx,
        partial="partials/modules/reviews_table.html",
        status_code=status_code,
    )


@page
async def reviews_list(request: Request, user: User) -> Response:
    return await reviews_page(request, user)


async def _review_context(user: User, review_id: int) -> dict[str, Any]:
    review = await get_review(user, review_id)
    await review.fetch_related("module", "build", "requester", "reviewer")
    return {
        "r": review,
        "can_review": {review.id: await can_review(user, review)},
        "errors": {},
        "reasons": {},
    }


@page
async def review_detail(request: Request, user: User) -> Response:
    ctx = await _review_context(user, request.path_params["review_id"])
    build = await get_build(user, ctx["r"].build.id)
    # shown, never saved: credentials in the git URL are masked
    build.snapshot = {**build.snapshot, "git_url": redact_url(build.snapshot.get("git_url", ""))}
    ctx.update(
        build=build,
        log=await read_build_log(builds(request), user, build.id),
        # sanitised by render_markdown (nh3 allow-list): the only HTML this page does not escape
        readme=Markup(render_markdown(build.readme)) if build.readme else "",
    )
    return render(request, "pages/modules/review.html", ctx)


@page
async def review_decide(request: Request, user: User) -> Response:
    """Approve, or reject with a reason; htmx swaps the review's row, a plain post lands on the list."""
    review_id = request.path_params["review_id"]
    form = await request.form()
    reason = str(form.get("reason", ""))
    try:
        await review_module(user, review_id, approve=form.get("decision") == "approve", reason=reason)
    except ServiceError as exc:
        errors = {f"reason-{review_id}" if exc.field == "reason" else f"review-{review_id}": exc.message}
        if not is_htmx(request):
            status = STATUS_CODES.get(exc.code, 400)
            return await reviews_page(
                request, user, errors=errors, reasons={review_id: reason}, status_code=status
            )
        ctx = await _review_context(user, review_id)
        ctx.update(errors=errors, reasons={review_id: reason})
        return render(request, "partials/modules/review_row.html", ctx)
    if is_htmx(request):
        return render(request, "partials/modules/review_row.html", await _review_context(user, review_id))
    return redirect(request, "/reviews")


def module_routes() -> list[BaseRoute]:
    one = "/modules/{module_id:int}"
    return [
        Route("/modules", modules_list),
        Route("/modules/new", module_new, methods=["GET", "POST"]),
        Route(one, module_detail),
        Route(one + "/edit", module_edit, methods=["GET", "POST"]),
        Route(one + "/build", module_build),
        Route(one + "/builds/{build_id:int}/log", build_log),
        Route(one + "/rebuild", module_rebuild, methods=["POST"]),
        Route(one + "/publish", module_publish, methods=["POST"]),
        Route("/reviews", reviews_list),
        Route("/reviews/{review_id:int}", review_detail),
        Route("/reviews/{review_id:int}/decide", review_decide, methods=["POST"]),
    ]
