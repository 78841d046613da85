"""Issue 11, point 11: a workflow name given apart from the spec follows the spec's rule and names the stored
spec too; the GraphiQL page carries a Content-Security-Policy and cannot be framed."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.graphql.harness import Server

pytestmark = [
    pytest.mark.usefixtures("users"),
    pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True),
]

CREATE = (
    "mutation($spec: JSON!, $name: String) { createWorkflow(spec: $spec, name: $name)"
    " { id yaml spec workflow { name } } }"
)
SPEC = {"name": "original", "nodes": [{"name": "a", "command": "true"}]}


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("n" * 300, "at most 63 characters (got 300)"),
        ("x" * 64, "at most 63 characters (got 64)"),
        ("Bad Name!", "not a valid workflow name"),
        ("-dash", "not a valid workflow name"),
        ("", "a workflow name is required"),
    ],
)
async def test_create_workflow_name_follows_the_spec_rule(users: Server, name: str, needle: str) -> None:
    """The hazard: a 300-character name reached the database and came back as INTERNAL."""
    error = await users.error(CREATE, {"spec": SPEC, "name": name}, as_="alice")
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": "name"}, error
    assert needle in error["message"]
    assert (await users.gql("{ workflows { items { id } } }", as_="alice"))["workflows"]["items"] == []


async def test_create_workflow_name_names_the_exported_spec(users: Server) -> None:
    """The hazard: the YAML exported from workflow 'renamed' said 'original', so importing it (aihub run)
    made or changed another workflow."""
    version = (await users.gql(CREATE, {"spec": SPEC, "name": "renamed"}, as_="alice"))["createWorkflow"]
    assert version["workflow"]["name"] == "renamed"
    assert version["spec"]["name"] == "renamed"
    assert yaml.safe_load(version["yaml"])["name"] == "renamed"
    chinese = (await users.gql(CREATE, {"spec": SPEC, "name": "图像分类"}, as_="alice"))["createWorkflow"]
    assert chinese["workflow"]["name"] == chinese["spec"]["name"] == "图像分类"
    same = (await users.gql(CREATE, {"spec": SPEC, "name": "  original  "}, as_="alice"))["createWorkflow"]
    assert same["workflow"]["name"] == "original"


async def test_graphiql_has_a_csp_and_cannot_be_framed(users: Server) -> None:
    page = await users.http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp)
    assert nonce is not None and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    scripts = re.findall(r"<script\b[^>]*>", page.text)
    assert scripts and all(f'nonce="{nonce.group(1)}"' in tag for tag in scripts)
    again = await users.http.get("/graphql", headers={"Accept": "text/html"})
    assert again.headers["content-security-policy"] != csp  # a fresh nonce per page
