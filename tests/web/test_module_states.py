"""Module states that do not lie, and reviews as the seed says (issue 14, points 3 and 4), through the pages and
GraphQL of the in-process app: an owner (alice), her team leader (bob) and an outsider (carol, another team)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aihub.db.models import Category, Module, ModuleBuild, ModuleReview, ModuleStatus, ReviewStatus, User
from aihub.services.modules import update_module
from aihub.services.modules_resolve import usable_build
from aihub.services.reviews import request_publish, review_module
from tests.web.webapp import ADMIN_PASSWORD, HASH_FILE_FORM, PASSWORD, Client, Web, make_repo, wait_built

MODULE = """query($id: ID!) { module(id: $id) {
  name status description ref publishedBuild { number } builds { number published } } }"""
MODULES = "{ modules { name status description } }"
REVIEWS = "{ moduleReviews { id status reason module { name description } build { number } } }"


async def gql(web: Web, username: str, query: str, **variables: Any) -> dict[str, Any]:
    client = web.anonymous()
    password = ADMIN_PASSWORD if username == "admin" else PASSWORD
    login = await client.http.post(
        "/graphql",
        json={
            "query": "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }",
            "variables": {"u": username, "p": password},
        },
    )
    token = login.json()["data"]["login"]["token"]
    response = await client.http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]  # type: ignore[no-any-return]


def row_of(html: str, name: str) -> str:
    found = re.search(rf'<tr class="module-row" id="module-row-{name}">(.*?)</tr>', html, re.S)
    assert found, html
    return found.group(1)


async def register(web: Web, client: Client, repo: Path, name: str, description: str) -> Module:
    response = await client.post(
        "/modules/new",
        {**HASH_FILE_FORM, "name": name, "description": description, "git_url": repo.as_uri(), "op": "save"},
    )
    assert response.status_code == 303, response.text
    return await wait_built(name, web)


async def test_an_edit_of_a_published_module_changes_nothing_for_others_until_approved(
    web: Web, category: Category, tmp_path: Path
) -> None:
    alice_user, bob_user, carol_user = [await User.get(username=n) for n in ("alice", "bob", "carol")]
    alice, bob, carol = [await web.client(n) for n in ("alice", "bob", "carol")]
    repo = make_repo(tmp_path / "repo")
    module = await register(web, alice, repo.path, "hash-file", "v1 description")
    first = await request_publish(alice_user, module.id)
    await review_module(bob_user, first.id, approve=True)
    v1 = await ModuleBuild.get(module_id=module.id, number=1)

    # the owner edits the description and the git ref (a new branch): build 2, not yet reviewed
    repo.git("checkout", "-q", "-b", "v2")
    (repo.path / "README.md").write_text((repo.path / "README.md").read_text() + "\nversion 2\n")
    repo.git("commit", "-q", "-am", "v2")
    await update_module(web.rt.builds, alice_user, module.id, description="v2 description", ref="v2")
    await wait_built("hash-file", web)
    url = f"/modules/{module.id}"

    # the outsider: still v1, everywhere
    listed = row_of((await carol.get("/modules")).text, "hash-file")
    assert "v1 description" in listed and "v2 description" not in listed and "s-PUBLISHED" in listed
    page = (await carol.get(url)).text
    assert "v1 description" in page and "v2 description" not in page and 'data-status="PUBLISHED"' in page
    seen = (await gql(web, "carol", MODULE, id=str(module.id)))["module"]
    assert (seen["status"], seen["description"], seen["ref"]) == ("PUBLISHED", "v1 description", "main")
    assert seen["publishedBuild"] == {"number": 1} and seen["builds"] == [{"number": 1, "published": True}]
    assert (await gql(web, "carol", MODULES))["modules"] == [
        {"name": "hash-file", "status": "PUBLISHED", "description": "v1 description"}
    ]
    used = await usable_build(carol_user, "hash-file")
    assert used is not None and used.id == v1.id  # a workflow of carol's pins v1's build

    # the owner sees both: the edit (BUILT) and the published build 1
    own = (await alice.get(url)).text
    assert "v2 description" in own and 'data-status="BUILT"' in own
    assert re.search(r'id="published-note">Build 1 is published: .*v1 description', own)
    assert "build 1 published" in row_of((await alice.get("/modules")).text, "hash-file")
    mine = (await gql(web, "alice", MODULE, id=str(module.id)))["module"]
    assert (mine["status"], mine["description"], mine["publishedBuild"]) == (
        "BUILT",
        "v2 description",
        {"number": 1},
    )

    # publishing is requested; the leader sees the pending module and the build under review
    assert (await alice.post(f"{url}/publish")).status_code == 303
    leader_row = row_of((await bob.get("/modules")).text, "hash-file")
    assert "s-PENDING_REVIEW" in leader_row and "v2 description" in leader_row
    assert "v1 description" in row_of((await carol.get("/modules")).text, "hash-file")  # still v1 for others
    review = await ModuleReview.get(module_id=module.id, status=ReviewStatus.PENDING)
    rejected = await bob.post(
        f"/reviews/{review.id}/decide", {"decision": "reject", "reason": "say what v2 adds"}
    )
    assert rejected.status_code == 303
    shown = (await alice.get(url)).text
    assert 'id="rejection-reason">say what v2 adds<' in shown and 'id="request-publish"' in shown
    assert "v1 description" in (await carol.get(url)).text

    # the owner asks again without a rebuild; the leader approves: everybody sees v2
    builds_before = await ModuleBuild.filter(module_id=module.id).count()
    assert (await alice.post(f"{url}/publish")).status_code == 303
    assert await ModuleBuild.filter(module_id=module.id).count() == builds_before  # no rebuild
    again = await ModuleReview.get(module_id=module.id, status=ReviewStatus.PENDING)
    assert again.build_id == review.build_id  # type: ignore[attr-defined]
    assert (await bob.post(f"/reviews/{again.id}/decide", {"decision": "approve"})).status_code == 303
    assert (await Module.get(id=module.id)).status is ModuleStatus.PUBLISHED
    for client, name in ((carol, "carol"), (alice, "alice"), (bob, "bob")):
        assert "v2 description" in row_of((await client.get("/modules")).text, "hash-file"), name
        data = (await gql(web, name, MODULE, id=str(module.id)))["module"]
        assert (data["status"], data["description"], data["ref"]) == ("PUBLISHED", "v2 description", "v2")
    used = await usable_build(carol_user, "hash-file")
    assert used is not None and used.number == 2


async def test_the_review_page_shows_each_role_exactly_its_records(
    web: Web, category: Category, tmp_path: Path
) -> None:
    """The seed: admins see every record and decide; team leaders their team's; members only their own."""
    alice, carol = await web.client("alice"), await web.client("carol")
    await register(web, alice, make_repo(tmp_path / "a").path, "alice-mod", "by alice")
    await register(web, carol, make_repo(tmp_path / "c").path, "carol-mod", "by carol")
    for client, name in ((alice, "alice-mod"), (carol, "carol-mod")):
        module = await Module.get(name=name)
        assert (await client.post(f"/modules/{module.id}/publish")).status_code == 303
    ids = {r.module.name: r.id for r in await ModuleReview.all().prefetch_related("module")}

    async def listed(username: str) -> set[int]:
        html = (await (await web.client(username)).get("/reviews")).text
        return {int(i) for i in re.findall(r'<tr class="review-row" id="review-(\d+)"', html)}

    assert await listed("admin") == {ids["alice-mod"], ids["carol-mod"]}
    assert await listed("bob") == {ids["alice-mod"]}  # alice's team leader
    assert await listed("alice") == {ids["alice-mod"]}
    assert await listed("carol") == {ids["carol-mod"]}
    for username, names in (
        ("admin", {"alice-mod", "carol-mod"}),
        ("bob", {"alice-mod"}),
        ("alice", {"alice-mod"}),
        ("carol", {"carol-mod"}),
    ):
        got = {r["module"]["name"] for r in (await gql(web, username, REVIEWS))["moduleReviews"]}
        assert got == names, username
    # the leader sees his team's pending module on the modules page; the outsider does not see it at all
    assert "alice-mod" in (await (await web.client("bob")).get("/modules")).text
    assert "alice-mod" not in (await carol.get("/modules")).text
    # an admin decides, a reason is required to reject
    admin = await web.client("admin")
    empty = await admin.post(f"/reviews/{ids['carol-mod']}/decide", {"decision": "reject", "reason": ""})
    assert empty.status_code == 400 and "needs a reason" in empty.text
    done = await admin.post(
        f"/reviews/{ids['carol-mod']}/decide", {"decision": "reject", "reason": "no tests"}
    )
    assert done.status_code == 303
    # a member cannot decide on a team mate's request (no peer review in this team)
    refused = await carol.post(f"/reviews/{ids['alice-mod']}/decide", {"decision": "approve"})
    assert refused.status_code in (403, 404)
