"""The run page's tabs under the container executor: the image is used, the container tab shows the engine's
inspect data, the events tab the engine's events."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

from aihub.db.models import User
from aihub.services.workflows import create_workflow
from aihub.settings import Settings
from tests.containers.support import Engine
from tests.engine.support import wait_for_run
from tests.web.conftest import _fast_password_hashing, web  # noqa: F401  (the in-process web app)
from tests.web.webapp import ADMIN_PASSWORD, Web


@pytest.fixture
def settings(tmp_path: Path, container_engine: Engine, busybox_image: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        admin_password=ADMIN_PASSWORD,
        stop_grace_seconds=2.0,
        executor="container",
        container_engine=container_engine.name,  # type: ignore[arg-type]
        container_default_image=busybox_image,
    )


async def test_the_tabs_show_the_container(web: Web, busybox_image: str, container_engine: Engine) -> None:  # noqa: F811
    client = await web.client("alice")
    user = await User.get(username="alice")
    spec = {"name": "boxed", "nodes": [{"name": "n", "image": busybox_image, "command": "echo hi"}]}
    version = await create_workflow(user, spec)
    response = await client.post(f"/versions/{version.id}/run", {"name": "in a box"})
    run_url = response.headers["location"]
    await wait_for_run(web.rt, int(run_url.rsplit("/", 1)[1]))
    details = html.unescape((await client.get(f"{run_url}/nodes/n?tab=details", htmx=True)).text)
    assert busybox_image in details and "the image is not used" not in details
    await web.rt.executor.settle()  # type: ignore[attr-defined]
    tab = html.unescape((await client.get(f"{run_url}/nodes/n?tab=container", htmx=True)).text)
    for fact in (
        "<dd>container</dd>",
        f"<dd>{container_engine.name}</dd>",
        "exited with code 0",
        busybox_image,
        "MiB",
    ):
        assert fact in tab, (fact, tab)
    events = html.unescape((await client.get(f"{run_url}/nodes/n?tab=events", htmx=True)).text)
    for reason in ("create", "start", "died"):
        assert f">{reason}<" in events, (reason, events)
