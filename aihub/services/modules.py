"""Modules: the registry, their builds and who may see and use them (SPEC.md §5).

Saving a module (create or edit) validates every field and starts a new **build**: a ``ModuleBuild`` row with a
snapshot of the module as it was saved, run in the background by the :class:`BuildManager`. Workflow versions
pin builds, never modules, so editing a module changes nothing for workflows saved before.

Status of a module = status of its newest build, then its review: ``BUILDING -> BUILT | BUILD_FAILED``,
``BUILT -> PENDING_REVIEW -> PUBLISHED | REJECTED``. A build is usable by the module's owner once BUILT and by
everybody once published (``ModuleBuild.published``, set by an approval). A published module that is edited
stays available to others through its published build while the new one is built and reviewed.

Visibility: owners see their modules in any state; everybody sees modules that have a published build (as that
build's snapshot, not the unpublished edits); admins see everything. A module the caller may not see is reported
exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q, Subquery
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from aihub.db.models import (
    BuildStatus,
    Category,
    Module,
    ModuleBuild,
    ModuleReview,
    ModuleStatus,
    ReviewStatus,
    User,
)
from aihub.domain.builds import BuildJob, BuildOutcome
from aihub.domain.git import GitError, check_git_url, check_ref, redact_url
from aihub.domain.messages import msg
from aihub.domain.spec import (
    MODULE_NAME_PATTERN,
    NAME_PATTERN,
    RESERVED_ENV_PREFIX,
    OutputDecl,
    scalar_to_str,
)
from aihub.services.access import reviews_visible_to
from aihub.services.errors import Forbidden, InvalidInput, NotFound
from aihub.services.status import move_build, move_module, move_reviews, utcnow
from aihub.settings import Settings

__all__ = [
    "Builds",
    "DbBuildStore",
    "ModuleView",
    "builds_of",
    "create_module",
    "get_build",
    "get_module",
    "get_module_by_name",
    "list_modules",
    "module_palette",
    "modules_visible_to",
    "published_build",
    "read_build_log",
    "rebuild_module",
    "update_module",
    "view_module",
]


class BuildLogReader(Protocol):
    """Where finished build logs are kept for every replica to read (``aihub.storage``)."""

    async def read_build_log(self, build_id: int, path: Path, offset: int, limit: int) -> bytes: ...


class Builds(Protocol):
    """What the module services need of the build runner (the engine's ``BuildManager``, given by the adapter):
    the services record builds, the runner runs them and keeps their logs."""

    settings: Settings
    logs: BuildLogReader | None

    def submit(self, build_id: int) -> None: ...

    def log_path(self, build_id: int) -> Path: ...


MAX_NAME = 63
MAX_DESCRIPTION = 10_000
MAX_ITEMS = 100
MAX_LOG_READ = 1 << 20
EDITABLE = (
    "category",
    "description",
    "git_url",
    "ref",
    "dockerfile_path",
    "build_context",
    "readme_path",
    "env",
    "inputs",
    "outputs",
)


# ------------------------------------------------------------------------------------------------ validation


class _Problems:
    """Every problem of a request at once; raised as one InvalidInput naming the first field."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.items.append((field, message))

    def raise_if_any(self) -> None:
        """One line ``field: message`` per problem for tools; ``problems`` keeps the pairs (each message a
        ``msg``) for the web form, which shows each at its field in the reader's language."""
        if self.items:
            text = "\n".join(f"{f}: {m}" for f, m in self.items)
            error = InvalidInput(text, field=self.items[0][0])
            error.problems = list(self.items)  # type: ignore[attr-defined]
            raise error


def _text(value: Any, field: str, problems: _Problems, *, limit: int = 1024) -> str | None:
    if not isinstance(value, str):
        problems.add(field, msg("must be a string"))
        return None
    if "\0" in value:
        problems.add(field, msg("must not contain a NUL character"))
        return None
    if len(value) > limit:
        problems.add(field, msg("is longer than {count} characters", count=limit))
        return None
    return value.strip()


def _name(value: Any, problems: _Problems) -> str | None:
    name = _text(value, "name", problems, limit=MAX_NAME)
    if name is None:
        return None
    if not name or not MODULE_NAME_PATTERN.fullmatch(name):
        problems.add(
            "name",
            msg(
                "{value} is not a valid module name: use lowercase letters, digits and '-' (at most 63)",
                value=repr(name),
            ),
        )
        return None
    return name


def _repo_path(value: Any, field: str, problems: _Problems, *, directory: bool = False) -> str | None:
    """A path relative to the repository root that stays inside it, normalised (``a/./b`` -> ``a/b``)."""
    text = _text(value, field, problems)
    if text is None:
        return None
    if directory and text.strip("/") in ("", "."):
        return "."
    if not text:
        problems.add(field, msg("is empty"))
        return None
    if text.startswith("/"):
        if not directory:
            problems.add(
                field,
                msg(
                    "{value} must be relative to the repository root (e.g. 'modules/x/README.md')",
                    value=repr(text),
                ),
            )
            return None
        text = text.lstrip("/")  # the seed writes build directories as "/", "/modules/x"
    normal = posixpath.normpath(text)
    if normal == ".." or normal.startswith("../"):
        problems.add(field, msg("{value} leads outside the repository", value=repr(text)))
        return None
    if normal == "." and not directory:
        problems.add(field, msg("{value} is the repository itself, not a file", value=repr(text)))
        return None
    if ".git" in (part.lower() for part in normal.split("/")):
        problems.add(
            field,
            msg("{value} points into .git/, git's own files (they may hold credentials)", value=repr(text)),
        )
        return None
    return normal


def _variable(name: Any, field: str, problems: _Problems) -> str | None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        problems.add(
            field,
            msg(
                "{value} is not a valid name: letters, digits and '_', not starting with a digit",
                value=repr(name),
            ),
        )
        return None
    if name.startswith(RESERVED_ENV_PREFIX):
        problems.add(
            field,
            msg(
                "{value}: names starting with {prefix} are set by the platform",
                value=repr(name),
                prefix=RESERVED_ENV_PREFIX,
            ),
        )
        return None
    return name


def _env(value: Any, problems: _Problems) -> dict[str, str] | None:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.add("env", msg("must be a mapping of names to values"))
        return None
    if len(value) > MAX_ITEMS:
        problems.add("env", msg("has more than {count} variables", count=MAX_ITEMS))
        return None
    env: dict[str, str] = {}
    for key, raw in value.items():
        name = _variable(key, f"env.{key}", problems)
        try:
            text = scalar_to_str(raw)
        except ValueError as exc:
            problems.add(f"env.{key}", exc.args[0] if len(exc.args) == 1 else str(exc))
            continue
        if name is not None:
            env[name] = text
    return env


def _items(value: Any, field: str, problems: _Problems) -> list[Mapping[str, Any]] | None:
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, str):
        problems.add(field, msg("must be a list"))
        return None
    if len(value) > MAX_ITEMS:
        problems.add(field, msg("has more than {count} entries", count=MAX_ITEMS))
        return None
    result = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            problems.add(f"{field}[{index}]", msg("must be a mapping"))
            continue
        result.append(item)
    return result if len(result) == len(value) else None


