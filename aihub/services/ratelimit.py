"""Brute-force protection for password login: failed attempts counted in a sliding window, per key.

Two keys count each attempt: the normalised username (stripped, lower case) and the client's address. A key
with ``limit`` failures inside the last ``WINDOW_SECONDS`` is refused at once, before any password is checked,
until its oldest counted failure leaves the window. A successful login clears its username's failures (not
the address's: one good account must not reset an address that guesses at others).

An attempt counts as a failure from the moment it starts and is taken back when it succeeds (or breaks for
another reason). Checking and counting happen with no ``await`` in between, so a burst of parallel requests
cannot all pass the check while the first password hashes are still being computed.

The state lives in memory, per server process: several processes each keep their own counts, and a restart
forgets them. Memory stays bounded: a key keeps at most ``limit`` timestamps, expired keys are dropped as new
failures arrive, and at most ``MAX_TRACKED_KEYS`` keys of each kind are kept (the least recently failed go
first). Not thread-safe: it is used from the event loop only.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aihub.domain.messages import msg
from aihub.services.errors import ServiceError

#: the sliding window in which failures count
WINDOW_SECONDS = 15 * 60
#: failures allowed per username in the window (the next attempt is refused)
MAX_FAILURES_PER_USERNAME = 10
#: failures allowed per client address in the window, whatever the usernames
MAX_FAILURES_PER_CLIENT = 50
#: keys tracked per kind (usernames, addresses); beyond it the least recently failed key is forgotten
MAX_TRACKED_KEYS = 100_000

Clock = Callable[[], float]


class TooManyAttempts(ServiceError):
    """Too many failed logins for a username (``field="username"``) or from an address (``field="client"``)."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, *, field: str, retry_after: int) -> None:
        super().__init__(message, field=field)
        #: seconds until the oldest counted failure leaves the window
        self.retry_after = retry_after

    def details(self) -> dict[str, object]:
        return {"retryAfter": self.retry_after}


class FailureWindow:
    """Failure timestamps per key within a sliding window; keys ordered by their latest failure."""

    def __init__(self, limit: int, window: float, *, max_keys: int = MAX_TRACKED_KEYS) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it is under its limit."""
        stamps = self._live(key, now)
        if len(stamps) < self.limit:
            return 0.0
        return stamps[-self.limit] + self.window - now

    def add(self, key: str, now: float) -> None:
        stamps = self._live(key, now)
        stamps.append(now)
        del stamps[: -self.limit]
        self._failures[key] = stamps
        self._failures.move_to_end(key)
        self._sweep(now)

    def discard(self, key: str, stamp: float) -> None:
        """Take back one failure (an attempt that turned out not to be one)."""
        stamps = self._failures.get(key)
        if stamps is not None and stamp in stamps:
            stamps.remove(stamp)
            if not stamps:
                del self._failures[key]

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def reset(self) -> None:
        self._failures.clear()

    def _live(self, key: str, now: float) -> list[float]:
        stamps = [t for t in self._failures.get(key, ()) if t > now - self.window]
        if key in self._failures and not stamps:
            del self._failures[key]
        return stamps

    def _sweep(self, now: float) -> None:
        # the first key failed least recently: once its latest failure has expired, all of its failures have
        while self._failures:
            oldest_key, stamps = next(iter(self._failures.items()))
            if len(self._failures) <= self.max_keys and stamps[-1] > now - self.window:
                return
            del self._failures[oldest_key]


@dataclass(frozen=True)
class Attempt:
    username: str
    client: str | None
    started: float


class LoginLimiter:
    """The login policy: ``per_username`` failures per username and ``per_client`` per address in ``window``.

    ``clock`` is monotonic seconds; tests replace it to move time without sleeping.
    """

    def __init__(
        self,
        *,
        per_username: int = MAX_FAILURES_PER_USERNAME,
        per_client: int = MAX_FAILURES_PER_CLIENT,
        window: float = WINDOW_SECONDS,
        max_keys: int = MAX_TRACKED_KEYS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.clock = clock
        self.usernames = FailureWindow(per_username, window, max_keys=max_keys)
        self.clients = FailureWindow(per_client, window, max_keys=max_keys)

    def begin(self, username: str, client: str | None) -> Attempt:
        """Count an attempt as a failure until ``succeeded``/``abandoned``; raises ``TooManyAttempts``."""
        now = self.clock()
        attempt = Attempt(normalise_username(username), client, now)
        self._check(self.usernames, attempt.username, now, "username", msg("for this username"))
        if client is not None:
            self._check(self.clients, client, now, "client", msg("from this address"))
        self.usernames.add(attempt.username, now)
        if client is not None:
            self.clients.add(client, now)
        return attempt

    def succeeded(self, attempt: Attempt) -> None:
        self.usernames.clear(attempt.username)
        if attempt.client is not None:
            self.clients.discard(attempt.client, attempt.started)

    def abandoned(self, attempt: Attempt) -> None:
        """The attempt ended without an answer about the password (an error, a cancellation)."""
        self.usernames.discard(attempt.username, attempt.started)
        if attempt.client is not None:
            self.clients.discard(attempt.client, attempt.started)

    def reset(self) -> None:
        """Forget every failure (tests, or an operator lifting a lock)."""
        self.usernames.reset()
        self.clients.reset()

    @staticmethod
    def _check(failures: FailureWindow, key: str, now: float, field: str, which: str) -> None:
        wait = failures.retry_after(key, now)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise TooManyAttempts(
                msg(
                    "too many failed logins {which}; try again in {seconds} seconds",
                    which=which,
                    seconds=seconds,
                ),
                field=field,
                retry_after=seconds,
            )


def normalise_username(username: str) -> str:
    return username.strip().lower()


#: the limiter of this server process
login_limiter = LoginLimiter()
