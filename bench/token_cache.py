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
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aihub.app import create_app  # noqa: E402
from aihub.db.models import TokenKind, User  # noqa: E402
from aihub.services import tokens  # noqa: E402
from aihub.services.tokens import issue_token  # noqa: E402
from aihub.settings import Settings  # noqa: E402

QUERY = {"query": "query($id: ID!) { run(id: $id) { status } }", "variables": {"id": "1"}}


async def main(requests: int, rounds: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="aihub-bench-tokens-", dir="/var/tmp"))
    try:
        await measure(data_dir, requests, rounds)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def measure(data_dir: Path, requests: int, rounds: int) -> None:
    app = create_app(Settings(data_dir=data_dir), run_engine=False)
    async with app.router.lifespan_context(app):
        user = await User.get(username="admin")
        token, _ = await issue_token(user.id, TokenKind.SESSION)
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
