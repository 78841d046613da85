"""Modules end to end through GraphQL on a real server, with real git repositories and real runs:
register -> build -> private use -> publish request -> rejected with a reason -> fix -> approved by the team
leader -> another user uses it -> the same run again is a cache hit. And each bad input's error."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.graphql.harness import Server, wait_for
from tests.modules.conftest import HASH_FILE_INTERFACE, MakeRepo

DATA = "a,b\n1,2\n"

CREATE_MODULE = """mutation($input: CreateModuleInput!) {
  createModule(input: $input) { id name status builds { id number status } } }"""
UPDATE_MODULE = """mutation($id: ID!, $input: UpdateModuleInput!) {
  updateModule(id: $id, input: $input) { id status builds { id number status } } }"""
MODULE = """query($id: ID!) { module(id: $id) {
  name status description owner { username } category { name }
  builds { id number status commitSha image message published } } }"""
REQUEST = "mutation($id: ID!) { requestModulePublish(id: $id) { id status } }"
REVIEW = """mutation($id: ID!, $approve: Boolean!, $reason: String!) {
  reviewModule(reviewId: $id, approve: $approve, reason: $reason) {
    id status reason decidedAt reviewer { username } requester { username } build { number } } }"""
REVIEWS = "{ moduleReviews { id status reason reviewer { username } module { name } build { number } } }"
BUILD_LOG = "query($id: ID!) { moduleBuildLog(buildId: $id) { text nextOffset } }"
PALETTE = "{ modulePalette { group module { name } build { number } } }"
CREATE_WF = "mutation($spec: JSON!) { createWorkflow(spec: $spec) { id } }"
CREATE_RUN = "mutation($v: ID!) { createRun(versionId: $v) { id } }"
RUN = """query($id: ID!) { run(id: $id) { status message
  nodes { name status message cacheSourceId inputs outputs { name value } } } }"""


def spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "nodes": [
            {
                "name": "prepare",
                "command": f"printf '{DATA}' > /tmp/workflow_space/data.csv",
                "outputs": [{"name": "data", "path": "/tmp/workflow_space/data.csv", "type": "path"}],
            },
            {
                "name": "checksum",
                "module": "hash-file",
                "inputs": [
                    {"name": "input_file", "from": "prepare.data"},
                    {"name": "algorithm", "value": "sha256"},
                ],
            },
        ],
    }


async def wait_built(srv: Server, module: dict[str, Any]) -> dict[str, Any]:
    """Wait for the module's newest build (the build manager's job, in this process), then read it back."""
    await srv.rt.builds.wait(int(module["builds"][0]["id"]))
    return (await srv.gql(MODULE, {"id": module["id"]}, as_="alice"))["module"]  # type: ignore[no-any-return]


async def run_checksum(srv: Server, version_id: str, who: str) -> tuple[str, dict[str, Any]]:
    run_id = (await srv.gql(CREATE_RUN, {"v": version_id}, as_=who))["createRun"]["id"]
    events = await wait_for(srv, run_id, as_=who)
    assert events[-1]["runStatus"] == "SUCCEEDED", events[-1]
    run = (await srv.gql(RUN, {"id": run_id}, as_=who))["run"]
    return run_id, next(n for n in run["nodes"] if n["name"] == "checksum")


async def test_register_build_review_publish_share_and_cache(users: Server, make_repo: MakeRepo) -> None:
    server = users  # the server with its fixture users: admin, alice and bob (team ml, bob leads), carol
    await server.gql('mutation { createCategory(name: "data-processing") { id } }', as_="admin")
    repo = make_repo("hash-file")
    module = (
        await server.gql(
            CREATE_MODULE,
            {
                "input": {
                    "category": "data-processing",
                    "name": "hash-file",
                    "gitUrl": repo.url,
                    "ref": "main",
                    "description": "hashes a file",
                    **HASH_FILE_INTERFACE,
                }
            },
            as_="alice",
        )
    )["createModule"]
    assert module["status"] == "BUILDING"
    shown = await wait_built(server, module)
    assert shown["status"] == "BUILT"
    build = shown["builds"][0]
    assert (build["status"], build["commitSha"], build["published"]) == (
        "BUILT",
        repo.git("rev-parse", "HEAD"),
        False,
    )
    assert build["image"].endswith(f"/data-processing/hash-file:{build['commitSha']}")
    log = (await server.gql(BUILD_LOG, {"id": build["id"]}, as_="alice"))["moduleBuildLog"]
    assert "build succeeded" in log["text"] and log["nextOffset"] == len(log["text"].encode())

    # private: alice uses it; carol neither sees it nor can use it
    assert (await server.gql(PALETTE, as_="alice"))["modulePalette"] == [
        {"group": "mine", "module": {"name": "hash-file"}, "build": {"number": 1}}
    ]
    assert (await server.gql(MODULE, {"id": module["id"]}, as_="carol"))["module"] is None
    assert (await server.gql("{ modules { name } }", as_="carol"))["modules"] == []
    error = await server.error(CREATE_WF, {"spec": spec("carol-early")}, as_="carol")
    assert error["extensions"]["code"] == "INVALID_INPUT" and "unknown module 'hash-file'" in error["message"]
    alice_version = (await server.gql(CREATE_WF, {"spec": spec("alice-wf")}, as_="alice"))["createWorkflow"][
        "id"
    ]
    _, checksum = await run_checksum(server, alice_version, "alice")
    assert checksum["outputs"] == [{"name": "digest", "value": hashlib.sha256(DATA.encode()).hexdigest()}]

    # publish request, rejected with a reason
    review = (await server.gql(REQUEST, {"id": module["id"]}, as_="alice"))["requestModulePublish"]
    assert review["status"] == "PENDING"
    assert (await server.gql(MODULE, {"id": module["id"]}, as_="alice"))["module"][
        "status"
    ] == "PENDING_REVIEW"
    error = await server.error(REVIEW, {"id": review["id"], "approve": True, "reason": ""}, as_="carol")
    assert error["extensions"]["code"] == "NOT_FOUND"
    error = await server.error(REVIEW, {"id": review["id"], "approve": True, "reason": ""}, as_="alice")
    assert error["extensions"]["code"] == "FORBIDDEN" and "your own request" in error["message"]
    error = await server.error(REVIEW, {"id": review["id"], "approve": False, "reason": " "}, as_="bob")
    assert (error["extensions"]["code"], error["extensions"]["field"]) == ("INVALID_INPUT", "reason")
    rejected = (
        await server.gql(
            REVIEW, {"id": review["id"], "approve": False, "reason": "README needs an example"}, as_="bob"
        )
    )["reviewModule"]
    assert (rejected["status"], rejected["reviewer"], rejected["requester"]) == (
        "REJECTED",
        {"username": "bob"},
        {"username": "alice"},
    )
    assert rejected["decidedAt"] is not None
    assert (await server.gql(REVIEWS, as_="alice"))["moduleReviews"] == [
        {
            "id": review["id"],
            "status": "REJECTED",
            "reason": "README needs an example",
            "reviewer": {"username": "bob"},
            "module": {"name": "hash-file"},
            "build": {"number": 1},
        }
    ]
    # asking again needs no rebuild while build 1 is the newest (issue 14); the edit below withdraws it
    again = (await server.gql(REQUEST, {"id": module["id"]}, as_="alice"))["requestModulePublish"]
    assert again["status"] == "PENDING" and again["id"] != review["id"]

    # fix, rebuild, ask again; the team leader approves
    repo.write("README.md", (repo.path / "README.md").read_text() + "\n## One more example\n")
    fixed_sha = repo.commit("README example")
    edited = (
        await server.gql(
            UPDATE_MODULE, {"id": module["id"], "input": {"description": "with example"}}, as_="alice"
        )
    )["updateModule"]
    assert edited["status"] == "BUILDING" and edited["builds"][0]["number"] == 2
    shown = await wait_built(server, edited)
    assert (shown["status"], shown["builds"][0]["commitSha"]) == ("BUILT", fixed_sha)
    review = (await server.gql(REQUEST, {"id": module["id"]}, as_="alice"))["requestModulePublish"]
    assert (await server.gql(REVIEWS, as_="bob"))["moduleReviews"][0]["id"] == review["id"]
    assert (await server.gql(REVIEWS, as_="carol"))["moduleReviews"] == []
    approved = (await server.gql(REVIEW, {"id": review["id"], "approve": True, "reason": ""}, as_="bob"))[
        "reviewModule"
    ]
    assert (approved["status"], approved["build"]) == ("APPROVED", {"number": 2})
    shown = (await server.gql(MODULE, {"id": module["id"]}, as_="carol"))["module"]
    assert shown["status"] == "PUBLISHED" and shown["owner"] == {"username": "alice"}
    assert [b["number"] for b in shown["builds"]] == [2]  # others see the published build only

    # another user uses it; the same run again is a cache hit pointing at the first run
    assert (await server.gql(PALETTE, as_="carol"))["modulePalette"] == [
        {"group": "data-processing", "module": {"name": "hash-file"}, "build": {"number": 2}}
    ]
    carol_version = (await server.gql(CREATE_WF, {"spec": spec("carol-wf")}, as_="carol"))["createWorkflow"][
        "id"
    ]
    first_run, first = await run_checksum(server, carol_version, "carol")
    assert first["status"] == "SUCCEEDED" and first["cacheSourceId"] is None  # build 2 never ran before
    _, again = await run_checksum(server, carol_version, "carol")
    assert again["status"] == "SKIPPED"
    assert again["cacheSourceId"] is not None
    assert f"cache hit: outputs of run {first_run} node checksum" in again["message"]
    assert again["outputs"] == first["outputs"]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"name": "Hash_File"}, "name", "is not a valid module name"),
        ({"category": "nope"}, "category", "unknown category 'nope'"),
        ({"inputs": [{"name": "a"}, {"name": "a"}]}, "inputs[1].name", "duplicate input name 'a'"),
        (
            {"outputs": [{"name": "o", "path": "/tmp/o", "type": "file"}]},
            "outputs[0].type",
            "type must be 'text' or 'path'",
        ),
        ({"dockerfilePath": "../../etc/Dockerfile"}, "dockerfilePath", "leads outside the repository"),
        ({"readmePath": "/README.md"}, "readmePath", "must be relative to the repository root"),
        ({"gitUrl": "ext::sh"}, "gitUrl", "is not a URL git may clone here"),
        ({"ref": "--upload-pack=x"}, "ref", "must not start with '-'"),
        ({"env": {"AI_HUB_TOKEN": "x"}}, "env.AI_HUB_TOKEN", "set by the platform"),
    ],
)
async def test_each_bad_input_gives_a_clear_error(
    users: Server, change: dict[str, Any], field: str, message: str
) -> None:
    await users.gql('mutation { createCategory(name: "data-processing") { id } }', as_="admin")
    base = {"category": "data-processing", "name": "hash-file", "gitUrl": "https://git.example.com/m.git"}
    error = await users.error(CREATE_MODULE, {"input": {**base, **change}}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": field}
    assert message in error["message"]
    assert (await users.gql("{ modules { name } }", as_="alice"))["modules"] == []


async def test_builds_logs_readme_and_rebuilds_through_the_api(users: Server, make_repo: MakeRepo) -> None:
    server = users
    await server.gql('mutation { createCategory(name: "data-processing") { id } }', as_="admin")
    repo = make_repo("hash-file")
    repo.write("README.md", "# hash-file\n\n<script>alert(1)</script>\n\nSee [docs](https://example.com).\n")
    repo.write("Dockerfile", 'FROM python:3.11-slim\nCOPY . /app\nCMD ["python3", "main.py"]\n')
    repo.commit("a CMD")
    base = {"category": "data-processing", "name": "hash-file", "gitUrl": repo.url, **HASH_FILE_INTERFACE}
    module = (await server.gql(CREATE_MODULE, {"input": base}, as_="alice"))["createModule"]
    shown = await wait_built(server, module)
    failed = shown["builds"][0]
    assert (shown["status"], failed["status"]) == ("BUILD_FAILED", "BUILD_FAILED")
    assert "line 3: CMD is not allowed" in failed["message"]
    log = (await server.gql(BUILD_LOG, {"id": failed["id"]}, as_="alice"))["moduleBuildLog"]["text"]
    assert f"build failed: {failed['message']}" in log

    # others see neither the build nor its log; they cannot rebuild or edit
    assert (
        await server.gql("query($id: ID!) { moduleBuild(id: $id) { id } }", {"id": failed["id"]}, as_="carol")
    )["moduleBuild"] is None
    error = await server.error(BUILD_LOG, {"id": failed["id"]}, as_="carol")
    assert error["extensions"]["code"] == "NOT_FOUND"
    rebuild = "mutation($id: ID!) { rebuildModule(id: $id) { id number status } }"
    error = await server.error(rebuild, {"id": module["id"]}, as_="carol")
    assert error["extensions"] == {"code": "NOT_FOUND", "field": "id"}

    repo.write(
        "Dockerfile", 'FROM python:3.11-slim\nCOPY . /app\nWORKDIR /app\nENTRYPOINT ["python3", "main.py"]\n'
    )
    repo.commit("fix the Dockerfile")
    rebuilt = (await server.gql(rebuild, {"id": module["id"]}, as_="alice"))["rebuildModule"]
    assert (rebuilt["number"], rebuilt["status"]) == (2, "BUILDING")
    await server.rt.builds.wait(int(rebuilt["id"]))
    build = await server.gql(
        "query($id: ID!) { moduleBuild(id: $id) { status } }", {"id": rebuilt["id"]}, as_="alice"
    )
    assert build["moduleBuild"]["status"] == "BUILT"
    html = (
        await server.gql("query($id: ID!) { moduleReadmeHtml(id: $id) }", {"id": module["id"]}, as_="alice")
    )["moduleReadmeHtml"]
    assert "<h1>hash-file</h1>" in html and "<script>" not in html and "alert" not in html
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">docs</a>' in html
    error = await server.error(
        "query($id: ID!) { moduleReadmeHtml(id: $id) }", {"id": module["id"]}, as_="carol"
    )
    assert error["extensions"]["code"] == "NOT_FOUND"

    # published: others read it, but only the owner (or an admin) may change it
    review = (await server.gql(REQUEST, {"id": module["id"]}, as_="alice"))["requestModulePublish"]
    await server.gql(REVIEW, {"id": review["id"], "approve": True, "reason": "ok"}, as_="admin")
    error = await server.error(
        UPDATE_MODULE, {"id": module["id"], "input": {"description": "x"}}, as_="carol"
    )
    assert error["extensions"] == {"code": "FORBIDDEN", "field": "id"}
    error = await server.error(rebuild, {"id": module["id"]}, as_="carol")
    assert error["extensions"]["code"] == "FORBIDDEN"
    error = await server.error(REQUEST, {"id": module["id"]}, as_="carol")
    assert error["extensions"]["code"] == "FORBIDDEN"
    edited = await server.gql(UPDATE_MODULE, {"id": module["id"], "input": {"ref": "main"}}, as_="admin")
    assert edited["updateModule"]["status"] == "BUILDING"
    error = await server.error(
        UPDATE_MODULE, {"id": module["id"], "input": {"readmePath": "../x"}}, as_="alice"
    )
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "readmePath"}
