"""The workflow editor ("canvas"): a form for every field of a spec, a YAML tab, a live DAG preview.

One endpoint per target serves the whole editor: ``GET`` renders it prefilled (blank, an example, a template,
a version to copy), ``POST`` receives every field, applies the button pressed (``op``), validates and renders
the form again — the full page for a plain form post, the ``#editor-body`` fragment for htmx (the form posts
itself on every ``change``, so the preview and the errors follow the user's edits). ``op=save`` saves a new
workflow or a new version and redirects to it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml
from starlette.datastructures import FormData
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aihub.domain.ids import parse_count, parse_row_id
from aihub.domain.messages import joined, msg
from aihub.domain.spec import SpecError, SpecIssue, parse_spec
from aihub.services.editor import (
    EditorChoices,
    can_add_version,
    editor_choices,
    free_workflow_name,
    get_example,
    list_examples,
    spec_issues,
    spec_issues_of,
    template_versions,
)
from aihub.services.errors import InvalidInput, NotFound
from aihub.services.markdown import render_markdown
from aihub.services.versions import get_readable_version
from aihub.services.workflows import create_version, create_workflow
from aihub.web.canvas import (
    arrange,
    connect,
    coordinate,
    disconnect,
    draft_digest,
    draw,
    fill_positions,
    free_spot,
    moved_only,
    parse_act,
    place,
    selection_only,
)
from aihub.web.draft import (
    Draft,
    EnvRow,
    InputRow,
    NodeRow,
    OutputRow,
    ParamRow,
    draft_from_form,
    draft_from_spec,
)
from aihub.web.draft import errors_by_field as map_errors
from aihub.web.render import is_htmx, render
from aihub.web.session import MAX_FORM_FIELDS, page, redirect
from aihub.web.svg import layout

if TYPE_CHECKING:
    from aihub.db.models import User, WorkflowVersion

_OP = re.compile(r"(add|remove)-(param|node|module|input|output|env)(?:-([\w.-]+))?")
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Editor:
    """What the form holds: the draft (form tab) or the YAML text (YAML tab), and where it is saved."""

    mode: str = "form"  # "form" | "yaml"
    draft: Draft = field(default_factory=Draft)
    yaml: str = ""
    target: str = (
        "workflow"  # "workflow" (a new workflow) | "version" (a new version of the source's workflow)
    )
    note: str = ""  # the new version's description
    issues: list[SpecIssue] = field(default_factory=list)
    view: str = "canvas"  # "canvas" | "form" (the old long form, "form view")
    selected: int | None = None  # the canvas node whose fields the side panel shows
    notice: str = ""  # a canvas action refused at once (a cycle), shown next to the canvas
    #: inputs removed with the node or edge they took an output of: node name -> the message in its panel
    flagged: dict[str, str] = field(default_factory=dict)
    view_box: str = ""  # the canvas's pan and zoom, kept across re-renders
    drop: tuple[int, int] | None = None  # where a palette entry was dropped on the canvas
    attempted: bool = False  # a save was tried: the canvas lists every problem above it


@dataclass
class Target:
    action: str
    title: str
    source: WorkflowVersion | None = None
    can_version: bool = False


# ------------------------------------------------------------------------------------------------ the form


def editor_from_form(form: FormData) -> tuple[Editor, str]:
    """The editor state a form posted, and the button pressed. A post with only ``spec`` (the YAML form of
    scripts and older pages) saves that text."""
    legacy = "mode" not in form
    mode = "yaml" if legacy or form.get("mode") == "yaml" else "form"
    state = Editor(
        mode=mode,
        yaml=str(form.get("spec", "")).replace("\r\n", "\n"),
        target="version" if form.get("target") == "version" else "workflow",
        note=str(form.get("note", "")),
    )
    if mode == "form":
        state.draft = draft_from_form((k, v) for k, v in form.multi_items() if isinstance(v, str))
        state.draft.carry_renames()
    state.view = "canvas" if form.get("view") == "canvas" else "form"
    selected = parse_count(str(form.get("selected", "")))
    state.selected = selected if selected is not None and selected < len(state.draft.nodes) else None
    state.view_box = str(form.get("viewbox", ""))[:80]
    x, y = coordinate(str(form.get("drop-x", ""))), coordinate(str(form.get("drop-y", "")))
    state.drop = (x, y) if x is not None and y is not None else None
    op = str(form.get("op", "")) or str(form.get("act", "")) or ("save" if legacy else "preview")
    return state, op


def load_mapping(text: str) -> tuple[dict[str, Any] | None, list[SpecIssue]]:
    """The YAML/JSON text as a mapping, or the document-level problems (syntax, not a mapping, too big)."""
    try:
        parse_spec(text)
    except SpecError as exc:
        problems = [i for i in exc.issues if i.location == "document"]
        if problems:
            return None, problems
    data = yaml.load(text, Loader=_Loader)  # safe: parse_spec has rejected alias bombs and syntax errors
    return data, []


def yaml_of(draft: Draft) -> str:
    spec = draft.to_spec()
    try:
        return parse_spec(spec).to_yaml()
    except SpecError:
        return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100)


def apply_op(state: Editor, op: str, choices: EditorChoices) -> None:
    """The structural buttons: add/remove rows and nodes, switch tabs; and the canvas's actions."""
    if op == "tab-yaml" and state.mode == "form":
        state.mode, state.yaml = "yaml", yaml_of(state.draft)
    elif op in ("tab-form", "tab-canvas"):
        if state.mode == "yaml":
            _to_form(state)
        if state.mode == "form":
            state.view = "form" if op == "tab-form" else "canvas"
    if state.mode != "form":
        return
    match = _OP.fullmatch(op)
    if match:
        verb, what, arg = match.groups()
        count = len(state.draft.nodes)
        dropped = _edit(state.draft, verb, what, (arg or "").split("-"), choices)
        if (
            len(state.draft.nodes) > count and state.view == "canvas"
        ):  # a node added: where it was dropped, its panel open
            x, y = state.drop or free_spot(state.draft)
            place(state.draft.nodes[-1], x, y)
            state.selected = len(state.draft.nodes) - 1
        elif what == "node" and verb == "remove" and state.selected is not None:
            removed = parse_count(arg or "")
            if removed == state.selected:
                state.selected = None
            elif removed is not None and removed < state.selected:
                state.selected -= 1
        _flag(state, dropped, msg("it was deleted"))
        return
    if op == "arrange":
        arrange(state.draft)
        state.view_box = ""
    elif op == "deselect":
        state.selected = None
    elif (act := parse_act(op)) is not None:
        verb, first, second = act
        if verb == "select":
            state.selected = first if first < len(state.draft.nodes) else None
        elif verb == "connect" and second is not None:
            state.notice = connect(state.draft, first, second)
        elif verb == "disconnect" and second is not None:
            _flag(state, disconnect(state.draft, first, second), msg("the dependency on it was removed"))