def _unique(names: list[tuple[int, str]], field: str, problems: _Problems) -> None:
    seen: set[str] = set()
    for index, name in names:
        if name in seen:
            what = msg("input") if field == "inputs" else msg("output")
            problems.add(
                f"{field}[{index}].name", msg("duplicate {what} name {name}", what=what, name=repr(name))
            )
        seen.add(name)


def _inputs(value: Any, problems: _Problems) -> list[dict[str, str]] | None:
    items = _items(value, "inputs", problems)
    if items is None:
        return None
    inputs, names = [], []
    for index, item in enumerate(items):
        unknown = set(item) - {"name", "description"}
        if unknown:
            problems.add(
                f"inputs[{index}]",
                msg("unknown field(s) {fields}", fields=", ".join(sorted(map(str, unknown)))),
            )
        name = _variable(item.get("name"), f"inputs[{index}].name", problems)
        description = _text(item.get("description") or "", f"inputs[{index}].description", problems)
        if name is not None:
            names.append((index, name))
            inputs.append({"name": name, "description": description or ""})
    _unique(names, "inputs", problems)
    return inputs


def _outputs(value: Any, problems: _Problems) -> list[dict[str, str]] | None:
    items = _items(value, "outputs", problems)
    if items is None:
        return None
    outputs, names = [], []
    for index, item in enumerate(items):
        try:
            decl = OutputDecl.model_validate(dict(item))
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"])
                reason = error.get("ctx", {}).get("error")
                message = (
                    reason.args[0]
                    if isinstance(reason, ValueError) and len(reason.args) == 1
                    else error["msg"].removeprefix("Value error, ")
                )
                if error["type"] == "literal_error":
                    message = msg("type must be 'text' or 'path' (got {value})", value=repr(error["input"]))
                problems.add(f"outputs[{index}]" + (f".{where}" if where else ""), message)
            continue
        names.append((index, decl.name))
        outputs.append(decl.model_dump())
    _unique(names, "outputs", problems)
    return outputs


