"""Workflows and versions through the API: create (object or YAML text), version, copy, export, templates,
sharing, submit-by-file, listings with search and cursor pagination, and every input error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.graphql.harness import Server

pytestmark = pytest.mark.usefixtures("users")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEED = (EXAMPLES / "pass-params-demo.yaml").read_text()

VERSION_FIELDS = "id number spec isTemplate description workflow { id name owner { username } }"
CREATE = (
    "mutation($spec: JSON!, $name: String, $d: String) { createWorkflow(spec: $spec, name: $name, description: $d)"
    " { " + VERSION_FIELDS + " } }"
)
NEW_VERSION = (
    "mutation($w: ID!, $spec: JSON!) { createWorkflowVersion(workflowId: $w, spec: $spec) { "
    + VERSION_FIELDS
    + " } }"
)
COPY = (
    "mutation($v: ID!, $new: Boolean!, $name: String) { copyWorkflowVersion(versionId: $v, asNewWorkflow: $new,"
    " name: $name) { " + VERSION_FIELDS + " } }"
)
SUBMIT = "mutation($spec: JSON!) { submitWorkflow(spec: $spec) { id number workflow { id name } } }"
TEMPLATE = (
    "mutation($v: ID!, $t: Boolean!) { setVersionTemplate(versionId: $v, isTemplate: $t) { isTemplate } }"
)
FROM_TEMPLATE = (
    "mutation($v: ID!, $name: String) { createWorkflowFromTemplate(versionId: $v, name: $name) { "
    + VERSION_FIELDS
    + " } }"
)
VERSION = "query($id: ID!) { workflowVersion(id: $id) { id number yaml spec workflow { name } } }"


def tiny(name: str = "tiny", command: str = "true") -> dict[str, Any]:
    return {"name": name, "nodes": [{"name": "a", "command": command}]}


async def create(server: Server, spec: Any, who: str = "alice", **extra: Any) -> dict[str, Any]:
    return (await server.gql(CREATE, {"spec": spec, **extra}, as_=who))["createWorkflow"]


async def test_create_from_yaml_text_and_object(users: Server) -> None:
    version = await create(users, SEED)
    assert version["number"] == 1 and version["workflow"]["name"] == "pass-params-demo"
    assert version["workflow"]["owner"] == {"username": "alice"}
    assert [n["name"] for n in version["spec"]["nodes"]] == ["step1", "step2"]
    other = await create(users, tiny(), name="renamed", d="hello")
    assert other["workflow"]["name"] == "renamed"
    workflow = (
        await users.gql(
            "query($id: ID!) { workflow(id: $id) { description } }",
            {"id": other["workflow"]["id"]},
            as_="alice",
        )
    )["workflow"]
    assert workflow == {"description": "hello"}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"name": "x", "nodes": [{"name": "a", "command": "true", "depends_on": ["zz"]}]}, "no node 'zz'"),
        ("name: x\nnodes: [\n", "invalid YAML"),
        ({"name": "Bad Name", "nodes": [{"name": "a", "command": "true"}]}, "name"),
        (
            {"name": "x", "nodes": [{"name": "a", "command": "true", "cluster": "nowhere"}]},
            "nowhere",
        ),
        (42, "must be an object"),
        ("[1, 2]", "mapping"),
    ],
)
async def test_invalid_specs_are_rejected_with_the_field_and_nothing_is_saved(
    users: Server, spec: Any, needle: str
) -> None:
    error = await users.error(CREATE, {"spec": spec}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "spec"}
    assert needle in error["message"]
    assert (await users.gql("{ workflows { items { id } } }", as_="alice"))["workflows"]["items"] == []


async def test_duplicate_workflow_name_names_the_field(users: Server) -> None:
    await create(users, tiny())
    error = await users.error(CREATE, {"spec": tiny()}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "name"}
    await create(users, tiny(), who="bob")  # names are per owner


async def test_versions_copy_and_export(users: Server) -> None:
    v1 = await create(users, tiny())
    v2 = (
        await users.gql(NEW_VERSION, {"w": v1["workflow"]["id"], "spec": tiny(command="echo 2")}, as_="alice")
    )["createWorkflowVersion"]
    assert v2["number"] == 2 and v2["spec"]["nodes"][0]["command"] == "echo 2"
    # copy v1 as a new version of the same workflow
    v3 = (await users.gql(COPY, {"v": v1["id"], "new": False}, as_="alice"))["copyWorkflowVersion"]
    assert (v3["number"], v3["spec"], v3["workflow"]["id"]) == (3, v1["spec"], v1["workflow"]["id"])
    # copy as a new workflow: default name, then a chosen one
    copied = (await users.gql(COPY, {"v": v2["id"], "new": True}, as_="alice"))["copyWorkflowVersion"]
    assert copied["workflow"]["name"] == "tiny-copy" and copied["number"] == 1
    assert copied["spec"]["name"] == "tiny-copy"
    again = (await users.gql(COPY, {"v": v2["id"], "new": True}, as_="alice"))["copyWorkflowVersion"]
    assert again["workflow"]["name"] == "tiny-copy-2"
    named = (await users.gql(COPY, {"v": v2["id"], "new": True, "name": "mine"}, as_="alice"))[
        "copyWorkflowVersion"
    ]
    assert named["workflow"]["name"] == "mine"
    error = await users.error(COPY, {"v": v2["id"], "new": True, "name": "mine"}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "name"}
    # export: YAML that parses back to the same spec
    exported = (await users.gql(VERSION, {"id": v2["id"]}, as_="alice"))["workflowVersion"]
    assert yaml.safe_load(exported["yaml"]) == exported["spec"]
    versions = (
        await users.gql(
            "query($id: ID!) { workflow(id: $id) { versions { number } latestVersion { number } } }",
            {"id": v1["workflow"]["id"]},
            as_="alice",
        )
    )["workflow"]
    assert versions == {
        "versions": [{"number": 1}, {"number": 2}, {"number": 3}],
        "latestVersion": {"number": 3},
    }


async def test_seed_export_round_trips(users: Server) -> None:
    version = await create(users, SEED)
    exported = (await users.gql(VERSION, {"id": version["id"]}, as_="alice"))["workflowVersion"]["yaml"]
    again = await create(users, exported, name="seed-again")
    # the name given names the stored spec too, so its export names this workflow (issue 11)
    assert again["spec"] == version["spec"] | {"name": "seed-again"}


async def test_templates(users: Server) -> None:
    version = await create(users, SEED)
    assert (await users.gql(VERSION, {"id": version["id"]}, as_="carol"))["workflowVersion"] is None
    error = await users.error(FROM_TEMPLATE, {"v": version["id"]}, as_="carol")
    assert error["extensions"] == {"code": "NOT_FOUND", "field": "versionId"}
    error = await users.error(FROM_TEMPLATE, {"v": version["id"]}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "versionId"}
    # only the owner (or an admin) marks a template
    error = await users.error(TEMPLATE, {"v": version["id"], "t": True}, as_="bob")
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert (await users.gql(TEMPLATE, {"v": version["id"], "t": True}, as_="alice"))[
        "setVersionTemplate"
    ] == {"isTemplate": True}
    templates = (await users.gql("{ templates { id workflow { name } } }", as_="carol"))["templates"]
    assert templates == [{"id": version["id"], "workflow": {"name": "pass-params-demo"}}]
    # carol reads the template, but not the rest of the workflow
    read = (
        await users.gql(
            "query($id: ID!) { workflowVersion(id: $id) { number workflow { name versions { number } } } }",
            {"id": version["id"]},
            as_="carol",
        )
    )["workflowVersion"]
    assert read == {"number": 1, "workflow": {"name": "pass-params-demo", "versions": [{"number": 1}]}}
    await users.gql(NEW_VERSION, {"w": version["workflow"]["id"], "spec": SEED}, as_="alice")
    read = (
        await users.gql(
            "query($id: ID!) { workflowVersion(id: $id) { workflow { versions { number } } } }",
            {"id": version["id"]},
            as_="carol",
        )
    )["workflowVersion"]
    assert read["workflow"]["versions"] == [{"number": 1}]
    mine = (await users.gql(FROM_TEMPLATE, {"v": version["id"], "name": "from-tpl"}, as_="carol"))[
        "createWorkflowFromTemplate"
    ]
    assert mine["workflow"] == {
        "id": mine["workflow"]["id"],
        "name": "from-tpl",
        "owner": {"username": "carol"},
    }
    assert mine["isTemplate"] is False
    await users.gql(TEMPLATE, {"v": version["id"], "t": False}, as_="admin")
    assert (await users.gql("{ templates { id } }", as_="carol"))["templates"] == []


async def test_submit_creates_then_versions_only_on_change(users: Server) -> None:
    first = (await users.gql(SUBMIT, {"spec": SEED}, as_="alice"))["submitWorkflow"]
    same = (await users.gql(SUBMIT, {"spec": SEED}, as_="alice"))["submitWorkflow"]
    assert same == first and first["number"] == 1
    changed = (await users.gql(SUBMIT, {"spec": SEED.replace("hello", "bonjour")}, as_="alice"))[
        "submitWorkflow"
    ]
    assert changed["number"] == 2 and changed["workflow"] == first["workflow"]
    other = (await users.gql(SUBMIT, {"spec": SEED}, as_="bob"))["submitWorkflow"]
    assert other["workflow"]["id"] != first["workflow"]["id"]
    error = await users.error(SUBMIT, {"spec": "nodes: []"}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "spec"}


async def test_sharing_is_for_the_owner(users: Server) -> None:
    version = await create(users, tiny())
    share = "mutation($id: ID!, $s: Boolean!) { setWorkflowShared(workflowId: $id, shared: $s) { sharedWithTeam } }"
    error = await users.error(share, {"id": version["workflow"]["id"], "s": True}, as_="bob")
    assert error["extensions"] == {"code": "NOT_FOUND", "field": "workflowId"}
    await users.gql(share, {"id": version["workflow"]["id"], "s": True}, as_="alice")
    assert (await users.gql(VERSION, {"id": version["id"]}, as_="bob"))["workflowVersion"] is not None
    await users.gql(share, {"id": version["workflow"]["id"], "s": False}, as_="alice")
    assert (await users.gql(VERSION, {"id": version["id"]}, as_="bob"))["workflowVersion"] is None


WORKFLOWS = (
    "query($s: String, $o: String, $first: Int!, $after: String) {"
    " workflows(search: $s, owner: $o, first: $first, after: $after) { items { name } nextCursor } }"
)


async def test_workflow_listing_search_and_pages(users: Server) -> None:
    for i in range(5):
        await create(users, tiny(f"wf-{i}"))
    await create(users, tiny("other"), who="admin")
    names: list[str] = []
    after = None
    while True:
        page = (await users.gql(WORKFLOWS, {"first": 2, "after": after}, as_="alice"))["workflows"]
        names += [w["name"] for w in page["items"]]
        after = page["nextCursor"]
        if after is None:
            break
    assert names == [f"wf-{i}" for i in reversed(range(5))]
    found = (await users.gql(WORKFLOWS, {"s": "WF-3", "first": 10}, as_="alice"))["workflows"]["items"]
    assert found == [{"name": "wf-3"}]
    by_owner = (await users.gql(WORKFLOWS, {"o": "admin", "first": 10}, as_="admin"))["workflows"]["items"]
    assert by_owner == [{"name": "other"}]


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"first": 0}, "first"),
        ({"first": 1001}, "first"),
        ({"first": 5, "after": "!!"}, "after"),
        ({"first": 5, "o": "nobody"}, "owner"),
    ],
)
async def test_listing_input_errors(users: Server, variables: dict[str, Any], field: str) -> None:
    error = await users.error(WORKFLOWS, variables, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": field}


@pytest.mark.parametrize("bad_id", ["abc", "-1", "1.5"])
async def test_malformed_ids(users: Server, bad_id: str) -> None:
    error = await users.error(VERSION, {"id": bad_id}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "id"}