def _flag(state: Editor, dropped: dict[str, list[str]], why: str) -> None:
    """Flags the inputs an edit removed in the panel of their node, and opens the first such panel."""
    for node, names in dropped.items():
        state.flagged[node] = msg(
            "inputs {names} were removed: they took outputs of a node that is gone from this node's "
            "ancestors ({why})",
            names=", ".join(names),
            why=why,
        )
    if dropped and state.view == "canvas":
        first = next(iter(dropped))
        state.selected = next((i for i, n in enumerate(state.draft.nodes) if n.name.strip() == first), None)


def _to_form(state: Editor) -> None:
    data, problems = load_mapping(state.yaml)
    if data is None:
        state.issues = problems
        return
    draft, lost = draft_from_spec(data)
    if lost:
        message = msg("the form cannot show this spec; fix it here first: {lost}", lost=joined(lost))
        state.issues = [SpecIssue("document", "", message)]
        return
    state.mode, state.draft = "form", draft


def _index(parts: list[str], at: int, items: list[Any]) -> int | None:
    value = parse_count(parts[at]) if len(parts) > at else None
    return value if value is not None and value < len(items) else None


def _edit(
    draft: Draft, verb: str, what: str, parts: list[str], choices: EditorChoices
) -> dict[str, list[str]]:
    """Applies a button of the form; the inputs removed with a removed node, by node."""
    if what == "param":
        if verb == "add":
            draft.params.append(ParamRow())
        elif (i := _index(parts, 0, draft.params)) is not None:
            draft.params.pop(i)
        return {}
    if what == "node":
        if verb == "add":
            taken = {n.name.strip() for n in draft.nodes}
            free = next(f"step{k}" for k in range(1, len(taken) + 2) if f"step{k}" not in taken)
            draft.nodes.append(NodeRow(name=free))
        elif (i := _index(parts, 0, draft.nodes)) is not None:
            return draft.remove_node(i)
        return {}
    if what == "module":
        module = choices.module("-".join(parts))
        if verb == "add" and module is not None:
            inputs = [InputRow(name=i["name"]) for i in module.inputs]
            draft.nodes.append(
                NodeRow(name=draft.unique_node_name(module.name), module=module.name, inputs=inputs)
            )
        return {}
    i = _index(parts, 0, draft.nodes)
    if i is None:
        return {}
    node = draft.nodes[i]
    rows: list[Any] = {"input": node.inputs, "output": node.outputs, "env": node.env}[what]
    if verb == "add":
        rows.append({"input": InputRow, "output": OutputRow, "env": EnvRow}[what]())
    elif (j := _index(parts, 1, rows)) is not None:
        rows.pop(j)
    return {}


