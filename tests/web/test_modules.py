"""Module pages and reviews: the register form with every field, builds with a live log, README (sanitised),
editing, listing, the palette in the editor, and the publish/review flow with its refusals."""

from __future__ import annotations

import html
import re
from pathlib import Path

from aihub.db.models import Category, Module, ModuleReview, ModuleStatus
from tests.web.forms import Form
from tests.web.webapp import HASH_FILE_FORM, Client, Web, make_repo, wait_built


def error_of(text: str, key: str) -> str:
    match = re.search(rf'<p class="field-error" id="err-{re.escape(key)}">(.*?)</p>', text, re.S)
    assert match, f"no error next to {key}"
    return html.unescape(match[1])


async def register(client: Client, web: Web, repo_dir: Path, **fields: str) -> Module:
    repo = make_repo(repo_dir, fields.pop("example", "hash-file"))
    response = await client.post(
        "/modules/new", {**HASH_FILE_FORM, "git_url": repo.url, **fields, "op": "save"}
    )
    assert response.status_code == 303, response.text
    return await wait_built(fields.get("name", "hash-file"), web)


async def review_of(module: Module) -> ModuleReview:
    review = await ModuleReview.filter(module_id=module.id).order_by("-id").first()
    assert review is not None
    return review


async def test_the_register_form_has_every_field(web: Web, category: Category) -> None:
    client = await web.client("alice")
    page = await client.get("/modules/new")
    assert page.status_code == 200
    for field in ("category", "name", "description", "git_url", "ref", "dockerfile_path", "build_context"):
        assert f'id="{field}"' in page.text
    assert 'id="readme_path"' in page.text and '<option value="data-processing">' in page.text
    form = Form(page.text, "module-form")
    for op, row in (
        ("add-env", "env-0-key"),
        ("add-inputs", "inputs-0-name"),
        ("add-outputs", "outputs-0-path"),
    ):
        page = await client.post("/modules/new", form.data(op))
        form = Form(page.text, "module-form")
        assert form.getlist(row) == [""], op
    form.set("env-0-key", "A")
    page = await client.post("/modules/new", form.data("add-env"))
    form = Form(page.text, "module-form")
    page = await client.post("/modules/new", form.data("remove-env-0"))
    assert Form(page.text, "module-form").getlist("env-0-key") == [""]  # the second (empty) row moved up


async def test_a_registered_module_builds_live_and_shows_its_readme(
    web: Web, category: Category, tmp_path: Path
) -> None:
    client = await web.client("alice")
    await web.rt.builds.close()  # hold builds back, to see the page of a module while it builds
    repo = make_repo(tmp_path / "repo")
    response = await client.post("/modules/new", {**HASH_FILE_FORM, "git_url": repo.url, "op": "save"})
    assert response.status_code == 303
    url = response.headers["location"]
    building = await client.get(url)
    assert 'id="module-status">BUILDING' in building.text
    assert f'hx-get="{url}/build" hx-trigger="every 1s"' in building.text
    await web.rt.builds.start()
    module = await wait_built("hash-file", web)
    assert module.status is ModuleStatus.BUILT
    poll = await client.get(f"{url}/build", htmx=True)
    assert 'data-status="BUILT"' in poll.text and "hx-trigger" not in poll.text  # polling stops
    assert 'id="module-header" class="card" hx-swap-oob="true"' in poll.text  # and the header updates
    assert '<article class="card readme" id="readme" hx-swap-oob="true"><h1>hash-file</h1>' in poll.text
    builds = poll.text[poll.text.index('<section id="builds-card" hx-swap-oob="true">') :]
    assert '<span class="badge s-BUILT">BUILT</span>' in builds
    assert "entrypoint:" in poll.text  # the build log
    page = await client.get(url)
    assert "<h1>hash-file</h1>" in page.text  # the README, rendered
    assert "input_file" in page.text and "/tmp/workflow_space/hash-file/digest.txt" in page.text
    assert 'id="request-publish"' in page.text
    assert "<code>PYTHONUNBUFFERED=1</code>" in page.text
    await web.rt.builds.close()  # a review cannot be asked for while a build runs
    assert (await client.post(f"{url}/rebuild")).status_code == 303
    early = await client.post(f"{url}/publish")
    assert early.status_code == 409 and "still building" in early.text
    await web.rt.builds.start()


