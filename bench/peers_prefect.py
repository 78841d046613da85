"""The Prefect side of ``bench/peers.py``; runs inside the Prefect virtualenv that ``peers.py`` makes.

``python peers_prefect.py SHAPE.json WORKERS`` runs the shape (``{"node": ["parent", ...]}``, in topological
order) as one Prefect 3 flow: one task per node, each running ``sh -c true`` in a subprocess, on a
``ThreadPoolTaskRunner`` with ``WORKERS`` threads (the same parallelism as our engine's 2 CPU slots). It prints
one JSON object: the flow's wall time and, per node, the wall-clock time just before its ``sh`` started and
just after it ended (from which ``peers.py`` computes the hand-off, parent exit -> child start).

Standard library and Prefect only: this file never imports aihub.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner


@task
def noop() -> tuple[float, float]:
    started = time.time()
    subprocess.run(["sh", "-c", "true"], check=True)
    return started, time.time()


def main() -> None:
    with open(sys.argv[1]) as f:
        parents: dict[str, list[str]] = json.load(f)
    workers = int(sys.argv[2])

    @flow(name="peers-bench", task_runner=ThreadPoolTaskRunner(max_workers=workers), persist_result=False)
    def shape() -> dict[str, tuple[float, float]]:
        futures = {}
        for node, ps in parents.items():
            futures[node] = noop.with_options(name=node).submit(wait_for=[futures[p] for p in ps])
        return {node: future.result() for node, future in futures.items()}

    began = time.time()
    times = shape()
    print(json.dumps({"flow_s": time.time() - began, "times": times}))


if __name__ == "__main__":
    main()
