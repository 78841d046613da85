"""Errors a person reads are built with ``msg(...)`` (docs/ui.md, "Languages"): the web UI translates a message by
its template, and a literal or an f-string with values in it can never be. This reads the source (AST) of the
layers that raise them and fails on a raise of a user-facing error class whose message is a literal, an f-string,
a concatenation or a ``.format``/``%`` text — and on such a raise of any other class unless :data:`INTERNAL` says
why no person reads it. The same holds for the calls that carry a message to a person without raising it (a
spec's issues, the module form's problems: :data:`MESSAGE_ARGUMENTS`). A variable or ``str(exc)`` passes: its
message was built elsewhere (another raise this test reads) or is a stored English text the UI matches against
the catalogue's templates."""

from __future__ import annotations

import ast
import builtins
import importlib
import types
from pathlib import Path

import pytest

from aihub.domain.git import GitError
from aihub.services.errors import ServiceError

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("aihub/services", "aihub/domain", "aihub/graphql", "aihub/web")
#: what a person reads when raised: every ServiceError (UserError, Unauthenticated, TooManyAttempts, StaleStatus,
#: QueryTooCostly … are subclasses), GitError, and the spec's document errors
USER_FACING: tuple[type[BaseException], ...] = (ServiceError, GitError)
#: functions that build a user-facing error from their message
USER_FACING_BUILDERS = {("aihub/domain/spec.py", "_document_error")}
#: in the spec, a ValueError raised by a field validator or by the document's parser becomes a SpecIssue that
#: the editor, the YAML import and GraphQL show
VALUE_ERRORS_SHOWN = {"aihub/domain/spec.py"}

#: calls that carry a message on to a person without raising it: callee (as written) -> the message's position.
#: A spec's issues (the editor, the YAML import, GraphQL) and the module form's per-field problems.
MESSAGE_ARGUMENTS = {
    "SpecIssue": 2,
    "_issue": 2,  # aihub/domain/bounds.py
    "self._add": 2,  # a node's issues in aihub/domain/spec.py
    "issues.add": 3,
    "self.issues.add": 3,
    "problems.add": 1,  # aihub/services/modules.py
    "self._lose": 1,  # what the editor's form cannot show (aihub/web/draft.py)
}

#: raises in these layers whose text is fixed on purpose, because no person reads it — (file, class): why.
#: A raise with a literal or f-string of a class that is neither user-facing nor listed here fails too, so a new
#: exception class has to be put on one side or the other.
INTERNAL: dict[tuple[str, str], str] = {
    # a change to a shared empty container of the engine's run state: a bug, never a user's mistake
    ("aihub/domain/compact.py", "TypeError"): "bug guard",
    # a broken invariant of the cycle search: a bug, never a user's mistake
    ("aihub/domain/dag.py", "AssertionError"): "bug guard",
    # PyYAML's exception: its context "while constructing a mapping" is PyYAML's own wording and is not shown
    # (the YAML document error shows the problem, which is msg("duplicate key {key}"))
    ("aihub/domain/spec.py", "ConstructorError"): "PyYAML's context, not shown",
    # its arguments are a kind and two statuses, not a text; services check a status before they move it and
    # answer Conflict or StaleStatus (both msg) — an IllegalTransition reaching a person is a bug
    ("aihub/domain/status.py", "IllegalTransition"): "bug guard",
    # a node's start held twice, or another attempt ended than the held start's: the engine's bug, never a user's
    ("aihub/services/status.py", "RuntimeError"): "bug guard",
    # a resolver cancelled by something else: answered as a generic INTERNAL error with the request id
    ("aihub/graphql/errors.py", "UnexpectedCancellation"): "answered as INTERNAL",
    # tells the prebuilt-query path to fall back to graphql-core's own; never leaves the server
    ("aihub/graphql/prebuilt.py", "NotPlain"): "control flow",
}


