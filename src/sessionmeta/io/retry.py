"""How the store retries an operation the database aborted only because of a concurrent one.

A deadlock (PostgreSQL, MySQL/MariaDB), a busy database file (SQLite) or a
Galera certification conflict rolls the whole transaction back, so running it
again from the start is safe. The policy is applied once, by the database seam,
around a whole operation; nothing retries inside it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from sessionmeta.errors import InvalidArgumentError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` tries, with a random pause before each retry.

    The pause before retry *n* is drawn from ``[0, min(max_pause, first_pause * 2**n)]``
    ("full jitter"): writers that collided once do not collide again in step. After the
    last attempt the error reaches the caller as :class:`~sessionmeta.ConcurrencyError`.

    The defaults (at most 5.1 s of pauses in all, 2.6 s expected) outlast a burst of 90
    writers of one session spread over a 3-node Galera cluster, whose certification
    conflicts abort them in turn for about 2 s: the most any of 4,050 such calls needed
    was 10 attempts (docs/scaling.md).
    """

    attempts: int = 16
    first_pause: float = 0.005
    max_pause: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise InvalidArgumentError(
                f"RetryPolicy.attempts must be an integer, not {self.attempts!r}"
            )
        if self.attempts < 1:
            raise InvalidArgumentError(
                f"RetryPolicy.attempts must be 1 or more, not {self.attempts}"
            )
        for name in ("first_pause", "max_pause"):
            pause = getattr(self, name)
            if isinstance(pause, bool) or not isinstance(pause, (int, float)) or not pause >= 0:
                raise InvalidArgumentError(
                    f"RetryPolicy.{name} must be a number of seconds >= 0, not {pause!r}"
                )

    def pauses(self) -> Iterator[float]:
        """The pause before each retry, ``attempts - 1`` of them."""
        for retry in range(1, self.attempts):
            yield random.uniform(0, min(self.max_pause, self.first_pause * 2**retry))


NO_RETRY = RetryPolicy(attempts=1)