async def test_a_readme_is_sanitised(web: Web, category: Category, tmp_path: Path) -> None:
    client = await web.client("alice")
    repo_dir = tmp_path / "repo"
    repo = make_repo(repo_dir)
    (repo_dir / "README.md").write_text(
        "# Evil\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n[click](javascript:alert(3))\n"
    )
    repo.git("commit", "-qam", "evil readme")
    response = await client.post("/modules/new", {**HASH_FILE_FORM, "git_url": repo.url, "op": "save"})
    await wait_built("hash-file", web)
    page = (await client.get(response.headers["location"])).text
    readme = page[page.index('id="readme"') :]
    assert "<h1>Evil</h1>" in readme
    assert "<script" not in readme and "onerror" not in readme
    assert 'href="javascript:' not in readme  # left as plain text


async def test_a_failed_build_shows_why(web: Web, category: Category, tmp_path: Path) -> None:
    client = await web.client("alice")
    repo_dir = tmp_path / "repo"
    repo = make_repo(repo_dir)
    (repo_dir / "Dockerfile").write_text('FROM python:3.11-slim\nCOPY . /app\nCMD ["python3", "main.py"]\n')
    repo.git("commit", "-qam", "CMD instead of ENTRYPOINT")
    response = await client.post("/modules/new", {**HASH_FILE_FORM, "git_url": repo.url, "op": "save"})
    module = await wait_built("hash-file", web)
    assert module.status is ModuleStatus.BUILD_FAILED
    page = (await client.get(response.headers["location"])).text
    assert "ENTRYPOINT" in html.unescape(page[page.index('id="build-message"') :][:400])
    assert 'id="request-publish"' not in page


async def test_form_errors_appear_next_to_their_fields(web: Web, category: Category) -> None:
    client = await web.client("alice")
    bad = {
        **HASH_FILE_FORM,
        "name": "Bad_Name",
        "git_url": "ftp://example.com/x.git",
        "dockerfile_path": "../Dockerfile",
        "readme_path": "/README.md",
        "inputs-0-name": "1input",
        "outputs-0-path": "relative/path",
        "op": "save",
    }
    response = await client.post("/modules/new", bad)
    assert response.status_code == 400 and 'id="module-errors"' in response.text
    assert "not a valid module name" in error_of(response.text, "name")
    assert "git" in error_of(response.text, "git_url")
    assert "outside the repository" in error_of(response.text, "dockerfile_path")
    assert "relative to the repository root" in error_of(response.text, "readme_path")
    assert "not a valid name" in error_of(response.text, "inputs-0-name")
    assert "absolute" in error_of(response.text, "outputs-0-path")
    form = Form(response.text, "module-form")
    assert form.get("git_url") == "ftp://example.com/x.git"  # what was typed is kept
    unknown = await client.post(
        "/modules/new", {**HASH_FILE_FORM, "category": "nope", "git_url": "https://h/x"}
    )
    assert "unknown category 'nope'" in error_of(unknown.text, "category")
    orphan = await client.post("/modules/new", {**HASH_FILE_FORM, "env-0-key": "", "git_url": "https://h/x"})
    assert "needs a variable name" in error_of(orphan.text, "env-0")
    assert await Module.all().count() == 0


