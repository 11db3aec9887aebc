"""The peer: Parsl's HighThroughputExecutor on this machine, run by bench_default_stack.py in a
fresh interpreter (``python benches/parsl_htex.py --n N --round-trips M``).

What a user would pick instead of Volley on one machine: ``HighThroughputExecutor`` with
``max_workers_per_node`` workers and a ``LocalProvider``, everything else at Parsl's defaults,
running the same no-op function (``tasks/workload.py``, imported by name on the workers too).
Measured as Volley is (``measure.py``): after a warm-up that waits for the block's manager and
every worker, N tasks submitted at once (first submit to last result), then M sequential round
trips; the CPU of each of Parsl's processes in the window: this one (the DataFlowKernel), the
interchange, the manager (``process_worker_pool.py``) and its workers.  Its ``run_dir`` lives
in a temporary directory removed at the end, and ``dfk.cleanup()`` always runs (it stops the
interchange and the block).  Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "tasks"))

import parsl  # noqa: E402
import psutil  # noqa: E402
import workload  # noqa: E402
from cputime import CpuWindow, descendants, this_process  # noqa: E402
from measure import round_trips, throughput  # noqa: E402
from parsl.config import Config  # noqa: E402
from parsl.executors import HighThroughputExecutor  # noqa: E402
from parsl.providers import LocalProvider  # noqa: E402

MANAGER = "process_worker_pool"


def roles(run_dir: Path) -> dict[str, list[int]]:
    """Parsl's processes by what they run: this one; its children (the interchange); the
    manager, which LocalProvider starts detached from a shell script, found by its command
    line naming this run's ``run_dir``; the manager's children (its workers)."""
    managers = [p.pid for p in psutil.process_iter(["cmdline"])
                if MANAGER in " ".join(p.info["cmdline"] or ()) and str(run_dir) in " ".join(p.info["cmdline"] or ())]
    return {"client": this_process(), "interchange": descendants(os.getpid()), "manager": managers,
            "workers": [w for m in managers for w in descendants(m)]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--round-trips", type=int, required=True)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()

    # the workers import the no-op function by name, as Volley's endpoint does; Parsl starts
    # its interchange.py and process_worker_pool.py from PATH, as in an activated environment
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE / "tasks"), os.environ.get("PYTHONPATH")) if p)
    os.environ["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
    tmp = Path(tempfile.mkdtemp(prefix="bench-parsl-"))
    out: dict[str, Any] = {"parsl": parsl.__version__, "workers": a.workers,
                           "executor": f"HighThroughputExecutor(max_workers_per_node={a.workers}), LocalProvider()"}
    t0 = time.perf_counter()
    run_dir = tmp / "runinfo"
    dfk = parsl.load(Config(
        executors=[HighThroughputExecutor(label="htex", max_workers_per_node=a.workers, provider=LocalProvider())],
        run_dir=str(run_dir),
    ))
    try:
        noop = parsl.python_app(workload.noop, executors=["htex"])
        # start-up is not measured: the block's manager registers and every worker has run a task
        warm = [noop() for _ in range(4 * a.workers)]
        for f in warm:
            f.result(timeout=300)
        out["startup_s"] = time.perf_counter() - t0
        def found() -> dict[str, list[int]]:
            return roles(run_dir)

        out["processes"] = {role: len(pids) for role, pids in found().items()}
        assert out["processes"]["manager"] == 1, f"expected one manager for {run_dir}, found {out['processes']}"
        out["throughput"] = throughput(noop, a.n, CpuWindow(found))
        out["latency"] = round_trips(noop, a.round_trips, CpuWindow(found))
    finally:
        dfk.cleanup()
        parsl.clear()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