async def _category(value: Any, problems: _Problems) -> Category | None:
    name = _text(value, "category", problems, limit=64)
    if name is None:
        return None
    category = await Category.get_or_none(name=name)
    if category is None:
        known = await Category.all().order_by("name").values_list("name", flat=True)
        listing = ", ".join(known) if known else msg("none yet; ask an administrator to add one")
        problems.add(
            "category",
            msg("unknown category {name} (categories: {listing})", name=repr(name), listing=listing),
        )
    return category


def git_allowed_hosts(settings: Settings) -> list[str]:
    """``AIHUB_GIT_ALLOWED_HOSTS``: internal git servers modules may name."""
    return [host.strip() for host in settings.git_allowed_hosts.split(",") if host.strip()]


def _git(url: Any, ref: Any, settings: Settings, problems: _Problems) -> tuple[str | None, str | None]:
    checked_url = checked_ref = None
    if url is not None:
        text = _text(url, "gitUrl", problems)
        if text is not None:
            try:
                checked_url = check_git_url(
                    text, allow_file=settings.allow_file_git, allowed_hosts=git_allowed_hosts(settings)
                )
            except GitError as exc:
                problems.add("gitUrl", exc.args[0])
    if ref is not None:
        text = _text(ref, "ref", problems, limit=255)
        if text is not None:
            try:
                checked_ref = check_ref(text)
            except GitError as exc:
                problems.add("ref", exc.args[0])
    return checked_url, checked_ref


async def _validate(values: Mapping[str, Any], settings: Settings, problems: _Problems) -> dict[str, Any]:
    """Checks the fields present in ``values``; returns them normalised (a field with a problem is absent)."""
    clean: dict[str, Any] = {}
    if "category" in values:
        clean["category"] = await _category(values["category"], problems)
    if "description" in values:
        clean["description"] = _text(
            values["description"] or "", "description", problems, limit=MAX_DESCRIPTION
        )
    clean["git_url"], clean["ref"] = _git(values.get("git_url"), values.get("ref"), settings, problems)
    if "dockerfile_path" in values:
        clean["dockerfile_path"] = _repo_path(values["dockerfile_path"], "dockerfilePath", problems)
    if "build_context" in values:
        clean["build_context"] = _repo_path(values["build_context"], "buildContext", problems, directory=True)
    if "readme_path" in values:
        clean["readme_path"] = _repo_path(values["readme_path"], "readmePath", problems)
    if "env" in values:
        clean["env"] = _env(values["env"], problems)
    if "inputs" in values:
        clean["inputs"] = _inputs(values["inputs"], problems)
    if "outputs" in values:
        clean["outputs"] = _outputs(values["outputs"], problems)
    return {k: v for k, v in clean.items() if v is not None}


# ------------------------------------------------------------------------------------------------ visibility


def modules_visible_to(user: User) -> QuerySet[Module]:
    """Own modules in any state, modules with a published build, everything for admins; and the modules a
    reviewer is asked to decide on (a team leader's team's pending requests: the seed's leaders see them on the
    modules page)."""
    if user.is_admin:
        return Module.all()
    return Module.filter(
        Q(owner_id=user.id)
        | Q(builds__published=True)
        | Q(id__in=Subquery(_pending_for(user).values("module_id")))
    ).distinct()


def _pending_for(user: User) -> QuerySet[ModuleReview]:
    """The PENDING publish requests ``user`` sees as a reviewer (not their own)."""
    return reviews_visible_to(user).filter(status=ReviewStatus.PENDING).exclude(requester_id=user.id)


#: the fields of a module that a build's snapshot freezes (what a viewer who is not the owner sees)
SHOWN_FIELDS = (
    "description",
    "category",
    "git_url",
    "ref",
    "dockerfile_path",
    "build_context",
    "readme_path",
    "env",
    "inputs",
    "outputs",
)