def _exception(module: object, node: ast.expr) -> object:
    """The object a raise's callee names (``Name`` or ``a.b.Name``) in its module, or None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    value = getattr(module, node.id, getattr(builtins, node.id, None))
    for part in parts:
        value = getattr(value, part, None)
    return value


def _plain_text(node: ast.expr) -> bool:
    """A message that cannot be translated: a literal, an f-string, ``a + b``, ``"…" % x``, ``"…".format()``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return _plain_text(node.left) or _plain_text(node.right)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"format", "join"}
    ):
        return isinstance(node.func.value, ast.Constant)
    return False


def _untranslatable_raises(relative: str, source: str, module: object) -> list[str]:
    """``file:line Class`` of each raise in ``source`` (the code of ``module``) with a fixed text: a user-facing
    one (a translation cannot reach it) or one not classified in :data:`INTERNAL`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args):
            continue
        if not _plain_text(node.exc.args[0]):
            continue
        callee = node.exc.func
        name = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", "")
        target = _exception(module, callee)
        shown = (
            (isinstance(target, type) and issubclass(target, USER_FACING))
            or (relative, name) in USER_FACING_BUILDERS
            or (target is ValueError and relative in VALUE_ERRORS_SHOWN)
        )
        if shown or (relative, name) not in INTERNAL:
            found.append(f"{relative}:{node.lineno} {name}")
    return found


def _untranslatable_messages(relative: str, source: str) -> list[str]:
    """``file:line callee`` of each call of :data:`MESSAGE_ARGUMENTS` given a fixed text as its message."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            callee = ast.unparse(node.func)
            position = MESSAGE_ARGUMENTS.get(callee)
            if position is not None and len(node.args) > position and _plain_text(node.args[position]):
                found.append(f"{relative}:{node.lineno} {callee}")
    return found


def _internal_raises(relative: str, source: str) -> set[tuple[str, str]]:
    """The :data:`INTERNAL` entries ``source`` uses."""
    used = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            callee = node.exc.func
            name = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", "")
            if (relative, name) in INTERNAL:
                used.add((relative, name))
    return used


def untranslatable_raises() -> list[str]:
    found = []
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            module = importlib.import_module(relative.removesuffix(".py").replace("/", "."))
            source = path.read_text(encoding="utf-8")
            found += _untranslatable_raises(relative, source, module)
            found += _untranslatable_messages(relative, source)
    return found


def test_user_facing_errors_are_built_with_msg() -> None:
    assert untranslatable_raises() == []


def test_every_internal_exception_listed_is_still_raised() -> None:
    """A stale entry of the allow-list would let a user-facing raise in later under an old name."""
    used = set()
    for relative, _ in INTERNAL:
        used |= _internal_raises(relative, (REPO / relative).read_text(encoding="utf-8"))
    assert used == set(INTERNAL)


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ('raise NotFound(f"run {run_id} not found", field="id")', True),
        ('raise InvalidInput("a team leader needs a team")', True),
        ('raise Conflict("run " + str(run_id) + " is running")', True),
        ('raise GitError("{} has no host".format(url))', True),
        ('raise NotFound(msg("run {run} not found", run=run_id), field="id")', False),
        ("raise InvalidInput(message, field=field)", False),
        ('raise AssertionError(f"{start!r} is not on a cycle")', True),  # not classified in this probe file
        ("raise ValueError(message)", False),
        ('problems.add("gitUrl", f"{url!r} has no host")', True),
        ('problems.add("gitUrl", msg("the git URL {url} has no host", url=url))', False),
        ('issues.add(key, "document", "", "the spec is empty")', True),
    ],
)
def test_the_guard_tells_literals_from_messages(source: str, found: bool) -> None:
    """Guards the test above: each kind of untranslatable message is found, a msg(...) or a variable is not."""
    code = (
        "from aihub.domain.git import GitError\n"
        "from aihub.domain.messages import msg\n"
        "from aihub.services.errors import Conflict, InvalidInput, NotFound\n"
        f"def probe(run_id, url, message, field, start, problems, issues, key):\n    {source}\n"
    )
    module = types.ModuleType("probe")
    exec(compile(code, "probe.py", "exec"), module.__dict__)
    relative = "aihub/services/probe.py"
    hits = _untranslatable_raises(relative, code, module) + _untranslatable_messages(relative, code)
    assert bool(hits) is found
