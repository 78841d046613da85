"""Publishing: who may ask, who may decide, what each decision does, who sees which review records."""

from __future__ import annotations

import pytest

from aihub.db.models import (
    Module,
    ModuleBuild,
    ModuleReview,
    ModuleStatus,
    ReviewStatus,
    Team,
    User,
)
from aihub.engine.builds import BuildManager
from aihub.services.errors import Conflict, Forbidden, InvalidInput, NotFound
from aihub.services.modules import get_module, update_module
from aihub.services.modules_resolve import usable_build
from aihub.services.reviews import can_review, list_reviews, request_publish, review_module
from tests.modules.conftest import MakeRepo, make_user, newest_build, register


async def team_of_three(peer_review: bool = False) -> tuple[User, User, User]:
    """(author, leader, mate) of team ``ml``."""
    author = await make_user("author", team="ml")
    leader = await make_user("leader", team="ml", leader=True)
    mate = await make_user("mate", team="ml")
    await Team.filter(name="ml").update(peer_review=peer_review)
    return author, leader, mate


async def built_module(builds: BuildManager, make_repo: MakeRepo, owner: User) -> Module:
    module = await register(builds, owner, make_repo("hash-file"))
    assert module.status is ModuleStatus.BUILT
    return module


async def test_approval_by_the_team_leader_publishes_the_build(
    builds: BuildManager, make_repo: MakeRepo
) -> None:
    author, leader, _ = await team_of_three()
    outsider = await make_user("outsider")
    module = await built_module(builds, make_repo, author)
    assert await usable_build(outsider, "hash-file") is None
    review = await request_publish(author, module.id)
    assert (review.status, review.requester_id) == (ReviewStatus.PENDING, author.id)  # type: ignore[attr-defined]
    assert (await Module.get(id=module.id)).status is ModuleStatus.PENDING_REVIEW
    decided = await review_module(leader, review.id, approve=True, reason="  looks good ")
    assert (decided.status, decided.reviewer_id, decided.reason) == (  # type: ignore[attr-defined]
        ReviewStatus.APPROVED,
        leader.id,
        "looks good",
    )
    assert decided.decided_at is not None
    assert (await Module.get(id=module.id)).status is ModuleStatus.PUBLISHED
    build = await newest_build(module)
    assert build.published
    usable = await usable_build(outsider, "hash-file")
    assert usable is not None and usable.id == build.id
    assert (await get_module(outsider, module.id)).id == module.id


async def test_rejection_needs_a_reason_then_the_author_asks_again_or_changes_something(
    builds: BuildManager, make_repo: MakeRepo
) -> None:
    author, leader, _ = await team_of_three()
    module = await built_module(builds, make_repo, author)
    review = await request_publish(author, module.id)
    for empty in ("", "   "):
        with pytest.raises(InvalidInput, match="a rejection needs a reason") as err:
            await review_module(leader, review.id, approve=False, reason=empty)
        assert err.value.field == "reason"
    rejected = await review_module(leader, review.id, approve=False, reason="README lacks examples")
    assert (rejected.status, rejected.reason) == (ReviewStatus.REJECTED, "README lacks examples")
    assert (await Module.get(id=module.id)).status is ModuleStatus.REJECTED
    assert not (await newest_build(module)).published
    with pytest.raises(Conflict, match="already decided"):
        await review_module(leader, review.id, approve=True)
    # the build is still the newest one: the author may ask again without a rebuild (issue 14)
    asked_again = await request_publish(author, module.id)
    assert asked_again.id != review.id and asked_again.build_id == review.build_id  # type: ignore[attr-defined]
    assert (await Module.get(id=module.id)).status is ModuleStatus.PENDING_REVIEW
    await review_module(leader, asked_again.id, approve=False, reason="still no examples")
    await update_module(builds, author, module.id, description="now with examples")
    await builds.wait((await newest_build(module)).id)
    again = await request_publish(author, module.id)
    assert again.build_id == (await newest_build(module)).id  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (ModuleStatus.BUILDING, "is still building"),
        (ModuleStatus.BUILD_FAILED, "failed to build"),
        (ModuleStatus.PENDING_REVIEW, "already waiting for a review"),
        (ModuleStatus.PUBLISHED, "already published"),
    ],
)
async def test_only_a_built_module_can_be_put_up_for_review(
    builds: BuildManager, make_repo: MakeRepo, status: ModuleStatus, message: str
) -> None:
    author = await make_user("author")
    module = await built_module(builds, make_repo, author)
    await Module.filter(id=module.id).update(status=status)
    with pytest.raises(Conflict, match=message):
        await request_publish(author, module.id)
    assert await ModuleReview.all().count() == 0


