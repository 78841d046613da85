"""Publishing modules: review requests and decisions (SPEC.md §5, the seed's 模块审核).

The owner of a BUILT module asks for it to be published; that creates a PENDING review of its newest build.
Who may decide: administrators; leaders of the requester's team; the requester's team mates when the team allows
peer review — never the requester. Approval publishes the build (everybody may use it from then on); rejection
needs a reason the author can act on. Editing or rebuilding the module withdraws a pending request.

Who sees which reviews: admins all; leaders (and, in peer-review teams, every member) their team's; everybody
their own requests.
"""

from __future__ import annotations

from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from aihub.db.models import (
    BuildStatus,
    Module,
    ModuleBuild,
    ModuleReview,
    ModuleStatus,
    ReviewStatus,
    Team,
    User,
)
from aihub.domain.messages import Message, msg
from aihub.services.access import reviews_visible_to
from aihub.services.errors import Conflict, Forbidden, InvalidInput, NotFound
from aihub.services.modules import get_module, latest_build
from aihub.services.status import move_module, move_review, utcnow

__all__ = [
    "can_review",
    "list_reviews",
    "request_publish",
    "review_module",
    "reviews_query",
    "reviews_visible_to",
]

MAX_REASON = 5000


def _not_ready(status: ModuleStatus, name: str) -> Message | None:
    """Why a module in ``status`` cannot be sent to review, or None when it can."""
    if status is ModuleStatus.BUILDING:
        return msg("module {name} is still building; ask for a review once the build has finished", name=name)
    if status is ModuleStatus.BUILD_FAILED:
        return msg("module {name} failed to build; fix it and rebuild before asking for a review", name=name)
    if status is ModuleStatus.PENDING_REVIEW:
        return msg("module {name} is already waiting for a review", name=name)
    if status is ModuleStatus.PUBLISHED:
        return msg("module {name} is already published", name=name)
    return None


def reviews_query(
    user: User,
    *,
    status: ReviewStatus | None = None,
    search: str | None = None,
    requester: str | None = None,
    module_id: int | None = None,
) -> QuerySet[ModuleReview]:
    """The reviews ``user`` sees, newest first, narrowed by status, a part of the module's name, the requester's
    username and the module."""
    query = reviews_visible_to(user)
    if status is not None:
        query = query.filter(status=status)
    if search:
        query = query.filter(module__name__icontains=search)
    if requester:
        query = query.filter(requester__username=requester)
    if module_id is not None:
        query = query.filter(module_id=module_id)
    return query.order_by("-id")


async def list_reviews(user: User, *, status: ReviewStatus | None = None) -> list[ModuleReview]:
    query = reviews_visible_to(user)
    if status is not None:
        query = query.filter(status=status)
    return await query.order_by("-id").prefetch_related("module", "build", "requester", "reviewer")


async def get_review(user: User, review_id: int) -> ModuleReview:
    review = await reviews_visible_to(user).get_or_none(id=review_id).prefetch_related("requester")
    if review is None:
        raise NotFound(msg("review {review} not found", review=review_id), field="reviewId")
    return review


async def _why_not_reviewer(user: User, requester: User) -> str | None:
    """None if ``user`` may decide on ``requester``'s request, else the reason why not."""
    if requester.id == user.id:
        return msg("you cannot review your own request; an administrator or your team leader decides")
    if user.is_admin:
        return None
    team_id = requester.team_id  # type: ignore[attr-defined]
    if team_id is not None and user.team_id == team_id:  # type: ignore[attr-defined]
        if user.is_team_leader:
            return None
        team = await Team.get(id=team_id)
        if team.peer_review:
            return None
        return msg("only the leaders of team {team} or an administrator may review it", team=repr(team.name))
    return msg("only an administrator or a leader of the requester's team may review it")


async def can_review(user: User, review: ModuleReview) -> bool:
    requester = await User.get(id=review.requester_id)  # type: ignore[attr-defined]
    return review.status is ReviewStatus.PENDING and await _why_not_reviewer(user, requester) is None


async def request_publish(user: User, module_id: int) -> ModuleReview:
    """Ask for the newest build of one's BUILT module to be published."""
    module = await get_module(user, module_id)
    if module.owner_id != user.id:  # type: ignore[attr-defined]
        raise Forbidden(
            msg("only the owner of module {name} may ask for it to be published", name=repr(module.name)),
            field="id",
        )
    async with in_transaction():
        module = await Module.get(id=module.id).select_for_update()
        build = await latest_build(module.id)
        not_ready = _not_ready(module.status, repr(module.name))
        if not_ready is not None:
            raise Conflict(not_ready, field="id")
        if build is None or build.status is not BuildStatus.BUILT:
            raise Conflict(
                msg("module {name} has no finished build to publish", name=repr(module.name)), field="id"
            )
        # after a rejection the owner may edit or rebuild (a new build), or ask again for the same build when
        # it is still the newest one (e.g. the reviewer's concern was answered elsewhere): no rebuild needed
        review = await ModuleReview.create(module=module, build=build, requester=user)
        await move_module(module, ModuleStatus.PENDING_REVIEW)
    return review


async def review_module(user: User, review_id: int, *, approve: bool, reason: str = "") -> ModuleReview:
    """Decide on a pending request: approve publishes the build; reject needs a reason."""
    review = await get_review(user, review_id)
    why_not = await _why_not_reviewer(user, review.requester)
    if why_not is not None:
        raise Forbidden(why_not, field="reviewId")
    reason = (reason or "").strip()
    if not approve and not reason:
        raise InvalidInput(msg("a rejection needs a reason, so the author knows what to fix"), field="reason")
    if len(reason) > MAX_REASON:
        raise InvalidInput(
            msg("the reason is longer than {count} characters", count=MAX_REASON), field="reason"
        )
    async with in_transaction():
        review = await ModuleReview.get(id=review.id).select_for_update()
        if review.status is not ReviewStatus.PENDING:
            raise Conflict(
                msg(
                    "review {review} was already decided ({status})",
                    review=review.id,
                    status=review.status.value,
                ),
                field="reviewId",
            )
        review.reviewer = user
        review.reason = reason
        review.decided_at = utcnow()
        await review.save()
        await move_review(review, ReviewStatus.APPROVED if approve else ReviewStatus.REJECTED)
        if approve:
            await ModuleBuild.filter(id=review.build_id).update(published=True)  # type: ignore[attr-defined]
        await move_module(review.module_id, ModuleStatus.PUBLISHED if approve else ModuleStatus.REJECTED)  # type: ignore[attr-defined]
    return review
