"""Container executor benchmark (issue 16): what the engine adds to the bare engine command, per node.

Run from the repository root: ``.venv/bin/python bench/containers.py [--nodes N]``. Needs a working podman
(or docker: ``--engine docker``); the base image is the tests' offline busybox image (``tests/containers``).
docs/benchmarks.md holds the figures.

- **bare**: ``podman run --rm --network host IMAGE true``, N times one after the other: the engine command alone.
- **engine**: a chain of N ``true`` nodes through the whole engine with ``AIHUB_EXECUTOR=container`` (SQLite,
  in-process bus): ``create_run`` → the run's SUCCEEDED event, divided by N. Each node is one container
  started after its parent's ended, so the figure is the per-node price of start→exit plus the hand-off.
- **hand-off**: in that chain, parent ``finished_at`` (its report) → child ``started_at`` (taken before the
  child's ``create``), from the Attempt rows.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aihub.db.models import Attempt  # noqa: E402
from aihub.domain.status import RunStatus  # noqa: E402
from aihub.runtime import open_runtime  # noqa: E402
from aihub.services.runs import create_run  # noqa: E402
from aihub.services.users import create_user  # noqa: E402
from aihub.services.workflows import create_workflow  # noqa: E402
from aihub.settings import Settings  # noqa: E402
from tests.containers.support import ensure_busybox_image, find_engine  # noqa: E402


def bare(cli: str, image: str, count: int) -> float:
    """Seconds per ``run --rm IMAGE true``."""
    started = time.perf_counter()
    for _ in range(count):
        subprocess.run(
            [cli, "run", "--rm", "--network", "host", image, "true"], check=True, capture_output=True
        )
    return (time.perf_counter() - started) / count


async def engine(engine_name: str, image: str, count: int) -> tuple[float, list[float]]:
    """(seconds per node of a chain of ``count`` nodes, hand-off seconds between consecutive nodes)."""
    with tempfile.TemporaryDirectory(prefix="aihub-bench-", dir="/var/tmp") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            executor="container",
            container_engine=engine_name,
            container_default_image=image,
        )
        async with open_runtime(settings) as rt:
            user = await create_user("bench", "bench-password-1")
            nodes = [
                {"name": f"n{i}", "command": "true", **({"depends_on": [f"n{i - 1}"]} if i else {})}
                for i in range(count)
            ]
            version = await create_workflow(user, {"name": "chain", "nodes": nodes})
            sub = rt.bus.subscribe(None)
            started = time.perf_counter()
            run = await create_run(rt.bus, user, version.id)
            async for event in sub:
                if event.run_id == run.id and event.node is None and RunStatus(event.run_status).is_terminal:
                    assert RunStatus(event.run_status) is RunStatus.SUCCEEDED, event
                    break
            wall = time.perf_counter() - started
            sub.close()
            attempts = {
                a.node_run.name: a  # type: ignore[attr-defined]
                for a in await Attempt.filter(node_run__run_id=run.id).prefetch_related("node_run")
            }
            handoffs = [
                (attempts[f"n{i}"].started_at - attempts[f"n{i - 1}"].finished_at).total_seconds()
                for i in range(1, count)
            ]
            await rt.executor.settle()  # type: ignore[attr-defined]
    return wall / count, handoffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--engine", choices=["podman", "docker"], default=None)
    args = parser.parse_args()
    found, reason = find_engine()
    if found is None:
        sys.exit(reason)
    if args.engine and args.engine != found.name:
        sys.exit(f"--engine {args.engine}: the working engine here is {found.name}")
    image = ensure_busybox_image(found)
    bare(found.cli, image, 2)  # warm the engine's caches
    per_bare = bare(found.cli, image, args.nodes)
    per_node, handoffs = asyncio.run(engine(found.name, image, args.nodes))
    print(f"engine {found.name}, {args.nodes} nodes, image {image}")
    print(f"bare `{found.name} run --rm IMAGE true`: {per_bare * 1000:.0f} ms per container")
    print(
        f"engine chain: {per_node * 1000:.0f} ms per node ({(per_node / per_bare - 1) * 100:+.0f}% over bare)"
    )
    print(
        f"hand-off parent end -> child start: median {statistics.median(handoffs) * 1000:.0f} ms, "
        f"max {max(handoffs) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