@dataclass(frozen=True)
class Shown:
    """A module as one viewer sees it. The owner (and admins) see the module as edited, with its own status,
    and the published build beside it; a reviewer of a pending request sees the build under review; everybody
    else sees the published build only — an edit changes nothing for them until it is built and approved."""

    status: ModuleStatus
    fields: dict[str, Any]
    #: the build whose snapshot is shown (None: the owner's view of the module as edited)
    build: ModuleBuild | None
    #: the published build (also when the owner's edit is newer)
    published: ModuleBuild | None
    owner_view: bool


def _own_fields(module: Module, category: str) -> dict[str, Any]:
    fields = {key: getattr(module, key) for key in SHOWN_FIELDS if key != "category"}
    return {**fields, "category": category}


async def shown_modules(user: User, modules: Sequence[Module]) -> dict[int, Shown]:
    """How ``user`` sees each module (one query each for published builds, pending reviews and categories)."""
    ids = [m.id for m in modules]
    published: dict[int, ModuleBuild] = {}
    for build in await ModuleBuild.filter(module_id__in=ids, published=True).order_by("number"):
        published[build.module_id] = build  # type: ignore[attr-defined]  # the newest wins
    pending: dict[int, ModuleBuild] = {}
    if not user.is_admin:
        for review in await _pending_for(user).filter(module_id__in=ids).prefetch_related("build"):
            pending[review.module_id] = review.build  # type: ignore[attr-defined]
    categories = {c.id: c.name for c in await Category.filter(id__in={m.category_id for m in modules})}  # type: ignore[attr-defined]
    shown: dict[int, Shown] = {}
    for m in modules:
        done = published.get(m.id)
        if _can_edit(user, m):
            own = _own_fields(m, categories.get(m.category_id, ""))  # type: ignore[attr-defined]
            shown[m.id] = Shown(m.status, own, None, done, True)
        elif m.id in pending:
            build = pending[m.id]
            shown[m.id] = Shown(ModuleStatus.PENDING_REVIEW, dict(build.snapshot), build, done, False)
        else:
            snap = dict(done.snapshot) if done else {}
            shown[m.id] = Shown(ModuleStatus.PUBLISHED, snap, done, done, False)
    return shown


def modules_query(
    user: User,
    *,
    mine: bool = False,
    published: bool = False,
    status: ModuleStatus | None = None,
    category: str | None = None,
    search: str | None = None,
    owner: str | None = None,
) -> QuerySet[Module]:
    """The modules ``user`` sees, filtered in the database — ``status`` as this viewer sees it (``Shown``) — and
    ordered by category and name, for pages of any length (no join that would need DISTINCT)."""
    published_ids = Subquery(ModuleBuild.filter(published=True).values("module_id"))
    own = Q(owner_id=user.id)
    if user.is_admin:
        query = Module.all()
        if status is not None:
            query = query.filter(status=status)
    else:
        pending_ids = Subquery(_pending_for(user).values("module_id"))
        query = Module.filter(own | Q(id__in=published_ids) | Q(id__in=pending_ids))
        if status is ModuleStatus.PUBLISHED:
            others = ~own & ~Q(id__in=pending_ids) & Q(id__in=published_ids)
            query = query.filter((own & Q(status=status)) | others)
        elif status is ModuleStatus.PENDING_REVIEW:
            query = query.filter((own & Q(status=status)) | (~own & Q(id__in=pending_ids)))
        elif status is not None:
            query = query.filter(own, status=status)
    if mine:
        query = query.filter(own)
    if published:
        query = query.filter(id__in=published_ids)
    if category:
        query = query.filter(category__name=category)
    if search:
        query = query.filter(name__icontains=search)
    if owner:
        query = query.filter(owner__username=owner)
    return query.order_by("category__name", "name")


async def shown_module(user: User, module: Module) -> Shown:
    return (await shown_modules(user, [module]))[module.id]


def _can_edit(user: User, module: Module) -> bool:
    return user.is_admin or module.owner_id == user.id  # type: ignore[attr-defined]


async def get_module(user: User, module_id: int) -> Module:
    module = await modules_visible_to(user).get_or_none(id=module_id)
    if module is None:
        raise NotFound(msg("module {module} not found", module=module_id), field="id")
    return module


