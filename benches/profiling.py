"""Optional sampling profiles (py-spy) of the stack's processes during a benchmark run, so the
page can say what holds throughput back in the same run rather than from memory.

Off when py-spy is not installed or ``BENCH_PROFILE=0``.  py-spy runs with ``--nonblocking``
(it reads the target's memory without pausing it), so it costs the profiled processes little;
the profiled run is a separate run anyway, never the one whose rate is reported.  It samples
with ``--gil``: only the thread holding the GIL, i.e. where each process's Python CPU goes.
Without it, a thread blocked in native code (a broker wait, an fsync, a queue) with the GIL
released looks busy in whatever Python frame called it.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    if os.environ.get("BENCH_PROFILE", "1") == "0":
        return None
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"  # installed into the running venv
    return str(beside) if beside.exists() else None


class Profiler:
    def __init__(self, targets: dict[str, int | None], rate: int = 200) -> None:
        self.exe = py_spy()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
        self.procs: dict[str, subprocess.Popen] = {}
        if self.exe is None:
            return
        for name, pid in targets.items():
            if pid is None:
                continue
            self.procs[name] = subprocess.Popen(
                [self.exe, "record", "--nonblocking", "--gil", "--threads", "-r", str(rate), "-f", "raw",
                 "-o", str(self.dir / f"{name}.txt"), "-p", str(pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )

    @property
    def enabled(self) -> bool:
        return bool(self.procs)

    def stop(self) -> dict[str, Any]:
        """Stop sampling; per process, the heaviest frames by self time and by inclusive time."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        out: dict[str, Any] = {}
        for name, p in self.procs.items():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            path = self.dir / f"{name}.txt"
            if path.exists():
                out[name] = summarize(path.read_text())
        shutil.rmtree(self.dir, ignore_errors=True)
        return out


def _frame(frame: str) -> tuple[str, bool]:
    """"func (path/to/module.py:123)" -> ("func (pkg/module.py)", is it Volley's code?)."""
    func, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(where).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else where
    # entry points (<module>, main) are on every stack and say nothing
    ours = "volley" in parts and func not in ("<module>", "main")
    return f"{func} ({short})", ours


def summarize(raw: str, top: int = 12) -> dict[str, Any]:
    """py-spy's raw format: one ``frame;frame;...;leaf count`` line per distinct stack.

    With ``--threads`` the first frame names the thread.  Self time: the leaf, wherever it is;
    inclusive: each distinct frame of Volley's own code on the stack (library and interpreter
    frames such as ``Thread.run`` would be 100 % and say nothing).  py-spy leaves out idle
    samples (threads waiting on a lock or in ``select``) unless told ``--idle``.
    """
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames and frames[0].startswith("thread ("):
            threads[frames[0]] += n
            frames = frames[1:]
        if not frames:
            continue
        total += n
        names = [_frame(f) for f in frames]
        self_time[names[-1][0]] += n
        for name in {name for name, ours in names if ours}:
            inclusive[name] += n
    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(k, v / total) for k, v in counter.most_common(top)] if total else []

    return {"samples": total, "self": share(self_time), "inclusive": share(inclusive),
            "threads": share(threads)}