async def test_a_failed_build_cannot_be_put_up_for_review(builds: BuildManager, make_repo: MakeRepo) -> None:
    author = await make_user("author")
    module = await register(builds, author, make_repo("hash-file"), readme_path="missing.md")
    with pytest.raises(Conflict, match="failed to build"):
        await request_publish(author, module.id)


async def test_only_the_owner_asks(builds: BuildManager, make_repo: MakeRepo) -> None:
    author = await make_user("author")
    admin = await make_user("root", is_admin=True)
    module = await built_module(builds, make_repo, author)
    with pytest.raises(NotFound):
        await request_publish(await make_user("bob"), module.id)
    with pytest.raises(Forbidden, match="only the owner"):
        await request_publish(admin, module.id)


@pytest.mark.parametrize(
    ("reviewer", "peer_review", "allowed"),
    [
        ("admin", False, True),
        ("leader", False, True),
        ("mate", False, False),
        ("mate", True, True),
        ("other-leader", True, False),
        ("stranger", False, False),
    ],
)
async def test_who_may_review(
    builds: BuildManager, make_repo: MakeRepo, reviewer: str, peer_review: bool, allowed: bool
) -> None:
    author, leader, mate = await team_of_three(peer_review)
    users = {
        "admin": await make_user("root", is_admin=True),
        "leader": leader,
        "mate": mate,
        "other-leader": await make_user("boss", team="vision", leader=True),
        "stranger": await make_user("stranger"),
    }
    module = await built_module(builds, make_repo, author)
    review = await request_publish(author, module.id)
    who = users[reviewer]
    assert await can_review(who, review) is allowed
    if allowed:
        await review_module(who, review.id, approve=True)
        assert (await Module.get(id=module.id)).status is ModuleStatus.PUBLISHED
    else:
        with pytest.raises(NotFound, match=f"review {review.id} not found"):  # they cannot even see it
            await review_module(who, review.id, approve=True)
        assert (await ModuleReview.get(id=review.id)).status is ReviewStatus.PENDING


async def test_nobody_reviews_their_own_request(builds: BuildManager, make_repo: MakeRepo) -> None:
    """Not even an admin who leads their team."""
    admin = await make_user("root", is_admin=True, team="ml", leader=True)
    await Team.filter(name="ml").update(peer_review=True)
    module = await built_module(builds, make_repo, admin)
    review = await request_publish(admin, module.id)
    assert not await can_review(admin, review)
    with pytest.raises(Forbidden, match="cannot review your own request"):
        await review_module(admin, review.id, approve=True)


async def test_editing_withdraws_a_pending_request(builds: BuildManager, make_repo: MakeRepo) -> None:
    author, leader, _ = await team_of_three()
    module = await built_module(builds, make_repo, author)
    review = await request_publish(author, module.id)
    await update_module(builds, author, module.id, description="changed while waiting")
    withdrawn = await ModuleReview.get(id=review.id)
    assert withdrawn.status is ReviewStatus.REJECTED
    assert withdrawn.reason == "withdrawn: the module was changed (build 2)"
    assert withdrawn.reviewer_id is None  # type: ignore[attr-defined]
    with pytest.raises(Conflict, match="already decided"):
        await review_module(leader, review.id, approve=True)
    assert not await ModuleBuild.filter(published=True).exists()


async def test_who_sees_which_reviews(builds: BuildManager, make_repo: MakeRepo) -> None:
    author, leader, mate = await team_of_three()
    admin = await make_user("root", is_admin=True)
    other = await make_user("other", team="vision")
    other_leader = await make_user("boss", team="vision", leader=True)
    mine = await request_publish(author, (await built_module(builds, make_repo, author)).id)
    module2 = await register(builds, other, make_repo("hash-file"), name="hash-file-2")
    theirs = await request_publish(other, module2.id)

    async def seen(user: User) -> set[int]:
        return {r.id for r in await list_reviews(user)}

    assert await seen(admin) == {mine.id, theirs.id}
    assert await seen(leader) == {mine.id}
    assert await seen(other_leader) == {theirs.id}
    assert await seen(author) == {mine.id}
    assert await seen(mate) == set()  # no peer review in team ml
    await Team.filter(name="ml").update(peer_review=True)
    assert await seen(mate) == {mine.id}
    assert {r.id for r in await list_reviews(admin, status=ReviewStatus.PENDING)} == {mine.id, theirs.id}
    await review_module(admin, theirs.id, approve=False, reason="no tests")
    assert {r.id for r in await list_reviews(admin, status=ReviewStatus.PENDING)} == {mine.id}