async def test_editing_rebuilds_and_only_the_owner_may(web: Web, category: Category, tmp_path: Path) -> None:
    alice = await web.client("alice")
    module = await register(alice, web, tmp_path / "repo")
    url = f"/modules/{module.id}"
    form = Form((await alice.get(f"{url}/edit")).text, "module-form")
    assert form.get("name") == "hash-file" and form.get("outputs-0-type") == "text"
    form.set("description", "a new description")
    response = await alice.post(f"{url}/edit", form.data("save"))
    assert response.status_code == 303
    await wait_built("hash-file", web)
    page = (await alice.get(url)).text
    assert "a new description" in page and page.count('class="build-row"') == 2
    taken = await alice.post("/modules/new", {**HASH_FILE_FORM, "git_url": "https://h/x", "op": "save"})
    assert "already exists" in error_of(taken.text, "name")
    admin = await web.client("admin")
    assert (await admin.get(f"{url}/edit")).status_code == 200  # administrators may edit any module
    carol = await web.client("carol")
    assert (await carol.get(url)).status_code == 404  # not published: invisible to others
    assert (await carol.post(f"{url}/rebuild")).status_code == 404


async def test_the_list_filters_by_scope_category_status_and_name(
    web: Web, category: Category, tmp_path: Path
) -> None:
    alice = await web.client("alice")
    await register(alice, web, tmp_path / "a")
    await Category.create(name="statistics")
    await register(alice, web, tmp_path / "b", example="csv-stats", name="csv-stats", category="statistics")
    listing = (await alice.get("/modules")).text
    assert 'id="module-row-hash-file"' in listing and 'id="module-row-csv-stats"' in listing
    assert listing.index(">data-processing</h2>") < listing.index(">statistics</h2>")  # grouped by category
    fragment = (await alice.get("/modules?category=statistics", htmx=True)).text
    assert fragment.lstrip().startswith('<div id="modules">')
    assert "module-row-csv-stats" in fragment and "module-row-hash-file" not in fragment
    assert "module-row-hash-file" not in (await alice.get("/modules?q=csv")).text
    assert "module-row" not in (await alice.get("/modules?scope=published")).text
    assert "module-row-hash-file" in (await alice.get("/modules?status=BUILT")).text
    assert "module-row" not in (await alice.get("/modules?status=REJECTED")).text
    carol = await web.client("carol")
    assert "module-row" not in (await carol.get("/modules")).text


async def test_publish_review_reject_with_reason_then_approve(
    web: Web, category: Category, tmp_path: Path
) -> None:
    alice = await web.client("alice")
    module = await register(alice, web, tmp_path / "repo")
    url = f"/modules/{module.id}"
    assert (await alice.post(f"{url}/publish")).status_code == 303
    review = await review_of(module)
    mine = (await alice.get("/reviews")).text
    assert f'id="review-{review.id}"' in mine and f'id="reject-{review.id}"' not in mine  # no self-review
    assert f'id="review-{review.id}"' not in (await (await web.client("carol")).get("/reviews")).text
    again = await alice.post(f"{url}/publish")
    assert again.status_code == 409 and "already waiting for a review" in again.text
    bob = await web.client("bob")  # leader of alice's team
    listing = (await bob.get("/reviews")).text
    assert f'id="reject-{review.id}"' in listing
    detail = (await bob.get(f"/reviews/{review.id}")).text
    assert "<h1>hash-file</h1>" in detail and "entrypoint:" in detail  # README and build log to judge by
    # a rejection needs a reason: the error is next to the reason field
    empty = await bob.post(f"/reviews/{review.id}/decide", {"decision": "reject", "reason": " "}, htmx=True)
    assert empty.text.lstrip().startswith(f'<tr class="review-row" id="review-{review.id}"')
    assert "needs a reason" in error_of(empty.text, f"reason-{review.id}")
    plain = await bob.post(f"/reviews/{review.id}/decide", {"decision": "reject", "reason": ""})
    assert plain.status_code == 400 and "needs a reason" in error_of(plain.text, f"reason-{review.id}")
    own = await alice.post(f"/reviews/{review.id}/decide", {"decision": "approve"}, htmx=True)
    assert "cannot review your own request" in error_of(own.text, f"review-{review.id}")
    rejected = await bob.post(
        f"/reviews/{review.id}/decide", {"decision": "reject", "reason": "document <the> outputs"}, htmx=True
    )
    assert 'data-status="REJECTED"' in rejected.text and "document &lt;the&gt; outputs" in rejected.text
    page = (await alice.get(url)).text
    assert 'id="rejection-reason">document &lt;the&gt; outputs<' in page
    assert 'id="request-publish"' in page  # asking again needs no rebuild (issue 14)
    assert (await alice.post(f"{url}/rebuild")).status_code == 303
    await wait_built("hash-file", web)
    assert (await alice.post(f"{url}/publish")).status_code == 303
    second = await review_of(module)
    approved = await bob.post(f"/reviews/{second.id}/decide", {"decision": "approve"})
    assert approved.status_code == 303
    assert (await Module.get(id=module.id)).status is ModuleStatus.PUBLISHED
    late = await bob.post(f"/reviews/{second.id}/decide", {"decision": "approve"}, htmx=True)
    assert "already decided" in error_of(late.text, f"review-{second.id}")
    carol = await web.client("carol")
    assert 'id="module-status">PUBLISHED' in (await carol.get(url)).text
    assert "module-row-hash-file" in (await carol.get("/modules?scope=published")).text
    # published, so visible to carol, but still alice's: carol may neither change it nor ask for a review
    assert (await carol.get(f"{url}/edit")).status_code == 403
    refused = await carol.post(f"{url}/publish")
    assert refused.status_code == 403 and "only the owner" in refused.text
    assert (await carol.get(f"/reviews/{second.id}")).status_code == 404  # not her team's request
    hidden = (await Module.get(id=module.id).prefetch_related("builds")).builds
    unpublished = next(b for b in hidden if not b.published)
    assert (await carol.get(f"{url}/builds/{unpublished.id}/log")).status_code == 404


