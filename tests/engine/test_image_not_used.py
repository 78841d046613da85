"""Under the local executor a node that names an image says, in its log, that the image is not used."""

from __future__ import annotations

from aihub.db.models import User
from aihub.domain.status import RunStatus
from aihub.engine.executors.local import IMAGE_NOT_USED
from aihub.runtime import Runtime
from tests.engine.support import node_log, start_run, wait_for_run


async def test_a_node_naming_an_image_gets_one_line_saying_it_is_not_used(rt: Runtime, user: User) -> None:
    spec = {
        "name": "wf",
        "nodes": [
            {"name": "imaged", "image": "python:3.11-slim", "command": "echo ran"},
            {"name": "plain", "command": "echo ran"},
        ],
    }
    run = await wait_for_run(rt, (await start_run(rt, user, spec)).id)
    assert run.status is RunStatus.SUCCEEDED, run.message
    assert (await node_log(rt, run.id, "imaged")).splitlines() == [
        f"aihub: {IMAGE_NOT_USED} (image python:3.11-slim)",
        "ran",
    ]
    assert (await node_log(rt, run.id, "plain")).splitlines() == ["ran"]
