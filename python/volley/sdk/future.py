"""``ComputeFuture``: a ``concurrent.futures.Future`` that knows its task id.

``Future.__init__`` builds a ``threading.Condition`` (an RLock, a deque and five bound methods:
about 1.2 KiB and a microsecond) for every future.  An SDK future is usually waited on through
``wait``/``as_completed``/``result()`` late or never individually, and tens of thousands may be
outstanding, so a ComputeFuture makes its condition on first use instead.  Until then nothing
can be waiting on it (every waiter goes through the condition), which lets the result watcher
resolve it without one; one process-wide lock orders "make the condition" against "resolve
without one", so a waiter either finds the result or is notified.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from typing import Any

_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_CANCELLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))
# The fields Future.__init__ sets in the CPython versions we know; on any other layout the
# condition is made eagerly by Future.__init__ itself, as in the standard library.
_LAZY = set(Future().__dict__) == {"_condition", "_state", "_result", "_exception", "_waiters",
                                   "_done_callbacks"}
_CONDITION_LOCK = threading.Lock()
# How long cancel() waits for the endpoint's answer when the service passed the cancel on to a
# live endpoint: one that has not started the task answers within a round trip; a running
# task gets no answer, so this is what cancel() of a running task costs
CANCEL_WAIT_S = 2.0
# task ids per cancel request when many futures are cancelled together
CANCEL_CHUNK = 1000
_LOGGER = logging.getLogger("concurrent.futures")  # where Future logs a failing callback
_LOG = logging.getLogger(__name__)


class _LazyList:
    """An instance attribute holding a list made on first access.  Empty lists are still objects
    the cyclic GC tracks, and with 100,000 futures outstanding the collector's passes over two
    per future cost submit() more than everything else it does (measured: 8-12 us per call
    with the GC on, 3 us with it off).  ``setdefault`` is one atomic dict operation: two
    threads asking at once get the same list."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = "_lazy" + name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.setdefault(self.key, [])

    def __set__(self, obj: Any, value: list[Any]) -> None:
        obj.__dict__[self.key] = value