async def get_module_by_name(user: User, name: str) -> Module:
    module = await modules_visible_to(user).get_or_none(name=name)
    if module is None:
        raise NotFound(msg("module {module} not found", module=repr(name)), field="name")
    return module


async def list_modules(
    user: User,
    *,
    mine: bool = False,
    status: ModuleStatus | None = None,
    category: str | None = None,
    search: str | None = None,
) -> list[Module]:
    query = modules_visible_to(user)
    if mine:
        query = query.filter(owner_id=user.id)
    if status is not None:
        query = query.filter(status=status)
    if category:
        query = query.filter(category__name=category)
    if search:
        query = query.filter(name__icontains=search)
    return await query.order_by("name")


async def published_build(module_id: int) -> ModuleBuild | None:
    return await ModuleBuild.filter(module_id=module_id, published=True).order_by("-number").first()


async def latest_build(module_id: int) -> ModuleBuild | None:
    return await ModuleBuild.filter(module_id=module_id).order_by("-number").first()


async def builds_of(user: User, module_id: int) -> list[ModuleBuild]:
    """Newest first: every build for the owner and admins, the published ones for everybody else."""
    module = await get_module(user, module_id)
    query = ModuleBuild.filter(module_id=module.id)
    if not _can_edit(user, module):
        query = query.filter(published=True)
    return await query.order_by("-number")


async def get_build(user: User, build_id: int) -> ModuleBuild:
    build = await ModuleBuild.get_or_none(id=build_id).prefetch_related("module")
    if build is None:
        raise NotFound(msg("module build {build} not found", build=build_id), field="id")
    module = build.module
    visible = _can_edit(user, module) or (
        build.published and await modules_visible_to(user).filter(id=module.id).exists()
    )
    if not visible and not await _reviews_build(user, build):
        raise NotFound(msg("module build {build} not found", build=build_id), field="id")
    return build


async def _reviews_build(user: User, build: ModuleBuild) -> bool:
    """A reviewer may look at the build they are asked to review (its README, log and interface)."""
    return await reviews_visible_to(user).filter(build_id=build.id).exists()


@dataclass(frozen=True)
class ModuleView:
    """A module as a given user sees it: owners the latest edit, others the published snapshot."""

    module: Module
    build: ModuleBuild | None  # the build whose data is shown (latest for owners, published for others)
    status: ModuleStatus
    description: str
    category: str
    git_url: str
    ref: str
    dockerfile_path: str
    build_context: str
    readme_path: str
    env: dict[str, str]
    inputs: list[dict[str, str]]
    outputs: list[dict[str, str]]
    readme_html: str
    can_edit: bool
    #: for the owner while an edit of a published module is not yet approved: the build everybody else uses
    published: ModuleBuild | None = None


async def view_module(user: User, module: Module) -> ModuleView:
    shown = await shown_module(user, module)
    owner_view = shown.owner_view
    build = await latest_build(module.id) if owner_view else shown.build
    source: dict[str, Any] = dict(shown.fields)
    source["git_url"] = redact_url(source.get("git_url", ""))  # credentials in the URL are never shown
    status = shown.status
    readme_build = build
    if owner_view and (build is None or not build.readme):
        readme_build = (
            await ModuleBuild.filter(module_id=module.id, status=BuildStatus.BUILT)
            .order_by("-number")
            .first()
        )
    readme = readme_build.readme if readme_build else ""
    return ModuleView(
        module=module,
        build=build,
        status=status,
        description=source.get("description", ""),
        category=source.get("category", ""),
        git_url=source.get("git_url", ""),
        ref=source.get("ref", ""),
        dockerfile_path=source.get("dockerfile_path", ""),
        build_context=source.get("build_context", ""),
        readme_path=source.get("readme_path", ""),
        env=dict(source.get("env", {})),
        inputs=list(source.get("inputs", [])),
        outputs=list(source.get("outputs", [])),
        readme_html=await asyncio.to_thread(_render_markdown, readme) if readme else "",
        can_edit=owner_view,
        published=shown.published
        if owner_view and shown.published and (build is None or shown.published.id != build.id)
        else None,
    )


@dataclass(frozen=True)
class PaletteEntry:
    group: str  # "mine" or the category name
    module: Module
    build: ModuleBuild


