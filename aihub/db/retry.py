"""Database writes that survive a lost connection.

A PostgreSQL connection can die under a transaction (a restarted server, a failover, ``pg_terminate_backend``,
a network blip). The transaction is then rolled back, and the connection pool opens a new connection on the
next acquire, so the same transaction can simply run again. :func:`retrying` does that, with exponential
backoff, for errors that mean "the connection went away" — never for a constraint violation or a bad query.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger("aihub.db")

T = TypeVar("T")

FIRST_DELAY = 0.05
MAX_DELAY = 2.0
DEADLINE = 60.0


class AppliedButAnswerLost(ConnectionError):
    """The connection was lost after the server committed a write, before its answer arrived: the write is
    done (and must not be repeated), but what it returned is lost."""


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says the database connection was lost, not what was asked."""
    # (asyncpg's errors come only from asyncpg, which Tortoise imports for PostgreSQL only: on SQLite, as for
    # ``aihub run``, it is never imported — tests/test_startup.py)
    asyncpg = sys.modules.get("asyncpg")
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectionError):  # reset, refused, broken pipe
            return True
        if asyncpg is not None and _lost_postgres_connection(current, asyncpg):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _lost_postgres_connection(exc: BaseException, asyncpg: Any) -> bool:
    if isinstance(
        exc,
        (
            asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError included
            asyncpg.AdminShutdownError,  # pg_terminate_backend, a fast shutdown
            asyncpg.CrashShutdownError,
            asyncpg.CannotConnectNowError,  # starting up or in recovery
        ),
    ):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc)  # "connection is closed"
    if isinstance(exc, asyncpg.InternalClientError):
        # the protocol of a connection the server killed mid-statement is left in a wrong state; it is
        # discarded (aihub.db.pg), and the work runs again on a new one
        return "in progress" in str(exc)
    return False


async def retrying(
    write: Callable[[int], Awaitable[T]],
    *,
    what: str,
    deadline: float = DEADLINE,
    first_delay: float = FIRST_DELAY,
) -> T:
    """``await write(try_number)`` (0 first); on a lost connection again after a growing delay, until
    ``deadline`` seconds have passed — then the last error is raised. ``write`` must be one transaction
    (rolled back whole when the connection dies), so running it again is safe; ``try_number`` lets it
    tell a retry, whose previous try may have committed just before the connection died."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    delay = first_delay
    number = 0
    while True:
        try:
            return await write(number)
        except Exception as exc:
            if (
                isinstance(exc, AppliedButAnswerLost)
                or not is_connection_error(exc)
                or loop.time() + delay > end
            ):
                raise
            log.warning("%s: the database connection was lost (%s); again in %.2f s", what, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)
        number += 1


P = ParamSpec("P")


def retried(what: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """:func:`retrying` for an idempotent write function: each call runs it again on a lost connection."""

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await retrying(lambda _: fn(*args, **kwargs), what=what)

        return wrapper

    return decorate