class ComputeFuture(Future):
    """``task_id`` is ``None`` until the service accepts the submission, then the task UUID string."""

    # set by cancel() when the service passed the request on to the endpoint, which has not
    # answered yet (a class default: no per-future cost)
    _cancel_requested = False

    def __init__(self, task_id: str | None = None) -> None:
        if _LAZY:
            self._state = PENDING
            self._result = None
            self._exception = None
        else:
            super().__init__()
        self.task_id: str | None = task_id
        self._metadata: dict[str, Any] = {}

    @property  # type: ignore[override]
    def _condition(self) -> threading.Condition:
        cond = self.__dict__.get("_lazy_condition")
        if cond is None:
            with _CONDITION_LOCK:
                cond = self.__dict__.get("_lazy_condition")
                if cond is None:
                    cond = self.__dict__["_lazy_condition"] = threading.Condition()
        return cond

    @_condition.setter
    def _condition(self, value: threading.Condition) -> None:
        self.__dict__["_lazy_condition"] = value

    # a volley.sdk.retry.Retrying when its Executor has retry_on; a class default otherwise, so
    # a future without one costs nothing for it
    _retry: Any = None

    # The two lists Future.__init__ makes, also made on first use (see _LazyList).
    _waiters = _LazyList()
    _done_callbacks = _LazyList()

    def set_result(self, result: Any) -> None:
        if not self._finish_unwatched(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._finish_unwatched(None, exception):
            super().set_exception(exception)

    def _finish_unwatched(self, result: Any, exception: BaseException | None) -> bool:
        """Resolve without a condition when none exists yet (so no thread waits); False when
        one does, and the standard path must notify its waiters."""
        with _CONDITION_LOCK:
            if "_lazy_condition" in self.__dict__:
                return False
            state = self._state
            if state not in _DONE:
                self._result, self._exception, self._state = result, exception, FINISHED
        if state in _DONE:  # raised outside the lock: repr() takes the condition
            raise InvalidStateError(f"{state}: {self!r}")
        # Future's own callback runner (not in typeshed): same logging of failing callbacks
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True

    def add_done_callback(self, fn: Any) -> None:
        """As ``Future.add_done_callback``, without making a condition while none exists (a
        progress bar over 100,000 futures would otherwise add 1.2 KiB to each).  Under the lock
        that ``_finish_unwatched`` resolves under, the callback is either listed before the
        state changes (and run by the resolver) or finds the future done (and runs here)."""
        if _LAZY:
            with _CONDITION_LOCK:
                if "_lazy_condition" not in self.__dict__:
                    if self._state not in _DONE:
                        self._done_callbacks.append(fn)
                        return
                    run_now = True
                else:
                    run_now = False
            if run_now:
                try:
                    fn(self)
                except Exception:
                    _LOGGER.exception("exception calling callback for %r", self)
                return
        super().add_done_callback(fn)

    def cancel(self, *, force: bool = False) -> bool:
        """Cancel the task (docs/sdk.md, "Cancel").  Not sent yet: cancelled here (the Executor
        never sends it).  Sent: the service is asked once.  True at once when the service
        cancelled it (still in its outbox, or its endpoint offline: it never runs); False at
        once when it had finished.  Otherwise the service told the live endpoint, which alone
        knows whether the task started: True once it answers that it dropped the task (within
        a round trip), False if no answer came within ``CANCEL_WAIT_S`` -- the task is running
        (the future still resolves as cancelled if the cancel lands later).  ``force`` is what
        ``Executor.cancel_running`` uses."""
        if self._state in _DONE:
            return self._state in _CANCELLED
        if self.task_id is None:
            return super().cancel()
        client = self._metadata.get("_client")
        if client is None:
            return False
        try:
            outcome = client.cancel_task(self.task_id, force=force).get(self.task_id)
        except Exception as exc:
            if force:
                raise
            _LOG.warning("could not cancel task %s: %s", self.task_id, exc)
            return False
        if outcome == "cancelled":
            self._cancel_here()
        elif outcome == "requested":
            # the user gave up on it: shutdown and exit no longer wait for it, even if its
            # endpoint never answers; it still resolves if an answer comes
            self._cancel_requested = True
            from concurrent.futures import wait

            wait([self], timeout=CANCEL_WAIT_S)
        return self._state in _CANCELLED

    def _cancel_here(self) -> bool:
        """Mark cancelled without asking anyone (the service said the task is cancelled)."""
        return super().cancel()

    # Lock-free snapshots for the SDK's own bookkeeping; like done()/cancelled(), the answer can
    # change right after, and they do not make a condition.
    def _is_done(self) -> bool:
        return self._state in _DONE

    def _is_cancelled(self) -> bool:
        return self._state in _CANCELLED

    def _has_failed(self) -> bool:
        """Once done: cancelled, or resolved with an exception."""
        return self._state in _CANCELLED or self._exception is not None

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]} task_id={self.task_id}>"


def cancel_all(futures: list[ComputeFuture], *, given_up: bool) -> None:
    """Cancel each of ``futures`` that is not done, asking the service once per
    :data:`CANCEL_CHUNK` sent tasks of a client rather than once each, and waiting for no
    endpoint: a future the service cancelled is cancelled now; one whose live endpoint was told
    resolves when it answers (cancelled, unless the task had started).  ``given_up``: the
    latter keep no shutdown or exit waiting meanwhile, as after ``cancel()``."""
    by_client: dict[int, tuple[Any, dict[str, ComputeFuture]]] = {}
    for f in futures:
        if f._state in _DONE:
            continue
        client = f._metadata.get("_client")
        if f.task_id is None or client is None:
            f.cancel()
            continue
        by_client.setdefault(id(client), (client, {}))[1][f.task_id] = f
    for client, sent in by_client.values():
        ids = list(sent)
        for i in range(0, len(ids), CANCEL_CHUNK):
            chunk = ids[i : i + CANCEL_CHUNK]
            try:
                outcomes = client.cancel_task(chunk)
            except Exception as exc:  # the service is away (retried already): the rest would wait too
                _LOG.warning("could not cancel %d tasks: %s", len(ids) - i, exc)
                break
            for task_id, outcome in outcomes.items():
                fut = sent.get(task_id)
                if fut is None:
                    continue
                if outcome == "cancelled":
                    fut._cancel_here()
                elif outcome == "requested" and given_up:
                    fut._cancel_requested = True
