"""How many tasks an endpoint takes from its queue ahead of its workers: adapted to how long
tasks take, unless ``prefetch:`` in the endpoint's config fixes it.

Too shallow a prefetch starves the workers of short tasks: each result must travel to the
broker and back before the next task arrives (a no-op task stack ran at a fifth of its speed
at the old fixed default, ``2 x workers + 8``).  Too deep a prefetch holds long tasks, and
their bodies, in memory for nothing.  So the agent subscribes with a ceiling
(:data:`CEILING`) and keeps the channel's limit at about what the workers finish in
:data:`BUFFER_S`, plus one task per worker: deep for short tasks, shallow for long ones, and
never more than :data:`MAX_HELD_BYTES` of task bodies at the average body size seen so far.
"""

from __future__ import annotations

import math
import time

CEILING = 4096  # the subscription's own limit
BUFFER_S = 0.5  # hold about this much work beyond what the workers run now
PERIOD_S = 0.25  # how often the limit is reconsidered
MAX_HELD_BYTES = 256 * 1024 * 1024
CHANGE = 0.25  # only a change of more than this fraction is sent to the broker


class AdaptivePrefetch:
    def __init__(self, capacity: int, fixed: int | None = None) -> None:
        self.capacity = max(1, capacity)
        self.fixed = fixed
        self.floor = 2 * self.capacity + 8
        self.current = fixed if fixed else self.floor
        self._since = time.monotonic()
        self._done = 0
        self._bytes = 0
        self._bodies = 0

    @property
    def adaptive(self) -> bool:
        return not self.fixed

    @property
    def ceiling(self) -> int:
        """The subscription's per-consumer prefetch."""
        return self.fixed or CEILING

    def received(self, body_size: int) -> None:
        self._bytes += body_size
        self._bodies += 1

    def finished(self, count: int = 1) -> None:
        self._done += count

    def update(self, now: float | None = None) -> int | None:
        """The new channel prefetch if it should change now, else None."""
        if not self.adaptive:
            return None
        now = time.monotonic() if now is None else now
        elapsed = now - self._since
        if elapsed < PERIOD_S:
            return None
        rate = self._done / elapsed
        self._since, self._done = now, 0
        target = self.capacity + math.ceil(rate * BUFFER_S)
        if self._bodies:
            target = min(target, max(1, MAX_HELD_BYTES * self._bodies // max(1, self._bytes)))
        target = max(self.floor, min(CEILING, target))
        if abs(target - self.current) <= CHANGE * self.current:
            return None
        self.current = target
        return target
