"""``volley.progress``: a tqdm bar over futures (done of total, failures, rate, ETA).

The bar counts through done-callbacks, so it costs nothing while tasks run and sees each
future resolve exactly once, whoever resolves it (the result watcher, ``reload_tasks``, a
cancellation).  ``tqdm.auto`` draws a widget in Jupyter and text in a terminal; tqdm is
imported on first use, so ``import volley`` stays light.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

from volley.sdk.future import ComputeFuture

F = TypeVar("F", bound=Future)

# While waiting, the bar is redrawn this often so that elapsed time and ETA move between
# completions (a redraw only: the counting is done by the callbacks).
REFRESH_S = 1.0


def _failed(fut: Future) -> bool:
    if isinstance(fut, ComputeFuture):
        return fut._has_failed()  # no condition made per future (see ComputeFuture)
    return fut.cancelled() or fut.exception() is not None


class _Counter:
    """The bar and its counts; callbacks arrive on whichever threads resolve the futures."""

    def __init__(self, total: int, bar: Any) -> None:
        self.total, self.bar = total, bar
        self.done = self.failed = 0
        self.lock = threading.Lock()
        self.finished = threading.Event()
        if total == 0:
            self._close()

    def __call__(self, fut: Future) -> None:
        failed = _failed(fut)
        with self.lock:
            if self.finished.is_set():
                return
            self.done += 1
            if failed:
                self.failed += 1
                self.bar.set_postfix_str(f"failed={self.failed}", refresh=False)
            self.bar.update(1)
            if self.done >= self.total:
                self._close()

    def refresh(self) -> None:
        with self.lock:
            if not self.finished.is_set():
                self.bar.refresh()

    def stop(self) -> None:
        with self.lock:
            if not self.finished.is_set():
                self._close()

    def _close(self) -> None:
        self.bar.close()
        self.finished.set()


def progress(futures: Iterable[F], *, desc: str | None = None, wait: bool = True,
             **bar_options: Any) -> list[F]:
    """Show a progress bar over ``futures`` until every one is done; return them as a list.

    The bar reads ``done/total [elapsed<ETA, rate, failed=N]``: *done* counts every finished
    future, *failed* those that raised or were cancelled.  Any futures work: the Executor's,
    ``Executor.reload_tasks()``'s, or plain ``concurrent.futures`` ones.

    ``wait=True`` (the default) blocks until all are done (Ctrl-C stops waiting, not the tasks).
    ``wait=False`` returns at once and the bar advances as results arrive, for example while
    you consume ``concurrent.futures.as_completed(...)`` of the returned list; it closes itself
    when the last future is done.  ``desc`` labels the bar; ``bar_options`` go to tqdm (``file``,
    ``leave``, ``disable``, ``position``, ``mininterval``, ...).
    """
    from tqdm.auto import tqdm

    futs = list(futures)
    options: dict[str, Any] = {"unit": "task", "dynamic_ncols": True, "postfix": "failed=0"}
    options.update(bar_options)
    counter = _Counter(len(futs), tqdm(total=len(futs), desc=desc, **options))
    for fut in futs:
        fut.add_done_callback(counter)
    if wait:
        try:
            while not counter.finished.wait(REFRESH_S):
                counter.refresh()
        except BaseException:
            counter.stop()
            raise
    return futs
