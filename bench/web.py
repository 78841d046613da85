"""Web UI figures for a large DAG: page size and server render time of the run and version pages of a
2,000-node workflow (20 layers x 100 nodes, node i -> node i of the next layer, plus a fan-in node), and the
size of the live (SSE) update sent when one node changes.

    .venv/bin/python bench/web.py [--layers 20] [--width 100] [--repeat 5]

The editor's canvas with a 300-node version (15 layers x 20, positions saved): the editor page (copy) and the
version page, in-process and in Chromium (page load), and a node dragged in it: the time from mouse-up to the
server's answer swapped in (``--canvas 300``; add ``--no-browser`` for the in-process figures only).

The run is created without the engine (``create_app(settings, run_engine=False)``): nothing executes, the
figures are the pages' alone. In-process (httpx ASGI transport, SQLite in a temporary directory).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from aihub.app import create_app
from aihub.db.models import NodeRun, User
from aihub.services.runs import create_run
from aihub.services.workflows import create_workflow
from aihub.settings import Settings

PASSWORD = "admin-password-1"
CHIP = 'class="chip-wrap"'


def big_spec(layers: int, width: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    for layer in range(layers):
        for i in range(width):
            node: dict[str, Any] = {"name": f"n{layer:02d}_{i:03d}", "image": "busybox", "command": "true"}
            if layer:
                node["depends_on"] = [f"n{layer - 1:02d}_{i:03d}"]
            nodes.append(node)
    last = [f"n{layers - 1:02d}_{i:03d}" for i in range(width)]
    nodes.append({"name": "fan_in", "image": "busybox", "command": "true", "depends_on": last})
    return {"name": "big", "nodes": nodes}


async def log_in(http: httpx.AsyncClient) -> None:
    await http.get("/login")
    form = {"username": "admin", "password": PASSWORD, "next": "/", "csrf_token": http.cookies["aihub_csrf"]}
    assert (await http.post("/login", data=form)).status_code == 303


async def timed_get(http: httpx.AsyncClient, url: str, repeat: int) -> tuple[int, float, str]:
    times, body = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        response = await http.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, response.status_code
        body = response.text
    return len(body.encode()), statistics.median(times), body


async def main(layers: int, width: int, repeat: int) -> None:
    from aihub.web.live import node_update
    from aihub.web.runs import run_context

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", admin_password=PASSWORD)
        app = create_app(settings, run_engine=False)
        async with app.router.lifespan_context(app):
            user = await User.get(username="admin")
            spec = big_spec(layers, width)
            version = await create_workflow(user, spec)
            run = await create_run(app.state.runtime.bus, user, version.id, name="big")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                await log_in(http)
                n = len(spec["nodes"])
                print(f"nodes: {n}, edges: {(layers - 1) * width + width}")
                for label, url in (
                    ("run page", f"/runs/{run.id}"),
                    ("version page", f"/versions/{version.id}"),
                ):
                    size, ms, body = await timed_get(http, url, repeat)
                    print(
                        f"{label}: {size:,} bytes, {body.count('<svg')} <svg>, {body.count('<path')} <path>,"
                        f" {body.count('<rect')} <rect>; median {ms:.0f} ms over {repeat}"
                    )
                size, ms, _ = await timed_get(http, f"/runs/{run.id}/nodes/n10_050", repeat)
                print(f"node panel: {size:,} bytes, median {ms:.0f} ms")
                size, ms, body = await timed_get(http, f"/runs/{run.id}/groups/10", repeat)
                print(f"one layer's node list: {size:,} bytes, {body.count(CHIP)} chips, median {ms:.0f} ms")
                ctx = await run_context(user, run.id)
                for name in ("n10_050", "fan_in"):
                    row = await NodeRun.get(run_id=run.id, name=name)
                    t0 = time.perf_counter()
                    update = node_update(run.id, row, ctx["graph"], ctx["statuses"])
                    ms = (time.perf_counter() - t0) * 1000
                    events = [line for line in update.splitlines() if line.startswith("event:")]
                    print(
                        f"SSE update for {name}: {len(update.encode())} bytes ({', '.join(events)}), {ms:.2f} ms"
                    )


# ------------------------------------------------------------------------------------------------ the canvas

REPO = Path(__file__).resolve().parents[1]


def canvas_spec(count: int, width: int = 20) -> dict[str, Any]:
    """``count`` nodes in layers of ``width``, each depending on one node of the layer above, with positions."""
    nodes: list[dict[str, Any]] = []
    for i in range(count):
        layer, col = divmod(i, width)
        node: dict[str, Any] = {"name": f"n{i:03d}", "image": "busybox", "command": "echo $x"}
        node["inputs"] = [{"name": "x", "value": "1"}]
        if layer:
            node["depends_on"] = [f"n{i - width - (1 if col else 0):03d}"]
        node["ui"] = {"x": 16 + col * 194, "y": 16 + layer * 108}
        nodes.append(node)
    return {"name": "canvas-bench", "nodes": nodes}


async def canvas_main(count: int, repeat: int) -> None:
    import sys

    sys.path.insert(0, str(REPO))
    from tests.web.forms import Form

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", admin_password=PASSWORD)
        app = create_app(settings, run_engine=False)
        async with app.router.lifespan_context(app):
            user = await User.get(username="admin")
            version = await create_workflow(user, canvas_spec(count))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                await log_in(http)
                print(f"in-process, {count} nodes, median of {repeat}:")
                for label, url in (
                    ("editor (copy)", f"/versions/{version.id}/copy"),
                    ("version page", f"/versions/{version.id}"),
                ):
                    size, ms, _ = await timed_get(http, url, repeat)
                    print(f"  {label}: {size:,} bytes, median {ms:.0f} ms")
                fields = Form((await http.get(f"/versions/{version.id}/copy")).text, "editor-body")
                for label, act in (
                    ("a node moved (204, no re-render)", f"move-{count // 2}"),
                    ("a node selected", f"select-{count // 2}"),
                ):
                    times = []
                    for i in range(repeat):
                        fields.set(f"nodes-{count // 2}-x", str(400 + i)).set("act", act)
                        t0 = time.perf_counter()
                        response = await http.post(
                            f"/versions/{version.id}/copy", data=fields.data(), headers={"HX-Request": "true"}
                        )
                        times.append((time.perf_counter() - t0) * 1000)
                        assert response.status_code in (200, 204), response.status_code
                    print(
                        f"  {label}: the editor's post of every field, {len(response.content):,} bytes back,"
                        f" median {statistics.median(times):.0f} ms"
                    )


def canvas_browser(count: int, repeat: int) -> None:
    """The same in Chromium against ``aihub serve``: page loads and mouse-up -> the answer swapped in."""
    import re
    import sys

    import yaml
    from playwright.sync_api import expect, sync_playwright

    sys.path.insert(0, str(REPO / "tests" / "web"))
    from webserver import ADMIN_PASSWORD, web_server

    with web_server() as server, httpx.Client(base_url=server.url) as http:
        http.get("/login")
        csrf = http.cookies["aihub_csrf"]
        login = {"username": "admin", "password": ADMIN_PASSWORD, "next": "/", "csrf_token": csrf}
        assert http.post("/login", data=login).status_code == 303
        text = yaml.safe_dump(canvas_spec(count), sort_keys=False)
        saved = http.post("/workflows/new", data={"spec": text, "csrf_token": http.cookies["aihub_csrf"]})
        assert saved.status_code == 303, saved.text[:500]
        version = saved.headers["location"]
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = chromium.new_page(base_url=server.url, viewport={"width": 1400, "height": 900})
            page.goto("/login")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Runs")).to_be_visible()
            print(f"Chromium, {count} nodes, median of {repeat}:")
            for label, url in (("editor (copy)", f"{version}/copy"), ("version page", version)):
                loads = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    page.goto(url, wait_until="load")
                    loads.append((time.perf_counter() - t0) * 1000)
                print(f"  {label}: load event after median {statistics.median(loads):.0f} ms")
            page.goto(f"{version}/copy")
            body = page.locator("#cbody-0")
            busy = page.locator("#editor")
            drags = []
            for i in range(repeat):
                box = body.bounding_box()
                assert box is not None
                x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(x, y)
                page.mouse.down()
                page.mouse.move(x + 30 + i, y + 20, steps=5)
                with page.expect_response(lambda r: r.request.method == "POST") as answer:
                    t0 = time.perf_counter()
                    page.mouse.up()
                answer.value.finished()
                expect(busy).not_to_have_class(re.compile(r"\bhtmx-request\b"))
                drags.append((time.perf_counter() - t0) * 1000)
            print(
                f"  drag a node: mouse-up -> the server's answer (204), median {statistics.median(drags):.0f} ms"
            )
            clicks = []
            for i in range(repeat):
                target = page.locator(f"#cbody-{i + 1}")
                box = target.bounding_box()
                assert box is not None
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                page.mouse.down()
                with page.expect_response(lambda r: r.request.method == "POST") as answer:
                    t0 = time.perf_counter()
                    page.mouse.up()
                answer.value.finished()
                expect(busy).not_to_have_class(re.compile(r"\bhtmx-request\b"))
                expect(page.locator(f"#nodes-{i + 1}-name")).to_be_visible()
                clicks.append((time.perf_counter() - t0) * 1000)
            print(
                f"  click a node: mouse-up -> its panel swapped in (the side panel, out of band),"
                f" median {statistics.median(clicks):.0f} ms"
            )
            chromium.close()


# ------------------------------------------------------------------------------------------------ list pages

LIST_PAGES = ("workflows", "runs", "modules", "reviews", "admin users", "admin teams")


async def seed_lists(rows: int) -> None:
    """``rows`` users, teams, workflows (one version each), runs, modules (half published) and reviews, written
    with bulk inserts (the services would take minutes); owned by the admin or by the seeded users."""
    from aihub.db.models import (
        BuildStatus,
        Category,
        Module,
        ModuleBuild,
        ModuleReview,
        ModuleStatus,
        ReviewStatus,
        Run,
        RunStatus,
        Team,
        Workflow,
        WorkflowVersion,
    )

    admin = await User.get(username="admin")
    await Team.bulk_create([Team(name=f"team-{i:05d}") for i in range(rows)], batch_size=1000)
    await User.bulk_create([User(username=f"user-{i:05d}") for i in range(rows)], batch_size=1000)
    await Workflow.bulk_create(
        [Workflow(name=f"wf-{i:05d}", description=f"workflow {i}", owner=admin) for i in range(rows)],
        batch_size=1000,
    )
    workflows = await Workflow.all().order_by("id")
    spec = {"name": "x", "nodes": [{"name": "only", "command": "true"}]}
    await WorkflowVersion.bulk_create(
        [WorkflowVersion(workflow=w, number=1, spec=spec, created_by=admin) for w in workflows],
        batch_size=1000,
    )
    versions = await WorkflowVersion.all().order_by("id")
    statuses = list(RunStatus)
    await Run.bulk_create(
        [
            Run(
                name=f"run-{i:05d}",
                version=v,
                workflow_id=v.workflow_id,
                owner=admin,
                status=statuses[i % len(statuses)],
            )
            for i, v in enumerate(versions)
        ],
        batch_size=1000,
    )
    category = await Category.create(name="bench")
    await Module.bulk_create(
        [
            Module(
                name=f"mod-{i:05d}",
                category=category,
                owner=admin,
                git_url="https://example.com/x.git",
                description=f"module {i}",
                status=ModuleStatus.PUBLISHED if i % 2 else ModuleStatus.BUILT,
            )
            for i in range(rows)
        ],
        batch_size=1000,
    )
    modules = await Module.all().order_by("id")
    await ModuleBuild.bulk_create(
        [
            ModuleBuild(
                module=m,
                number=1,
                status=BuildStatus.BUILT,
                published=bool(i % 2),
                snapshot={"description": m.description},
            )
            for i, m in enumerate(modules)
        ],
        batch_size=1000,
    )
    builds = await ModuleBuild.all().order_by("id")
    await ModuleReview.bulk_create(
        [
            ModuleReview(
                module_id=b.module_id,
                build=b,
                requester=admin,
                status=ReviewStatus.APPROVED if i % 2 else ReviewStatus.PENDING,
            )
            for i, b in enumerate(builds)
        ],
        batch_size=1000,
    )


def _last_cursor(kind: str) -> str:
    from aihub.services.queries import encode_cursor

    return encode_cursor(kind, 60)  # the rows below id 60: the last page of 10,000


async def lists_main(rows: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", admin_password=PASSWORD)
        app = create_app(settings, run_engine=False)
        async with app.router.lifespan_context(app):
            t0 = time.perf_counter()
            await seed_lists(rows)
            print(f"seeded {rows:,} rows of each list in {time.perf_counter() - t0:.1f} s")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                await log_in(http)
                last = max(rows // 50, 1)
                pages = {
                    "workflows": ("/workflows", f"/workflows?after={_last_cursor('workflow')}"),
                    "runs": ("/runs", f"/runs?after={_last_cursor('run')}"),
                    "modules": ("/modules", f"/modules?page={last}"),
                    "reviews": ("/reviews", f"/reviews?page={last}"),
                    "admin users": ("/admin/users", f"/admin/users?page={last}"),
                    "admin teams": ("/admin/teams", f"/admin/teams?page={last}"),
                }
                for label in LIST_PAGES:
                    first, deep = pages[label]
                    size1, ms1, _ = await timed_get(http, first, repeat)
                    size2, ms2, _ = await timed_get(http, deep, repeat)
                    print(
                        f"{label}: first page {ms1:.0f} ms ({size1:,} bytes), last page {ms2:.0f} ms"
                        f" ({size2:,} bytes); median over {repeat}"
                    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--lists",
        type=int,
        metavar="ROWS",
        help="instead: the list pages' first and last page with ROWS rows each",
    )
    parser.add_argument(
        "--canvas", type=int, metavar="NODES", help="instead: the editor's canvas with NODES nodes"
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="with --canvas: the in-process figures only"
    )
    args = parser.parse_args()
    if args.canvas:
        asyncio.run(canvas_main(args.canvas, args.repeat))
        if not args.no_browser:
            canvas_browser(args.canvas, args.repeat)
    elif args.lists:
        asyncio.run(lists_main(args.lists, args.repeat))
    else:
        asyncio.run(main(args.layers, args.width, args.repeat))
