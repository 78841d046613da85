"""Reading a module's Dockerfile: the checks of the module contract and what the local backend needs.

A module's image must start with an exec-form ``ENTRYPOINT`` (a JSON array) so the platform can append the
module's inputs as ``--name=value`` argv items, and must not use ``CMD`` (SPEC.md §5, the seed's developer
guide). :func:`parse_dockerfile` checks both and returns, for the final stage, the entrypoint, the working
directory and the ``COPY``/``ADD`` instructions that take files from the build context — what the local build
backend replays onto a directory of this host to run the entrypoint without building an image.

Deliberately small, but lines are split into instructions exactly as BuildKit does (continuations join
without a space, any blank separates a keyword), so no spelling hides a ``CMD``: line continuations, comments,
the ``escape`` parser directive, stages (``FROM … AS name``,
a stage based on an earlier one inherits its state) and the flags of ``COPY``/``ADD`` are understood; variables
(``$VAR``) are not expanded and heredocs are not supported. ``RUN`` steps are never executed locally.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field, replace

__all__ = ["CopyStep", "DockerfileError", "DockerfileInfo", "parse_dockerfile"]

_DIRECTIVE = re.compile(r"#\s*(\w+)\s*=\s*(\S+)\s*$")
_URL_SOURCE = re.compile(r"^(https?://|git@|ssh://)")
#: what BuildKit's parser counts as whitespace between a keyword and its arguments
_BLANKS = " \t\v\f\r"
_BLANK_RUN = re.compile(r"[ \t\v\f\r]+")


class DockerfileError(ValueError):
    """The Dockerfile breaks the module contract; the message tells the module author what to change."""


@dataclass(frozen=True)
class CopyStep:
    """``COPY``/``ADD`` of build-context files: sources relative to the context, destination absolute."""

    line: int
    sources: tuple[str, ...]
    dest: str  # absolute; a trailing "/" is kept (it means "into this directory")


@dataclass(frozen=True)
class DockerfileInfo:
    entrypoint: tuple[str, ...]
    workdir: str = "/"
    copies: tuple[CopyStep, ...] = ()
    #: things the local backend cannot reproduce (RUN steps, COPY --from, remote ADD, variables)
    notes: tuple[str, ...] = ()


@dataclass
class _Stage:
    name: str = ""
    entrypoint: tuple[str, ...] | None = None
    workdir: str = "/"
    copies: list[CopyStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def derived(self, name: str) -> _Stage:
        return replace(self, name=name, copies=list(self.copies), notes=list(self.notes))


def _escape_char(lines: list[str]) -> str:
    """The ``escape`` parser directive: directives come first, before any instruction, comment or blank line."""
    escape = "\\"
    for raw in lines:
        match = _DIRECTIVE.match(raw.strip())
        if not match:
            break
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            escape = match.group(2)
    return escape


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(line number, instruction) pairs, joined as BuildKit joins them: an escape character at the end of a
    line (trailing blanks allowed) is removed with the line break and the next line follows *directly* —
    ``C\\`` then ``MD`` is ``CMD`` — while comment and blank lines inside a continued instruction are skipped."""
    lines = text.splitlines()
    continued = re.compile(re.escape(_escape_char(lines)) + r"[ \t]*$")
    result: list[tuple[int, str]] = []
    current: str | None = None
    start = 0
    for number, raw in enumerate(lines, 1):
        if current is None:
            line = raw.lstrip(_BLANKS)
            if not line or line.startswith("#"):
                continue
            start, current = number, ""
        else:
            line = raw
            if not line.strip(_BLANKS) or line.lstrip(_BLANKS).startswith("#"):
                continue
        joined = continued.sub("", line)
        current += joined
        if joined == line:
            result.append((start, current.strip(_BLANKS)))
            current = None
    if current is not None and current.strip(_BLANKS):
        result.append((start, current.strip(_BLANKS)))
    return result


def _split_instruction(instruction: str) -> tuple[str, str]:
    """Keyword and arguments, split at the first run of blanks (a tab counts: ``CMD\t[...]`` is ``CMD``)."""
    parts = _BLANK_RUN.split(instruction, maxsplit=1)
    return parts[0].upper(), (parts[1] if len(parts) > 1 else "").strip(_BLANKS)


def _exec_form(keyword: str, line: int, args: str) -> tuple[str, ...]:
    example = f'{keyword} ["python3", "main.py"]'
    if not args.startswith("["):
        raise DockerfileError(
            f"line {line}: {keyword} must use the exec form (a JSON array), e.g. {example}; "
            f"the shell form {keyword} {args} cannot take the module's --name=value arguments"
        )
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        raise DockerfileError(
            f"line {line}: {keyword} {args} is not a valid JSON array; write it like {example} "
            "(double quotes, commas between items)"
        ) from None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise DockerfileError(
            f"line {line}: {keyword} must be a non-empty JSON array of strings, e.g. {example}"
        )
    return tuple(value)


