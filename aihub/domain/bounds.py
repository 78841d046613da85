"""Bounds of what a workflow spec may ask of the platform, checked when a spec is saved (not when a stored one
is read back, so lowering a limit never breaks existing versions).

A node's command is one argv item of ``sh -c`` and each env variable one ``NAME=value`` string of the process'
environment: Linux refuses any single one of ``MAX_ARG_STRLEN`` (131072) bytes or more, and all of them
together beyond ``ARG_MAX``, with "Argument list too long" at launch. A NUL byte cannot be in either. Names that
start with ``_aihub_`` (any case) belong to the platform's own wrapper scripts. The size of the document and
its number of nodes are bounded so that one save cannot hold the server for long.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aihub.domain.messages import msg
from aihub.domain.spec import SpecError, SpecIssue, WorkflowSpec

#: the kernel's limit of one argv or environment string, its terminating NUL included
MAX_ARG_STRLEN = 131_072
#: prefix of the wrapper scripts' own shell variables (local shim, Kubernetes pod wrapper)
RESERVED_PREFIX = "_aihub_"


@dataclass(frozen=True)
class SpecLimits:
    """What one spec may hold (settings ``AIHUB_MAX_SPEC_BYTES``, ``AIHUB_MAX_SPEC_NODES``)."""

    max_bytes: int = 4 * 1024**2
    max_nodes: int = 10_000
    #: a command's UTF-8 bytes; under ``MAX_ARG_STRLEN``
    max_command_bytes: int = MAX_ARG_STRLEN - 1
    #: all of one node's ``NAME=value`` strings together (env and literal inputs); well under ``ARG_MAX``
    max_env_bytes: int = 1024**2
    #: one run param's value
    max_param_bytes: int = 64 * 1024


DEFAULT_LIMITS = SpecLimits()


def _issue(location: str, field: str, message: str) -> SpecIssue:
    return SpecIssue(location, field, msg("{field}: {message}", field=field, message=message))


def check_document(source: str | bytes | Mapping[str, Any], limits: SpecLimits = DEFAULT_LIMITS) -> None:
    """Cheap checks before a spec is parsed: its size in bytes and its number of nodes."""
    if isinstance(source, Mapping):
        nodes = source.get("nodes")
        _check_node_count(len(nodes) if isinstance(nodes, list) else 0, limits)
        size = len(json.dumps(source, ensure_ascii=False, default=str).encode())
    else:
        size = len(source.encode() if isinstance(source, str) else source)
    if size > limits.max_bytes:
        raise SpecError(
            [
                _issue(
                    "document",
                    "spec",
                    msg(
                        "the spec is {size} bytes, more than the limit of {limit} (AIHUB_MAX_SPEC_BYTES)",
                        size=size,
                        limit=limits.max_bytes,
                    ),
                )
            ]
        )


def _check_node_count(count: int, limits: SpecLimits) -> None:
    if count > limits.max_nodes:
        raise SpecError(
            [
                _issue(
                    "document",
                    "nodes",
                    msg(
                        "{count} nodes, more than the limit of {limit} (AIHUB_MAX_SPEC_NODES)",
                        count=count,
                        limit=limits.max_nodes,
                    ),
                )
            ]
        )


def check_spec(spec: WorkflowSpec, limits: SpecLimits = DEFAULT_LIMITS) -> None:
    """Every bound of a parsed spec; raises :class:`SpecError` listing every issue."""
    _check_node_count(len(spec.nodes), limits)
    issues = [
        *(
            issue
            for index, param in enumerate(spec.params)
            for issue in _param_issues(index, param.name, param.default, limits)
        ),
        *(issue for index, node in enumerate(spec.nodes) for issue in _node_issues(index, node, limits)),
    ]
    if issues:
        raise SpecError(issues)


def _param_issues(index: int, name: str, default: str | None, limits: SpecLimits) -> Iterator[SpecIssue]:
    if default is not None:
        yield from _value_issues(f"params[{index}] '{name}'", "default", default, limits.max_param_bytes)


def _node_issues(index: int, node: Any, limits: SpecLimits) -> Iterator[SpecIssue]:
    where = f"nodes[{index}] '{node.name}'"
    yield from _value_issues(where, "command", node.command, limits.max_command_bytes)
    yield from _value_issues(where, "image", node.image, 4096)
    variables = [(f"env.{key}", f"env.{key}", key, value) for key, value in node.env.items()]
    variables += [
        (f"inputs[{i}].name", f"inputs[{i}].value", decl.name, decl.value or "")
        for i, decl in enumerate(node.inputs)
    ]
    total = 0
    for name_field, value_field, name, value in variables:
        if name.lower().startswith(RESERVED_PREFIX):
            yield _issue(
                where,
                name_field,
                msg(
                    "{name} starts with {prefix}, which is reserved for the platform's wrapper scripts",
                    name=repr(name),
                    prefix=RESERVED_PREFIX,
                ),
            )
        total += len(name.encode()) + len(value.encode()) + 2  # NAME=value and its NUL
        yield from _value_issues(where, value_field, value, MAX_ARG_STRLEN - 2 - len(name.encode()))
    if total > limits.max_env_bytes:
        yield _issue(
            where,
            "env",
            msg(
                "the node's variables take {size} bytes, more than the limit of {limit}",
                size=total,
                limit=limits.max_env_bytes,
            ),
        )


def _value_issues(where: str, field: str, value: str, max_bytes: int) -> Iterator[SpecIssue]:
    if "\x00" in value:
        yield _issue(where, field, msg("contains a NUL character, which no command or variable can hold"))
    size = len(value.encode())
    if size > max_bytes:
        yield _issue(
            where, field, msg("is {size} bytes, more than the limit of {limit}", size=size, limit=max_bytes)
        )


def check_run_params(values: Mapping[str, str], limits: SpecLimits = DEFAULT_LIMITS) -> None:
    """A run's param values: no NUL, none over ``max_param_bytes``."""
    issues = [
        issue
        for name, value in values.items()
        for issue in _value_issues(f"param '{name}'", name, value, limits.max_param_bytes)
    ]
    if issues:
        raise SpecError(issues)