async def module_palette(user: User) -> list[PaletteEntry]:
    """What the user may put in a workflow: their own built modules ("mine"), then published ones by category.

    Each entry carries the build a workflow version saved now would pin (the same rule as
    ``aihub.services.modules_resolve.usable_build``).
    """
    builds = (
        await ModuleBuild.filter(Q(module__owner_id=user.id) | Q(published=True), status=BuildStatus.BUILT)
        .order_by("-number")
        .prefetch_related("module__category")
    )
    newest: dict[int, ModuleBuild] = {}
    for build in builds:
        newest.setdefault(build.module_id, build)  # type: ignore[attr-defined]
    entries = []
    for build in newest.values():
        module = build.module
        mine = module.owner_id == user.id  # type: ignore[attr-defined]
        entries.append(
            PaletteEntry(group="mine" if mine else module.category.name, module=module, build=build)
        )
    entries.sort(key=lambda e: (e.group != "mine", e.group, e.module.name))
    return entries


# ------------------------------------------------------------------------------------------------ saving


def _snapshot(module: Module, category: Category) -> dict[str, Any]:
    return {
        "description": module.description,
        "category": category.name,
        "git_url": module.git_url,
        "ref": module.ref,
        "dockerfile_path": module.dockerfile_path,
        "build_context": module.build_context,
        "readme_path": module.readme_path,
        "env": dict(module.env),
        "inputs": list(module.inputs),
        "outputs": list(module.outputs),
    }


async def _new_build(module: Module, category: Category, why: str) -> ModuleBuild:
    """In the caller's transaction: a BUILDING build of the module as saved, withdrawing a pending review."""
    last = await latest_build(module.id)
    build = await ModuleBuild.create(
        module=module,
        number=(last.number + 1) if last else 1,
        status=BuildStatus.BUILDING,
        snapshot=_snapshot(module, category),
        message=why,
    )
    await move_reviews(
        module.id,
        ReviewStatus.REJECTED,
        reason=f"withdrawn: the module was changed (build {build.number})",
        decided_at=utcnow(),
    )
    await move_module(module, ModuleStatus.BUILDING)
    await module.save(update_fields=["updated_at"])
    return build


async def create_module(
    builds: Builds,
    user: User,
    *,
    category: str,
    name: str,
    git_url: str,
    ref: str = "main",
    dockerfile_path: str = "Dockerfile",
    build_context: str = ".",
    readme_path: str = "README.md",
    description: str = "",
    env: Mapping[str, Any] | None = None,
    inputs: Sequence[Mapping[str, Any]] | None = None,
    outputs: Sequence[Mapping[str, Any]] | None = None,
) -> Module:
    """Register a module and start its first build."""
    problems = _Problems()
    module_name = _name(name, problems)
    values = await _validate(
        {
            "category": category,
            "description": description,
            "git_url": git_url,
            "ref": ref,
            "dockerfile_path": dockerfile_path,
            "build_context": build_context,
            "readme_path": readme_path,
            "env": env,
            "inputs": inputs,
            "outputs": outputs,
        },
        builds.settings,
        problems,
    )
    if module_name is not None and await Module.filter(name=module_name).exists():
        problems.add("name", msg("a module named {name} already exists", name=repr(module_name)))
    problems.raise_if_any()
    try:
        async with in_transaction():
            module = await Module.create(name=module_name, owner=user, status=ModuleStatus.BUILDING, **values)
            build = await _new_build(module, values["category"], "first build")
    except IntegrityError as exc:  # a concurrent create with the same name
        raise InvalidInput(
            msg("a module named {name} already exists", name=repr(module_name)), field="name"
        ) from exc
    builds.submit(build.id)
    return module


async def _editable(user: User, module_id: int) -> Module:
    module = await get_module(user, module_id)
    if not _can_edit(user, module):
        raise Forbidden(
            msg("only the owner of module {name} or an administrator may change it", name=repr(module.name)),
            field="id",
        )
    return module