# ------------------------------------------------------------------------------------------------ save


async def save(user: User, state: Editor, target: Target) -> WorkflowVersion | None:
    """Saves a new workflow or version; None (with ``state.issues`` set) when something is wrong."""
    if state.target == "version" and not target.can_version and target.source is not None:
        name = target.source.workflow.name
        message = msg(
            "only the owner of {name} or an administrator may add versions to it; save a new workflow",
            name=repr(name),
        )
        state.issues = [SpecIssue("workflow", "target", message)]
        return None
    await check(user, state)
    if state.issues:
        return None
    source: Any = state.draft.to_spec() if state.mode == "form" else state.yaml
    try:
        if state.target == "version" and target.source is not None:
            return await create_version(
                user, target.source.workflow.id, source, description=state.note.strip()
            )
        return await create_workflow(user, source)
    except InvalidInput as exc:
        state.issues = spec_issues_of(exc)
    except NotFound as exc:
        state.issues = [SpecIssue("workflow", "target", exc.message)]
    return None


async def check(user: User, state: Editor) -> None:
    """Every problem of the draft (or the YAML text), into ``state.issues``."""
    if state.issues:
        return
    if state.mode == "form":
        state.issues = state.draft.form_issues() + await spec_issues(user, state.draft.to_spec())
    elif state.yaml.strip():
        data, state.issues = load_mapping(state.yaml)
        if data is not None:
            state.issues = await spec_issues(user, data)


# ------------------------------------------------------------------------------------------------ rendering


def _preview_draft(state: Editor) -> Draft:
    if state.mode == "form":
        return state.draft
    data, _ = load_mapping(state.yaml) if state.yaml.strip() else (None, [])
    return draft_from_spec(data)[0] if isinstance(data, dict) else Draft()


def _broken(errors: dict[str, list[str]], draft: Draft) -> set[str]:
    """Names of the nodes with a problem (drawn with a red border in the preview)."""
    indexes = {int(m[1]) for key in errors if (m := re.match(r"nodes-(\d+)(?:-|$)", key))}
    return {draft.nodes[i].name.strip() for i in indexes if i < len(draft.nodes)}


