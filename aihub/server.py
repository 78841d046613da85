"""``aihub serve``: uvicorn around ``create_app`` with graceful shutdown (running nodes keep running)."""

from __future__ import annotations

import logging

import uvicorn

from aihub.app import create_app
from aihub.settings import Settings


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    print(f"AIHub Workflow on http://{settings.host}:{settings.port}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=10)