async def test_the_editor_palette_offers_own_built_and_published_modules(
    web: Web, category: Category, tmp_path: Path
) -> None:
    alice = await web.client("alice")
    module = await register(alice, web, tmp_path / "repo")
    editor_page = (await alice.get("/workflows/new?view=form")).text  # form view
    mine = editor_page[editor_page.index('id="palette-mine"') :]
    assert 'id="add-module-hash-file"' in mine[: mine.index("</div>")]
    form = Form(editor_page, "editor-body")
    form.update({"name": "with-module", "nodes-0-command": "echo data > /tmp/in.txt"})
    page = await alice.post("/workflows/new", form.data("add-module-hash-file"), htmx=True)
    form = Form(page.text, "editor-body")
    assert form.get("nodes-1-module") == "hash-file"
    assert [form.get(f"nodes-1-inputs-{j}-name") for j in range(2)] == ["input_file", "algorithm"]
    assert "unbound" not in page.text and "path of the file to hash" in page.text
    form.update({"nodes-1-inputs-0-value": "/tmp/in.txt", "nodes-1-inputs-1-value": "sha256"})
    page = await alice.post("/workflows/new", form.data("add-node"), htmx=True)
    page = await alice.post("/workflows/new", Form(page.text, "editor-body").data("add-input-2"), htmx=True)
    assert '<option value="hash_file.digest">' in page.text  # a module's outputs are sources downstream
    form = Form(page.text, "editor-body")
    form.update({"nodes-2-command": "echo $d", "nodes-2-inputs-0-name": "d"})
    saved = await alice.post(
        "/workflows/new", form.set("nodes-2-inputs-0-from", "hash_file.digest").data("save")
    )
    assert saved.status_code == 303, saved.text
    carol = await web.client("carol")
    assert 'id="add-module-hash-file"' not in (await carol.get("/workflows/new")).text
    await alice.post(f"/modules/{module.id}/publish")
    bob = await web.client("bob")
    await bob.post(f"/reviews/{(await review_of(module)).id}/decide", {"decision": "approve"})
    page = (await carol.get("/workflows/new")).text
    group = page[page.index('id="palette-data-processing"') :]
    assert 'id="add-module-hash-file"' in group[: group.index("</div>")]