def _first_broken(state: Editor) -> int | None:
    """The node whose panel a failed save opens: the first one with a problem (else the one open)."""
    errors = map_errors(state.issues, state.draft)
    indexes = sorted({int(m[1]) for key in errors if (m := re.match(r"nodes-(\d+)(?:-|$)", key))})
    return indexes[0] if indexes else state.selected


def _palette(choices: EditorChoices) -> list[tuple[str, list[Any]]]:
    groups: dict[str, list[Any]] = {}
    for module in choices.modules:
        groups.setdefault(module.group, []).append(module)
    return list(groups.items())


async def render_editor(
    request: Request, user: User, state: Editor, target: Target, choices: EditorChoices, *, status: int = 200
) -> Response:
    ctx = await _context(state, target, choices)
    if "canvas" in ctx:  # the page's copy of what it shows (a choice answered by the side panel alone)
        ctx["digest"] = draft_digest(state.draft)
    if request.url.path == "/workflows/new" and not is_htmx(request):
        ctx["examples"] = list_examples()
        ctx["templates"] = await template_versions()
    return render(
        request,
        "pages/workflows/editor.html",
        ctx,
        partial="partials/workflows/editor.html",
        status_code=status,
    )


async def render_selection(
    request: Request, state: Editor, target: Target, choices: EditorChoices, shown: int | None
) -> Response:
    """The canvas's side panel for a new selection, and the fields of the node it showed (``shown``) back as
    hidden ones: swapped in out of band, the rest of the editor stays as it is (``HX-Reswap: none``)."""
    ctx = await _context(state, target, choices)
    ctx.update(macros_only=True, previous=shown)
    response = render(request, "partials/workflows/editor_selection.html", ctx)
    response.headers["HX-Reswap"] = "none"
    return response


async def _context(state: Editor, target: Target, choices: EditorChoices) -> dict[str, Any]:
    draft = state.draft
    preview = _preview_draft(state)
    errors = map_errors(state.issues, draft) if state.mode == "form" else {}
    broken = _broken(errors, draft)
    canvas = state.view == "canvas" and state.mode == "form"
    ctx: dict[str, Any] = {
        "title": target.title,
        "action": target.action,
        "source": target.source,
        "can_version": target.can_version,
        "state": state,
        "draft": draft,
        "choices": choices,
        "palette": _palette(choices),
        "errors": errors,
        "broken": broken,
        "cluster_names": {c.name for c in choices.clusters},
        "storage_names": {s.name for s in choices.storages},
        "module_inputs": {
            m.name: {i["name"]: i.get("description", "") for i in m.inputs} for m in choices.modules
        },
    }
    if canvas:
        fill_positions(draft)
        shown = [state.selected] if state.selected is not None else []
        outputs = choices.module_outputs
        ctx["canvas"] = draw(draft, broken, state.view_box)
        ctx["sources"] = {i: draft.sources(i, outputs, ancestors_only=True) for i in shown}
        ctx["deps"] = {i: draft.dependency_choices(i) for i in shown}
        module = choices.module(draft.nodes[shown[0]].module) if shown else None
        ctx["readme"] = (
            await asyncio.to_thread(render_markdown, module.readme) if module and module.readme else ""
        )
    else:
        ctx["sources"] = [draft.sources(i, choices.module_outputs) for i in range(len(draft.nodes))]
        ctx["deps"] = [draft.dependency_choices(i) for i in range(len(draft.nodes))]
        ctx["graph"] = layout(preview.acyclic_parents())
        ctx["modules"] = {n.name.strip(): bool(n.module) for n in preview.nodes}
        ctx["node_ids"] = {n.name.strip(): i for i, n in enumerate(preview.nodes)}
    return ctx


