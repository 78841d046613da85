"""A real ``aihub serve`` for the fuzz tests, seeded through its own API with an object of every kind.

The server is the child process of ``tests/web/webserver.py`` (its output goes to ``server.log``, which the fuzz
tests read for tracebacks), with two test settings: argon2 at its cheapest parameters (every ``login`` and
``createUser`` the fuzzer sends would otherwise cost ~0.5 s) and ``file://`` git URLs allowed (the module is
built from a local repository, and no fuzzed URL ever reaches the network: the hooks replace them).

Seed (``Seed``): a succeeded run; a failed run whose node ``b`` never started; a workflow of the member; a
published-for-review module with a finished build and a pending review; a personal token; a team, a category, a
virtual cluster, a data storage; a member ``alice`` and throwaway users for the mutations that revoke things.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.polling import until_sync
from tests.web.webserver import ADMIN_PASSWORD, WebServer, web_server

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "fuzz-password-1"
THROWAWAY_USERS = 3
CHEAP_HASHING = (
    "from argon2 import PasswordHasher\n"
    "from aihub.services import users\n"
    "users._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)\n"
)
SUCCEEDING: dict[str, Any] = {
    "name": "fuzz-succeeding",
    "params": [{"name": "word", "default": "hello"}],
    "nodes": [
        {"name": "a", "command": "echo $w", "inputs": [{"name": "w", "from": "params.word"}]},
        {"name": "b", "depends_on": ["a"], "command": "echo done"},
    ],
}
FAILING: dict[str, Any] = {
    "name": "fuzz-failing",
    "nodes": [
        {"name": "a", "command": "echo doomed; exit 3"},
        {"name": "b", "depends_on": ["a"], "command": "echo never"},
    ],
}
HASH_FILE = {
    "category": "data",
    "name": "hash-file",
    "ref": "main",
    "inputs": [
        {"name": "input_file", "description": "path"},
        {"name": "algorithm", "description": "hashlib"},
    ],
    "outputs": [{"name": "digest", "path": "/tmp/workflow_space/hash-file/digest.txt", "type": "text"}],
}


class SeedError(AssertionError):
    pass


@dataclass
class Seed:
    """What the fuzzer may aim at: ids by kind, tokens, and the server's log."""

    url: str
    log_path: Path
    repo_url: str
    admin_token: str = ""
    member_token: str = ""
    throwaway_tokens: list[str] = field(default_factory=list)
    ids: dict[str, list[str]] = field(default_factory=dict)
    throwaway_user_ids: list[str] = field(default_factory=list)
    cursors: list[str] = field(default_factory=list)
    _log_offset: int = 0

    def gql(self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None) -> Any:
        token = self.admin_token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.post(
            self.url + "/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
            timeout=60,
        )
        body = response.json()
        if response.status_code != 200 or body.get("errors"):
            raise SeedError(f"{query}: {response.status_code} {body}")
        return body["data"]

    def all_ids(self) -> list[str]:
        return sorted({i for ids in self.ids.values() for i in ids}, key=int)

    def new_log(self) -> str:
        """The server's output since the previous call."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read()
        self._log_offset += len(text)
        return text.decode(errors="replace")

    def throwaway_token(self) -> str:
        """A fresh personal token of the admin, for a mutation that revokes the token it is sent with."""
        data = self.gql('mutation { createPersonalToken(name: "throwaway") { token } }')
        return str(data["createPersonalToken"]["token"])


def wait_run(seed: Seed, run_id: str, wanted: str, timeout: float = 60) -> None:
    def status() -> str:
        return str(seed.gql("query($id: ID!) { run(id: $id) { status } }", {"id": run_id})["run"]["status"])

    try:
        until_sync(lambda: status() == wanted, f"run {run_id} to be {wanted}", timeout=timeout)
    except AssertionError:
        raise SeedError(f"run {run_id} is {status()}, not {wanted}") from None


def wait_build(seed: Seed, module_id: str, timeout: float = 60) -> dict[str, Any]:
    query = "query($id: ID!) { module(id: $id) { status builds { id status } } }"
    deadline = time.monotonic() + timeout
    module: dict[str, Any] = {}
    while time.monotonic() < deadline:
        module = seed.gql(query, {"id": module_id})["module"]
        if module["status"] != "BUILDING":
            return module
        time.sleep(0.05)  # polling the server under test through its API, with a deadline
    raise SeedError(f"module {module_id} is still building: {module}")


def module_repo(base: Path) -> str:
    """A real git repository holding ``examples/modules/hash-file``, as a ``file://`` URL."""
    path = base / "hash-file"
    shutil.copytree(REPO / "examples" / "modules" / "hash-file", path)
    git = ["git", "-c", "user.name=Fuzz", "-c", "user.email=fuzz@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "initial"], cwd=path, check=True)
    return path.as_uri()


def _cursor(kind: str, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{row_id}".encode()).decode().rstrip("=")


def seed_server(seed: Seed) -> None:
    login = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token user { id } } }"
    admin = seed.gql(login, {"u": "admin", "p": ADMIN_PASSWORD}, token="")["login"]
    seed.admin_token = admin["token"]
    ids = seed.ids
    ids["user"] = [admin["user"]["id"]]
    ids["team"] = [seed.gql('mutation { createTeam(name: "fuzz-team") { id } }')["createTeam"]["id"]]
    ids["category"] = [seed.gql('mutation { createCategory(name: "data") { id } }')["createCategory"]["id"]]
    cluster = 'mutation { createVirtualCluster(input: {name: "fuzz-cluster", capacity: 2}) { id } }'
    ids["cluster"] = [seed.gql(cluster)["createVirtualCluster"]["id"]]
    storage = 'mutation { createDataStorage(input: {name: "fuzz-data", path: "/data/fuzz"}) { id } }'
    ids["storage"] = [seed.gql(storage)["createDataStorage"]["id"]]
    create_user = "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }"
    alice = {"username": "alice", "password": PASSWORD, "teamId": ids["team"][0]}
    ids["user"].append(seed.gql(create_user, {"i": alice})["createUser"]["id"])
    seed.member_token = seed.gql(login, {"u": "alice", "p": PASSWORD}, token="")["login"]["token"]
    for n in range(THROWAWAY_USERS):
        name = f"throwaway{n}"
        user_id = seed.gql(create_user, {"i": {"username": name, "password": PASSWORD}})["createUser"]["id"]
        seed.throwaway_user_ids.append(user_id)
        seed.throwaway_tokens.append(seed.gql(login, {"u": name, "p": PASSWORD}, token="")["login"]["token"])
    token = 'mutation { createPersonalToken(name: "seeded", expiresInDays: 30) { info { id } } }'
    ids["token"] = [seed.gql(token)["createPersonalToken"]["info"]["id"]]
    _seed_runs(seed)
    _seed_module(seed)