def _absolute(base: str, path: str) -> str:
    joined = posixpath.join(base, path)
    normal = posixpath.normpath(joined)
    return "/" + normal.lstrip("/")


def _copy_step(stage: _Stage, keyword: str, line: int, args: str) -> None:
    words = args.split()
    flags = [w for w in words if w.startswith("--")]
    rest = args
    for flag in flags:  # flags come before the paths
        if not rest.startswith(flag):
            break
        rest = rest[len(flag) :].lstrip()
    if any(f.startswith("--from=") for f in flags):
        stage.notes.append(
            f"line {line}: {keyword} --from copies from another image or stage; skipped locally"
        )
        return
    if rest.startswith("<<"):
        stage.notes.append(f"line {line}: {keyword} heredocs are not supported locally; skipped")
        return
    if rest.startswith("["):
        try:
            paths = json.loads(rest)
        except json.JSONDecodeError:
            raise DockerfileError(f"line {line}: {keyword} {rest} is not a valid JSON array") from None
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise DockerfileError(f"line {line}: {keyword} needs a JSON array of strings")
    else:
        paths = rest.split()
    if len(paths) < 2:
        raise DockerfileError(f"line {line}: {keyword} needs at least one source and a destination")
    *sources, dest = paths
    if any("$" in p for p in paths):
        stage.notes.append(f"line {line}: variables in {keyword} are not expanded locally")
    local = [s for s in sources if not _URL_SOURCE.match(s)]
    if len(local) < len(sources):
        stage.notes.append(f"line {line}: ADD of a URL is not fetched locally; skipped")
    if not local:
        return
    absolute = _absolute(stage.workdir, dest)
    if dest.endswith("/") and absolute != "/":
        absolute += "/"
    stage.copies.append(CopyStep(line=line, sources=tuple(local), dest=absolute))


def parse_dockerfile(text: str) -> DockerfileInfo:
    """Check the module contract and describe the final stage; raises :class:`DockerfileError`."""
    stages: list[_Stage] = []
    for line, instruction in _logical_lines(text):
        keyword, args = _split_instruction(instruction)
        if keyword == "FROM":
            stages.append(_new_stage(stages, args))
        elif stages:
            _apply(stages[-1], keyword, line, args)
        elif keyword != "ARG":  # ARG before FROM is allowed
            raise DockerfileError(f"line {line}: the Dockerfile must start with FROM (found {keyword})")
    if not stages:
        raise DockerfileError("the Dockerfile has no FROM instruction")
    stage = stages[-1]
    if stage.entrypoint is None:
        raise DockerfileError(
            'the Dockerfile has no ENTRYPOINT; add one in the exec form, e.g. ENTRYPOINT ["python3", "main.py"]'
        )
    return DockerfileInfo(
        entrypoint=stage.entrypoint,
        workdir=stage.workdir,
        copies=tuple(stage.copies),
        notes=tuple(stage.notes),
    )


def _new_stage(stages: list[_Stage], args: str) -> _Stage:
    """The stage a ``FROM`` starts: a fresh one, or one derived from an earlier stage it names."""
    parts = [p for p in args.split() if not p.startswith("--")]
    name = parts[2].lower() if len(parts) >= 3 and parts[1].lower() == "as" else ""
    base = next((s for s in stages if parts and s.name and s.name == parts[0].lower()), None)
    return base.derived(name) if base else _Stage(name=name)


def _apply(stage: _Stage, keyword: str, line: int, args: str) -> None:
    """What an instruction after ``FROM`` does to ``stage`` (as far as the module contract cares)."""
    if keyword == "CMD":
        raise DockerfileError(
            f"line {line}: CMD is not allowed in a module's Dockerfile; put the whole start command in "
            'ENTRYPOINT, e.g. ENTRYPOINT ["python3", "main.py"] (the platform appends --name=value arguments)'
        )
    if keyword == "ENTRYPOINT":
        stage.entrypoint = _exec_form(keyword, line, args)
    elif keyword == "WORKDIR":
        if "$" in args:
            stage.notes.append(f"line {line}: variables in WORKDIR are not expanded locally")
        stage.workdir = _absolute(stage.workdir, args.strip("\"'"))
    elif keyword in ("COPY", "ADD"):
        _copy_step(stage, keyword, line, args)
    elif keyword == "RUN":
        stage.notes.append(f"line {line}: RUN steps are not executed by the local backend")
