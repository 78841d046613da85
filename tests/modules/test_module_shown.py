"""How each viewer sees a module (issue 14, point 3), on SQLite and PostgreSQL: services.modules.shown_modules
and the database filters of modules_query (the modules page's status filter is the status the viewer sees)."""

from __future__ import annotations

from aihub.db.models import Module, ModuleStatus
from aihub.engine.builds import BuildManager
from aihub.services.modules import modules_query, shown_module, update_module
from aihub.services.reviews import request_publish, review_module
from tests.modules.conftest import MakeRepo, make_user, newest_build
from tests.modules.test_module_reviews import built_module, team_of_three


async def names(query: object) -> list[str]:
    return [m.name for m in await query]  # type: ignore[attr-defined]


async def test_each_viewer_sees_the_module_as_the_seed_says(
    builds: BuildManager, make_repo: MakeRepo
) -> None:
    author, leader, _ = await team_of_three()
    outsider = await make_user("outsider")
    admin = await make_user("boss", is_admin=True)
    module = await built_module(builds, make_repo, author)
    assert await names(modules_query(outsider)) == []  # built, not published: the owner's only
    assert await names(modules_query(leader)) == []
    review = await request_publish(author, module.id)
    assert await names(modules_query(leader, status=ModuleStatus.PENDING_REVIEW)) == ["hash-file"]
    assert (await shown_module(leader, module)).status is ModuleStatus.PENDING_REVIEW
    assert await names(modules_query(outsider)) == []
    await review_module(leader, review.id, approve=True)

    await update_module(builds, author, module.id, description="edited")
    await builds.wait((await newest_build(module)).id)
    module = await Module.get(id=module.id)
    for viewer in (outsider, leader):
        shown = await shown_module(viewer, module)
        assert (shown.status, shown.fields["description"], shown.build.number) == (  # type: ignore[union-attr]
            ModuleStatus.PUBLISHED,
            "",
            1,
        )
        assert await names(modules_query(viewer, status=ModuleStatus.PUBLISHED)) == ["hash-file"]
        assert await names(modules_query(viewer, status=ModuleStatus.BUILT)) == []
    for viewer in (author, admin):
        shown = await shown_module(viewer, module)
        assert (shown.status, shown.fields["description"]) == (ModuleStatus.BUILT, "edited")
        assert shown.published is not None and shown.published.number == 1
        assert await names(modules_query(viewer, status=ModuleStatus.BUILT)) == ["hash-file"]
        assert await names(modules_query(viewer, status=ModuleStatus.PUBLISHED)) == []
        assert await names(modules_query(viewer, published=True)) == ["hash-file"]
    assert await names(modules_query(outsider, mine=True)) == []
