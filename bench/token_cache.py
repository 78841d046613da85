"""The login cache's effect on a small GraphQL query (issue 18, point 3), in one process.

Run from the repository root: ``.venv/bin/python bench/token_cache.py [--requests 300] [--rounds 6]``.
``run(id) { status }`` with a session token, through the whole application (an in-process ASGI client, so
the client's CPU is counted too), on SQLite in a fresh data dir. Rounds alternate between the cache on and
off (``tokens.cache.get`` answering nothing, so every request looks the token up as before the cache);
prints the median CPU time per request of each. docs/benchmarks.md ("API") holds the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scratch_app import scratch_app  # noqa: E402

from aihub.services import tokens  # noqa: E402

QUERY = {"query": "query($id: ID!) { run(id: $id) { status } }", "variables": {"id": "1"}}


async def main(requests: int, rounds: int) -> None:
    async with scratch_app("aihub-bench-tokens-") as (app, _user, token):
        headers = {"Authorization": f"Bearer {token}"}
        cached_get = tokens.cache.get
        modes = {"cache on": cached_get, "cache off": lambda key: None}
        cpu_ms: dict[str, list[float]] = {mode: [] for mode in modes}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for round_ in range(rounds):
                order = list(modes) if round_ % 2 == 0 else list(modes)[::-1]
                for mode in order:
                    tokens.cache.get = modes[mode]  # type: ignore[method-assign]
                    started = time.process_time()
                    for _ in range(requests):
                        response = await client.post("/graphql", json=QUERY, headers=headers)
                        response.raise_for_status()
                    cpu_ms[mode].append((time.process_time() - started) / requests * 1000)
        tokens.cache.get = cached_get  # type: ignore[method-assign]
    for mode, values in cpu_ms.items():
        rounds_text = " ".join(f"{v:.2f}" for v in values)
        print(f"{mode}: {statistics.median(values):.2f} ms CPU per request (median; rounds: {rounds_text})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