async def editor(request: Request, user: User, target: Target, start: Editor) -> Response:
    choices = await editor_choices(user)
    if request.method == "GET":
        if request.query_params.get("view") == "form":
            start.view = "form"
        return await render_editor(request, user, start, target, choices)
    try:
        form = await request.form(max_fields=MAX_FORM_FIELDS)
    except ClientDisconnect:  # htmx aborted this request for a newer one (hx-sync replace)
        return Response(status_code=204)
    state, op = editor_from_form(form)
    if state.target == "version" and target.source is None:
        state.target = "workflow"
    if state.target == "version" and target.can_version and target.source and state.mode == "form":
        state.draft.name = target.source.workflow.name
    if state.view == "canvas" and state.mode == "form" and is_htmx(request):
        if moved_only(state.draft, op):
            return Response(status_code=204)  # a node dragged to a valid place: the canvas shows it already
        unchanged, chosen = selection_only(state.draft, op, str(form.get("draft-digest", "")))
        if unchanged:
            shown, state.selected = state.selected, chosen
            await check(user, state)
            return await render_selection(request, state, target, choices, shown)
    if op == "save":
        state.attempted = True
        version = await save(user, state, target)
        if version is not None:
            return redirect(request, f"/versions/{version.id}")
        if state.view == "canvas" and state.mode == "form":
            state.selected = _first_broken(state)
        return await render_editor(
            request, user, state, target, choices, status=200 if is_htmx(request) else 400
        )
    apply_op(state, op, choices)
    await check(user, state)
    return await render_editor(request, user, state, target, choices)


# ------------------------------------------------------------------------------------------------ routes


async def _start_new(request: Request, user: User) -> Editor:
    """``/workflows/new?from=example:<name>|version:<id>``: the editor prefilled from a starting point."""
    origin = request.query_params.get("from", "")
    kind, _, key = origin.partition(":")
    if kind == "example":
        data, _ = load_mapping(get_example(key).text)
        draft = draft_from_spec(data or {})[0]
    elif kind == "version" and (version_id := parse_row_id(key)) is not None:
        draft = draft_from_spec((await get_readable_version(user, version_id)).spec)[0]
    elif request.query_params.get("view") == "form":
        return Editor(draft=Draft(nodes=[NodeRow(name="step1")]), view="form")
    else:
        return Editor()  # an empty canvas
    draft.name = await free_workflow_name(user, draft.name)
    return Editor(draft=draft)


@page
async def workflow_new(request: Request, user: User) -> Response:
    target = Target(action="/workflows/new", title=msg("Create workflow"))
    start = await _start_new(request, user) if request.method == "GET" else Editor()
    return await editor(request, user, target, start)


@page
async def version_copy(request: Request, user: User) -> Response:
    """A new version of the workflow, or a new workflow, starting from a version: everything editable."""
    source = await get_readable_version(user, request.path_params["version_id"])
    can_version = await can_add_version(user, source)
    title = msg("Copy {name} v{number}", name=source.workflow.name, number=source.number)
    target = Target(f"/versions/{source.id}/copy", title, source, can_version)
    start = Editor()
    if request.method == "GET":
        # ?as=workflow: the list's "copy as a new workflow" (the default is a new version when allowed)
        as_version = can_version and request.query_params.get("as") != "workflow"
        start = Editor(draft=draft_from_spec(source.spec)[0], target="version" if as_version else "workflow")
        start.draft.name = (
            source.workflow.name
            if as_version
            else await free_workflow_name(user, f"{source.workflow.name}-copy")
        )
    return await editor(request, user, target, start)


def editor_routes() -> list[BaseRoute]:
    return [
        Route("/workflows/new", workflow_new, methods=["GET", "POST"]),
        Route("/versions/{version_id:int}/copy", version_copy, methods=["GET", "POST"]),
        Route("/versions/{version_id:int}/new-version", version_copy, methods=["GET", "POST"]),
    ]
