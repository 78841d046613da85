"""Times validation of generated 5,000-node specs (a chain and a wide fan-in); run: python bench/spec_validate.py."""

from __future__ import annotations

import time
from typing import Any

from aihub.domain.spec import parse_spec

N = 5_000


def chain(n: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"name": "n0", "command": "echo", "outputs": [_out()]}]
    for i in range(1, n):
        nodes.append({"name": f"n{i}", "command": "echo", "inputs": [_ref(i - 1)], "outputs": [_out()]})
    return {"name": "chain", "nodes": nodes}


def fan_in(n: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"name": f"n{i}", "command": "echo", "outputs": [_out()]} for i in range(n - 1)
    ]
    nodes.append({"name": "sink", "command": "echo", "inputs": [_ref(i, f"x{i}") for i in range(n - 1)]})
    return {"name": "fan-in", "nodes": nodes}


def _out() -> dict[str, str]:
    return {"name": "out", "path": "/tmp/out.txt", "type": "text"}


def _ref(i: int, name: str = "x") -> dict[str, str]:
    return {"name": name, "from": f"n{i}.out"}


def main() -> None:
    for label, build in (("chain", chain), ("fan-in", fan_in)):
        data = build(N)
        started = time.perf_counter()
        spec = parse_spec(data)
        parsed = time.perf_counter()
        spec.topological_order()
        text = spec.to_yaml()
        dumped = time.perf_counter()
        parse_spec(text)
        reparsed = time.perf_counter()
        print(
            f"{label:7} {N} nodes: parse_spec(dict) {parsed - started:.3f}s, "
            f"topological_order + to_yaml {dumped - parsed:.3f}s, parse_spec(yaml) {reparsed - dumped:.3f}s"
        )


if __name__ == "__main__":
    main()
