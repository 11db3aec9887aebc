"""The client the fault suite SIGKILLs: ``python -m <package>.client --records PATH --tasks N ...``.

A plain user script: ``Executor()`` configured from ``$VOLLEY_HOME`` like any user's, submits N
tasks, and reports on stdout, one JSON object a line: first ``{"task_group_id": ...}`` (what a
user would note down to ``reload_tasks`` later), then ``{"submitted": n, "acked": a,
"resolved": r, "errored": e}`` about twice a second until it is killed.  It never exits on its
own before ``--max-life`` seconds, and it exits when its parent goes away (stdin closes), so it
cannot outlive the harness.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _exit_with_parent() -> None:
    sys.stdin.read()  # EOF: the harness is gone
    os._exit(3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--records", required=True, help="file every execution appends its line to")
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--transport", default=None)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--delay", type=float, default=0.0, help="each task's run time, seconds")
    p.add_argument("--spread", type=float, default=0.0, help="spread the submissions over this many seconds")
    p.add_argument("--max-life", type=float, default=3600.0)
    args = p.parse_args(argv)

    threading.Thread(target=_exit_with_parent, daemon=True).start()
    from volley import Executor

    from .tasks import record

    ex = Executor(endpoint_id=args.endpoint, transport=args.transport)
    _emit({"task_group_id": str(ex.task_group_id)})
    futures = []
    slices = max(1, min(args.tasks, 20))
    t0 = time.monotonic()
    for k in range(slices):
        due = t0 + args.spread * k / slices
        while (now := time.monotonic()) < due:
            time.sleep(min(0.05, due - now))  # pacing the submissions, not waiting for an event
        for i in range(k * args.tasks // slices, (k + 1) * args.tasks // slices):
            futures.append(ex.submit(record, args.records, i, args.delay))
    end = time.monotonic() + args.max_life
    while time.monotonic() < end:
        acked = sum(1 for f in futures if f.task_id is not None)
        done = [f for f in futures if f.done()]
        errored = sum(1 for f in done if f.exception() is not None)
        _emit({"submitted": len(futures), "acked": acked, "resolved": len(done), "errored": errored})
        time.sleep(0.5)  # a progress report's period
    return 0


if __name__ == "__main__":
    sys.exit(main())
