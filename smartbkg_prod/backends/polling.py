"""How often the driver asks an engine about its jobs: one policy per engine.

Each engine declares its default cadence (``Backend.poll_interval_s``) and, where it writes
down finished jobs itself, how often that record is read (``Backend.completion_interval_s``:
Slurm's jobcomp file, HTCondor's job event log; a file read, no scheduler load). A site's
value goes in the spec (``backend.poll_interval_s``) or on the command line
(``submit --poll-interval``). Every delay gets jitter, so that many submitters started
together do not query in step, and stretches (doubling, up to ``max_backoff_s``) while the
engine answers slowly or fails; one prompt answer brings the cadence back.

>>> schedule = PollSchedule(PollPolicy(interval_s=30.0, jitter=0.0))
>>> schedule.answered(now=0.0, answer_s=0.1), schedule.answered(now=30.0, answer_s=9.0)
(30.0, 60.0)
>>> schedule.answered(now=90.0, answer_s=0.1), schedule.failed(now=120.0)
(30.0, 60.0)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

# A delay stretched by slow answers or errors never exceeds this (unless the policy's own
# interval is longer).
MAX_BACKOFF_S = 600.0
# An answer slower than this fraction of the interval (and at least MIN_SLOW_ANSWER_S)
# counts as the engine being under load.
SLOW_ANSWER_FRACTION = 0.1
MIN_SLOW_ANSWER_S = 1.0


@dataclass(frozen=True)
class PollPolicy:
    """The cadence of one engine's queries.

    ``interval_s``: between two queries of the engine (each one batched query covering
    every job of the campaign in flight there). ``completion_interval_s``: between two
    reads of the engine's own record of finished jobs, None when the engine keeps none
    the driver can read. ``jitter``: each delay is drawn uniformly within ± this
    fraction of its value.
    """

    interval_s: float
    completion_interval_s: float | None = None
    jitter: float = 0.1
    max_backoff_s: float = MAX_BACKOFF_S

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError(f"poll interval must be positive, got {self.interval_s}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    @property
    def slow_answer_s(self) -> float:
        """An engine answering slower than this is taken to be under load."""
        return max(MIN_SLOW_ANSWER_S, SLOW_ANSWER_FRACTION * self.interval_s)


@dataclass
class PollSchedule:
    """When the driver next queries the engine or reads its completion record.

    Times are ``time.monotonic()`` seconds, passed in by the caller. ``arm(now)`` sets the
    timers that are not set (a query one interval after the first jobs were submitted);
    ``due(now)`` says what to do now; ``answered``/``failed`` set the next query from how
    the engine answered."""

    policy: PollPolicy
    rng: random.Random = field(default_factory=random.Random)
    slow_answers: int = 0
    failures: int = 0
    next_query: float | None = None
    next_completions: float | None = None

    def _jittered(self, delay: float) -> float:
        return delay * self.rng.uniform(1 - self.policy.jitter, 1 + self.policy.jitter)

    def _stretched(self, doublings: int) -> float:
        interval = self.policy.interval_s
        ceiling = max(interval, self.policy.max_backoff_s)
        return self._jittered(min(interval * 2**doublings, ceiling))

    def arm(self, now: float) -> float:
        """Set the timers not set yet; the time of the earliest one."""
        if self.next_query is None:
            self.next_query = now + self._jittered(self.policy.interval_s)
        if self.next_completions is None and self.policy.completion_interval_s is not None:
            self.next_completions = now + self._jittered(self.policy.completion_interval_s)
        return min(t for t in (self.next_query, self.next_completions) if t is not None)

    def due(self, now: float) -> Literal["query", "completions"] | None:
        """What is due at ``now``: a query of the engine, a read of its completion record
        (which clears that timer), or nothing."""
        if self.next_query is not None and now >= self.next_query:
            return "query"
        if self.next_completions is not None and now >= self.next_completions:
            self.next_completions = None
            return "completions"
        return None

    def answered(self, now: float, answer_s: float) -> float:
        """The engine answered a query in ``answer_s``: the delay to the next query."""
        self.failures = 0
        self.slow_answers = self.slow_answers + 1 if answer_s > self.policy.slow_answer_s else 0
        return self._next_query(now, self.slow_answers)

    def failed(self, now: float) -> float:
        """A query failed (``failures`` counts them in a row): the delay to the next one."""
        self.failures += 1
        return self._next_query(now, self.failures + self.slow_answers)

    def _next_query(self, now: float, doublings: int) -> float:
        delay = self._stretched(doublings)
        self.next_query = now + delay
        return delay