async def update_module(builds: Builds, user: User, module_id: int, **changes: Any) -> Module:
    """Edit a module (``None`` = unchanged; the name cannot change) and start a new build of it."""
    module = await _editable(user, module_id)
    unknown = set(changes) - set(EDITABLE) - {"name"}
    if unknown:
        raise InvalidInput(
            msg("unknown module field(s): {fields}", fields=", ".join(sorted(unknown))),
            field=sorted(unknown)[0],
        )
    name = changes.pop("name", None)
    shown = redact_url(module.git_url)
    if isinstance(changes.get("git_url"), str) and changes["git_url"].strip() == shown != module.git_url:
        # the masked URL sent back unchanged: keep the stored one, credentials included
        del changes["git_url"]
    if name is not None and name != module.name:
        raise InvalidInput(
            msg("a module's name cannot change (workflows refer to it); register a new module instead"),
            field="name",
        )
    problems = _Problems()
    values = await _validate({k: v for k, v in changes.items() if v is not None}, builds.settings, problems)
    problems.raise_if_any()
    async with in_transaction():
        for key, value in values.items():
            setattr(module, key, value)
        await module.save()
        category = await Category.get(id=module.category_id)  # type: ignore[attr-defined]
        build = await _new_build(module, category, "module edited")
    builds.submit(build.id)
    return module


async def rebuild_module(builds: Builds, user: User, module_id: int) -> ModuleBuild:
    """Build the module again as it is (e.g. its branch has new commits)."""
    module = await _editable(user, module_id)
    async with in_transaction():
        category = await Category.get(id=module.category_id)  # type: ignore[attr-defined]
        build = await _new_build(module, category, "rebuild")
    builds.submit(build.id)
    return build


# ------------------------------------------------------------------------------------------------ build logs


async def read_build_log(builds: Builds, user: User, build_id: int, *, offset: int = 0) -> str:
    """The build's log from byte ``offset`` (at most 1 MiB at a time); "" while nothing is written."""
    build = await get_build(user, build_id)
    path = builds.log_path(build.id)
    if builds.logs is not None:  # archived in a shared store: any replica reads it
        data = await builds.logs.read_build_log(build.id, path, offset, MAX_LOG_READ)
        return data.decode(errors="replace")

    def read() -> bytes:
        try:
            with path.open("rb") as f:
                f.seek(max(offset, 0))
                return f.read(MAX_LOG_READ)
        except FileNotFoundError:
            return b""

    return (await asyncio.to_thread(read)).decode(errors="replace")


# ------------------------------------------------------------------------------------------------ the store


class DbBuildStore:
    """How the build manager loads jobs and records outcomes (the database side of a build)."""

    async def load(self, build_id: int) -> BuildJob | None:
        build = await ModuleBuild.get_or_none(id=build_id, status=BuildStatus.BUILDING).prefetch_related(
            "module"
        )
        if build is None:
            return None
        snap = build.snapshot
        return BuildJob(
            build_id=build.id,
            number=build.number,
            module=build.module.name,
            category=snap["category"],
            git_url=snap["git_url"],
            ref=snap["ref"],
            dockerfile_path=snap["dockerfile_path"],
            build_context=snap["build_context"],
            readme_path=snap["readme_path"],
        )

    async def finish(self, build_id: int, outcome: BuildOutcome) -> None:
        async with in_transaction():
            build = await ModuleBuild.get_or_none(id=build_id).select_for_update()
            if build is None or build.status is not BuildStatus.BUILDING:
                return
            build.message = "built" if outcome.ok else (outcome.error or "build failed")
            build.commit_sha = outcome.commit_sha
            build.image = outcome.image
            build.entrypoint = list(outcome.entrypoint)
            build.workdir = outcome.workdir
            build.context_path = outcome.context_path
            build.readme = outcome.readme
            build.finished_at = utcnow()
            await build.save()
            await move_build(build, BuildStatus.BUILT if outcome.ok else BuildStatus.BUILD_FAILED)
            newest = await latest_build(build.module_id)  # type: ignore[attr-defined]
            if newest is not None and newest.id == build.id:
                await move_module(
                    build.module_id, ModuleStatus.BUILT if outcome.ok else ModuleStatus.BUILD_FAILED
                )  # type: ignore[attr-defined]

    async def pending(self) -> list[int]:
        return list(
            await ModuleBuild.filter(status=BuildStatus.BUILDING).order_by("id").values_list("id", flat=True)
        )


def _render_markdown(text: str) -> str:
    """A module's README as HTML (markdown-it is imported here, not by every process that imports this module:
    ``aihub run`` has no use for it)."""
    from aihub.services.markdown import render_markdown

    return render_markdown(text)
