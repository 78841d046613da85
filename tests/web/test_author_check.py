"""Issue 11, point 2: running someone else's workflow shows who wrote it and what it runs, and asks for a
confirmation, before the run starts (their commands run under the runner's name and run token)."""

from __future__ import annotations

from aihub.db.models import Run, User
from aihub.services.versions import set_workflow_shared
from aihub.services.workflows import create_workflow
from tests.web.webapp import Web

SPEC = {
    "name": "shared-work",
    "nodes": [
        {"name": "fetch", "command": "curl -s https://example.com/data > /tmp/workflow_space/d"},
        {"name": "train", "command": "python3 train.py --epochs 3", "depends_on": ["fetch"]},
    ],
}


async def _shared_version(owner: str) -> int:
    user = await User.get(username=owner)
    version = await create_workflow(user, SPEC)
    await set_workflow_shared(user, version.workflow_id, True)  # type: ignore[attr-defined]
    return version.id


async def test_a_colleagues_workflow_asks_before_it_runs(web: Web) -> None:
    """The hazard: a click on Run started a colleague's commands under the runner's name — an administrator's
    included — without a word about whose they were."""
    version_id = await _shared_version("alice")
    bob = await web.client("bob")  # alice's team
    page = await bob.get(f"/versions/{version_id}/run")
    assert page.status_code == 200
    assert "Written by alice" in page.text and 'id="author-ok"' in page.text
    assert "curl -s https://example.com/data" in page.text and "python3 train.py --epochs 3" in page.text
    refused = await bob.post(f"/versions/{version_id}/run", {"name": "try"})
    assert refused.status_code == 400
    assert 'id="author-error"' in refused.text and 'aria-invalid="true"' in refused.text
    assert await Run.all().count() == 0
    wrong = await bob.post(f"/versions/{version_id}/run", {"name": "try", "author_ok": str(version_id + 1)})
    assert wrong.status_code == 400 and await Run.all().count() == 0
    confirmed = await bob.post(f"/versions/{version_id}/run", {"name": "try", "author_ok": str(version_id)})
    assert confirmed.status_code == 303, confirmed.text
    run = await Run.get(name="try")
    assert run.owner_id == (await User.get(username="bob")).id  # type: ignore[attr-defined]


async def test_ones_own_workflow_runs_without_the_question(web: Web) -> None:
    version_id = await _shared_version("alice")
    alice = await web.client("alice")
    page = await alice.get(f"/versions/{version_id}/run")
    assert "author-check" not in page.text
    created = await alice.post(f"/versions/{version_id}/run", {"name": "mine"})
    assert created.status_code == 303
    picker = await alice.get(f"/runs/new?workflow=&version={version_id}")
    assert "author-check" not in picker.text
