"""The one reconnect policy and the one consume-and-reconnect loop.

Every long-lived consumer of Volley -- the SDK's result watcher, the service's result router and
heartbeat listener, the endpoint's task intake -- runs :class:`ConsumeLoop`; every other place
that waits out an outage (the SDK's HTTP calls, the endpoint's result re-sending) asks an
:class:`Outage` how long to wait.  The transports do not retry consumers themselves: a consumer
reports the first loss and this module decides what happens next, so two retry schedules are
never stacked.

The schedule is capped exponential back-off with full-range jitter (each delay is drawn from
``[delay * (1 - jitter), delay]``, so many clients that lost the same broker do not come back in
lock step).  The give-up limit is the length of one continuous outage, in seconds; ``None``
(the default) means keep trying for as long as the program wants the connection -- an outage of
minutes or hours is normal for a long campaign.  ``$VOLLEY_GIVE_UP_AFTER`` sets it for every
program of a machine (seconds; ``0``, empty or ``never`` for no limit).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from volley.transport.base import Consumer, Delivery

log = logging.getLogger(__name__)

GIVE_UP_ENV = "VOLLEY_GIVE_UP_AFTER"


def _env_give_up() -> float | None:
    raw = os.environ.get(GIVE_UP_ENV, "").strip().lower()
    if raw in ("", "0", "never", "none"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"${GIVE_UP_ENV}={raw!r} is not a number of seconds; set it to e.g. 3600, or to 'never'"
        ) from None
    if value < 0:
        raise ValueError(f"${GIVE_UP_ENV} must not be negative, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How to wait out a lost connection: delays and when to stop trying."""

    first_delay: float = 0.2
    max_delay: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5
    give_up_after: float | None = None
    # the setting that changes give_up_after, named when giving up
    setting: str = f"${GIVE_UP_ENV}"

    @classmethod
    def default(cls, **overrides: Any) -> ReconnectPolicy:
        """The defaults, with the give-up limit from ``$VOLLEY_GIVE_UP_AFTER`` unless given."""
        if "give_up_after" not in overrides:
            overrides["give_up_after"] = _env_give_up()
        return cls(**overrides)

    def __post_init__(self) -> None:
        if self.first_delay <= 0 or self.max_delay < self.first_delay or self.factor < 1:
            raise ValueError(f"bad back-off: first {self.first_delay}, max {self.max_delay}, factor {self.factor}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.give_up_after is not None and self.give_up_after < 0:
            raise ValueError(f"give_up_after must be >= 0 seconds or None, got {self.give_up_after}")

    def with_limit(self, give_up_after: float | None, setting: str | None = None) -> ReconnectPolicy:
        return replace(self, give_up_after=give_up_after, setting=setting or self.setting)

    def delays(self) -> Iterator[float]:
        """The un-jittered schedule, without end: first, first*factor, ... capped at max."""
        delay = self.first_delay
        while True:
            yield delay
            delay = min(self.max_delay, delay * self.factor)

    def jittered(self, delay: float) -> float:
        return delay * (1 - self.jitter * random.random())


class GaveUp(ConnectionError):
    """An outage outlasted the give-up limit; the message names what was lost, for how long and
    the last error, and ``__cause__`` is that error."""


class Outage:
    """One stretch of failures of one connection: how long to wait next, when to give up, and a
    log line when the connection is lost and when it is back.

    ``failed(exc)`` returns the delay before the next try or raises :class:`GaveUp`;
    ``recovered()`` ends the stretch (a no-op when there was none)."""

    def __init__(self, what: str, policy: ReconnectPolicy | None = None, *,
                 logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.policy = policy or ReconnectPolicy.default()
        self.log = logger or log
        self._clock = clock
        self._schedule: Iterator[float] | None = None
        self.since: float | None = None
        self.attempts = 0
        self.outages = 0  # stretches of failure seen so far (0 until the first loss)

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        now = self._clock()
        if self.since is None:
            self.since = now
            self.attempts = 0
            self.outages += 1
            self._schedule = self.policy.delays()
            self.log.warning("%s: connection lost (%s); reconnecting", self.what, exc)
        self.attempts += 1
        elapsed = now - self.since
        limit = self.policy.give_up_after
        if limit is not None and elapsed >= limit:
            raise GaveUp(
                f"{self.what}: gave up after {elapsed:.0f} s and {self.attempts} attempts "
                f"(the limit is {limit:g} s, {self.policy.setting}); last error: {exc}"
            ) from exc
        assert self._schedule is not None
        delay = self.policy.jittered(next(self._schedule))
        if limit is not None:
            delay = max(0.0, min(delay, limit - elapsed))
        if self.attempts > 1:
            # one line per try would flood a log during a long outage; every fifth is enough
            level = logging.WARNING if self.attempts % 5 == 0 else logging.DEBUG
            self.log.log(level, "%s: still down after %.0f s (%d attempts): %s",
                         self.what, elapsed, self.attempts, exc)
        return delay

    def recovered(self) -> bool:
        """End the outage; True if there was one."""
        if self.since is None:
            return False
        self.log.warning("%s: connection back after %.1f s (%d attempts)",
                         self.what, self._clock() - self.since, self.attempts)
        self.since = None
        self._schedule = None
        return True


Batch = Sequence[Delivery]


class ConsumeLoop:
    """Consume one queue in batches until stopped, reopening the consumer after any loss.

    * ``open_consumer()`` makes a consumer (raising ``ConnectionError`` when it cannot);
    * ``handle(consumer, batch)`` handles each non-empty batch and settles its deliveries;
    * ``after_wait(consumer)``, if given, runs after every wait, even an empty one (the endpoint
      acks confirmed tasks there);
    * ``on_connected(consumer, reconnected)`` runs once per successful open (``reconnected`` is
      True after a loss: the place to ask what was missed meanwhile);
    * ``should_stop()`` is asked between waits; ``stop()`` may come from any thread.
    * with ``close_on_exit=False`` the consumer is left open (as ``self.consumer``) when the loop
      ends other than by a loss, for its owner to settle and close.

    Exceptions of the types in ``retry_on`` (``ConnectionError`` by default) from any of these
    close the consumer -- its unacked deliveries go back to the queue -- and start or continue an
    :class:`Outage`; when the policy gives up, :meth:`run` raises :class:`GaveUp`.  Any other
    exception ends the loop and propagates.
    """

    def __init__(
        self,
        what: str,
        open_consumer: Callable[[], Consumer],
        handle: Callable[[Consumer, Batch], None],
        *,
        policy: ReconnectPolicy | None = None,
        max_batch: int = 1024,
        timeout: Callable[[], float] | float = 0.25,
        after_wait: Callable[[Consumer], None] | None = None,
        on_connected: Callable[[Consumer, bool], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        retry_on: tuple[type[BaseException], ...] = (ConnectionError,),
        close_on_exit: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        self.what = what
        self._open = open_consumer
        self._handle = handle
        self.outage = Outage(what, policy, logger=logger)
        self.max_batch = max_batch
        self._timeout = timeout
        self._after_wait = after_wait
        self._on_connected = on_connected
        self._should_stop = should_stop or (lambda: False)
        self._retry_on = retry_on
        self._close_on_exit = close_on_exit
        self._stopped = threading.Event()
        self.consumer: Consumer | None = None
        self.connected = threading.Event()  # set while a consumer is open
        self.connections = 0

    def stop(self) -> None:
        self._stopped.set()
        consumer = self.consumer
        if consumer is not None:
            consumer.close()  # wakes a thread waiting in next_batch

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set() or self._should_stop()

    def run(self, first: Consumer | None = None) -> None:
        """Consume until stopped; ``first``, if given, is an open consumer to start with."""
        while not self.stopping:
            opened, first = first, None
            try:
                self._session(opened)
            except self._retry_on as exc:
                if self.stopping:
                    return
                if not isinstance(exc, ConnectionError | TimeoutError):
                    # not an outage but a failure in handling: show where, then retry the same
                    log.error("%s: error handling a batch; its messages return to the queue",
                              self.what, exc_info=exc)
                delay = self.outage.failed(exc)  # raises GaveUp past the limit
                if self._stopped.wait(delay):
                    return

    def _session(self, opened: Consumer | None) -> None:
        consumer = opened or self._open()
        self.consumer = consumer
        lost = True
        try:
            if self._stopped.is_set():
                return
            reconnected = self.outage.recovered()
            self.connections += 1
            self.connected.set()
            if self._on_connected is not None:
                self._on_connected(consumer, reconnected)
            timeout = self._timeout
            while not self.stopping:
                batch = consumer.next_batch(self.max_batch, timeout=timeout() if callable(timeout) else timeout)
                if batch:
                    self._handle(consumer, batch)
                if self._after_wait is not None:
                    self._after_wait(consumer)
            lost = False
        except BaseException as exc:
            lost = isinstance(exc, self._retry_on)
            raise
        finally:
            self.connected.clear()
            # on a loss the consumer is replaced; at the end its owner may still need it (the
            # endpoint acks the tasks that finish during its shutdown grace) and closes it
            if lost or self._close_on_exit:
                self.consumer = None
                try:
                    consumer.close()
                except Exception:  # already broken: nothing more to release
                    log.debug("%s: closing a broken consumer failed", self.what, exc_info=True)
