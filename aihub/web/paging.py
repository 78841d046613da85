"""Page links for lists: ``?page=N`` over a list in memory (``paginate``) or over a database query
(``paginate_query``: a count and one page, so 10,000 rows cost what 50 do)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode

from starlette.requests import Request
from tortoise.models import Model
from tortoise.queryset import QuerySet

from aihub.domain.ids import parse_count

T = TypeVar("T")
M = TypeVar("M", bound=Model)
PAGE_SIZE = 50


@dataclass(frozen=True)
class Pager:
    page: int
    pages: int
    prev_url: str | None
    next_url: str | None


def paginate(request: Request, items: Sequence[T], size: int | None = None) -> tuple[list[T], Pager]:
    size = size or PAGE_SIZE
    raw = request.query_params.get("page", "1")
    pages = max(-(-len(items) // size), 1)
    page = min(max(parse_count(raw) or 1, 1), pages)

    def url(n: int) -> str:
        query = {k: v for k, v in request.query_params.items() if k != "page"}
        return f"{request.url.path}?{urlencode({**query, 'page': n})}"

    pager = Pager(page, pages, url(page - 1) if page > 1 else None, url(page + 1) if page < pages else None)
    return list(items[(page - 1) * size : page * size]), pager


async def paginate_query(
    request: Request, query: QuerySet[M], size: int | None = None
) -> tuple[list[M], Pager]:
    """``paginate`` in the database: a count and one page of the (ordered) query, however long the list is."""
    size = size or PAGE_SIZE
    total = await query.count()
    pages = max(-(-total // size), 1)
    page = min(max(parse_count(request.query_params.get("page", "1")) or 1, 1), pages)
    _, pager = paginate(request, range(total), size)
    rows = await query.offset((page - 1) * size).limit(size)
    return list(rows), pager