def _seed_runs(seed: Seed) -> None:
    create_wf = "mutation($s: JSON!) { createWorkflow(spec: $s) { id workflow { id } } }"
    create_run = "mutation($v: ID!) { createRun(versionId: $v) { id } }"
    ids = seed.ids
    ids["version"], ids["workflow"], ids["run"] = [], [], []
    for spec, status in ((SUCCEEDING, "SUCCEEDED"), (FAILING, "FAILED")):
        version = seed.gql(create_wf, {"s": spec}, token=seed.member_token)["createWorkflow"]
        run_id = seed.gql(create_run, {"v": version["id"]}, token=seed.member_token)["createRun"]["id"]
        wait_run(seed, run_id, status)
        ids["version"].append(version["id"])
        ids["workflow"].append(version["workflow"]["id"])
        ids["run"].append(run_id)
    seed.gql(
        "mutation($v: ID!) { setVersionTemplate(versionId: $v, isTemplate: true) { id } }",
        {"v": ids["version"][0]},
        token=seed.member_token,
    )
    seed.cursors = [_cursor("run", ids["run"][-1]), _cursor("workflow", ids["workflow"][-1])]


def _seed_module(seed: Seed) -> None:
    create = "mutation($i: CreateModuleInput!) { createModule(input: $i) { id } }"
    module_id = seed.gql(create, {"i": {**HASH_FILE, "gitUrl": seed.repo_url}}, token=seed.member_token)[
        "createModule"
    ]["id"]
    module = wait_build(seed, module_id)
    if module["status"] != "BUILT":
        raise SeedError(f"the seeded module did not build: {module}")
    review = "mutation($id: ID!) { requestModulePublish(id: $id) { id } }"
    seed.ids["module"] = [module_id]
    seed.ids["build"] = [module["builds"][0]["id"]]
    seed.ids["review"] = [
        seed.gql(review, {"id": module_id}, token=seed.member_token)["requestModulePublish"]["id"]
    ]


@contextmanager
def fuzz_server(*, setup_code: str = "") -> Iterator[Seed]:
    """A seeded server; its log is checked by the caller (``Seed.new_log``). ``setup_code`` runs in the server
    process before anything of ``aihub`` is imported but after cheap hashing is set up."""
    repos = Path(tempfile.mkdtemp(prefix="aihub-fuzz-repo-", dir="/var/tmp"))
    try:
        repo_url = module_repo(repos)
        with web_server(setup_code=CHEAP_HASHING + setup_code, AIHUB_ALLOW_FILE_GIT="true") as srv:
            seed = Seed(url=srv.url, log_path=srv.data_dir / "server.log", repo_url=repo_url)
            seed_server(seed)
            yield seed
    finally:
        shutil.rmtree(repos, ignore_errors=True)


__all__ = ["Seed", "WebServer", "fuzz_server"]
