"""Racing two operations over many rounds, and counting what broke: the race tests' harness.

A test runs ``rounds`` rounds, ``wave`` at a time, each on its own sessions. In
each round :func:`race` starts the two sides together, or holds one of them back
by up to twice the median time the racing calls have taken so far (so the spread
follows the backend and the implementation), so that both orders, and the
overlaps between them, occur. Every broken invariant of every round is counted in
a :class:`Tally`; the test fails with the counts per invariant and a few
examples, and also when the race never went one of its ways (which would make
its passing meaningless).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sessionmeta import RetryPolicy

# How long one round may take before the test calls it a hang (a deadlock nobody broke).
ROUND_TIMEOUT = 60.0


def kind(result: object) -> str:
    """``"ok"`` for a result, the exception's class name for an exception."""
    return "ok" if not isinstance(result, BaseException) else type(result).__name__


@dataclass
class Tally:
    """Outcomes and broken invariants over every round of one test."""

    backend: str
    rounds: int
    outcomes: Counter[str] = field(default_factory=Counter)
    broken: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    # How long the racing calls took, most recent last.
    durations: list[float] = field(default_factory=list)
    # Operations the database aborted for a concurrent one and the store ran again.
    retries: int = 0
    # What the rounds showed that breaks nothing, but is worth seeing in the report.
    notes: Counter[str] = field(default_factory=Counter)

    @property
    def jitter(self) -> float:
        """Twice the median time of the recent racing calls: the spread of their start offsets."""
        if not self.durations:
            return 0.0
        return min(max(2 * statistics.median(self.durations[-100:]), 0.0005), 0.05)

    def expect(self, holds: bool, invariant: str, index: int, detail: object) -> None:
        if not holds:
            self.broken[invariant] += 1
            if len(self.examples) < 5:
                self.examples.append(f"round {index}: {invariant}: {detail!r}")

    def report(self) -> str:
        return (
            f"{self.backend}, {self.rounds} rounds, jitter {self.jitter * 1000:.1f} ms, "
            f"{self.retries} retries: broken {dict(self.broken)}; notes {dict(self.notes)}; "
            f"outcomes {dict(self.outcomes)}; e.g. " + "; ".join(self.examples)
        )

    def verdict(self, *both_ways: Iterable[str]) -> None:
        """No invariant broke; and each group of outcomes was seen, so the race went each way.

        With ``SESSIONMETA_RACE_REPORT=1`` the tally is printed (``pytest -s``) either way.
        """
        if os.environ.get("SESSIONMETA_RACE_REPORT"):
            print(self.report())
        assert not self.broken, self.report()
        for group in both_ways:
            seen = sum(self.outcomes[outcome] for outcome in group)
            assert seen > 0, f"the race never gave {list(group)}: " + self.report()


async def race(
    tally: Tally,
    rng: random.Random,
    first: Callable[[], Awaitable[Any]],
    second: Callable[[], Awaitable[Any]],
) -> tuple[object, object]:
    """Both calls' outcomes (a result or the exception raised), run at once.

    One of them is held back by up to ``tally.jitter``, more often by little than
    by much, or (one round in five) neither is; and they are started in either
    order, since with no delay the one started first sends its first statement first.
    """
    jitter = tally.jitter
    offset = 0.0 if rng.random() < 0.2 else rng.choice([-1, 1]) * jitter * rng.random() ** 2

    async def attempt(call: Callable[[], Awaitable[Any]], delay: float) -> object:
        await asyncio.sleep(delay)
        started = time.perf_counter()
        try:
            return await call()
        except Exception as exc:
            return exc
        finally:
            tally.durations.append(time.perf_counter() - started)

    calls = [(first, max(offset, 0.0)), (second, max(-offset, 0.0))]
    order = [0, 1] if rng.random() < 0.5 else [1, 0]
    results = await asyncio.gather(*(attempt(*calls[which]) for which in order))
    by_call = dict(zip(order, results, strict=True))
    return by_call[0], by_call[1]


async def run_rounds(
    rounds: int,
    wave: int,
    seed: int,
    one_round: Callable[[int, random.Random], Awaitable[None]],
) -> None:
    """``rounds`` rounds, ``wave`` at a time, each with its own seeded random schedule;
    a wave that does not finish within :data:`ROUND_TIMEOUT` fails the test as a hang."""
    for start in range(0, rounds, wave):
        wave_rounds = range(start, min(start + wave, rounds))
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    *(one_round(index, random.Random(seed * 1000 + index)) for index in wave_rounds)
                ),
                ROUND_TIMEOUT,
            )
        except asyncio.TimeoutError:
            raise AssertionError(
                f"rounds {wave_rounds.start}-{wave_rounds.stop - 1} did not finish within "
                f"{ROUND_TIMEOUT} s: a deadlock nobody broke?"
            ) from None


@dataclass(frozen=True)
class CountedRetries(RetryPolicy):
    """The default retry policy, counting each retry (an operation the database aborted
    for a concurrent one, run again) into ``tally``."""

    tally: Tally | None = field(default=None, compare=False)

    def pauses(self) -> Iterator[float]:
        for pause in super().pauses():
            if self.tally is not None:
                self.tally.retries += 1
            yield pause
