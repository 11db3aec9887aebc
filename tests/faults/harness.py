"""The fault suite: real processes, real SIGKILLs, every future accounted for.

For each transport (native, python) a private local stack is started on free ports in its own
``VOLLEY_HOME`` with the project's launcher (``LocalStack(home).up()``), with
``VOLLEY_TRANSPORT`` set for its processes.  Then, one *phase* per fault, each with its own task
group and N tasks of :func:`tasks.record` (which appends one line per execution to a file, so
executions are counted independently of what the system reports):

``endpoint``  SIGKILL of the endpoint agent's whole process group (agent and workers), then ``up()``
``service``   SIGKILL of the web service's process group, then ``up()``
``broker``    SIGKILL of the RabbitMQ node's process group, then ``up()``
``outage``    the same, but the broker stays down ``outage_s`` seconds before ``up()``
``client``    a client subprocess submits N tasks and is SIGKILLed mid-run; this process then
              ``Executor.reload_tasks(task_group_id)`` and collects

Submissions are spread over ``spread_s`` seconds and the fault strikes once ``fault_at`` of
them are submitted and tasks are executing, so it hits submission, execution and result delivery
alike.  Then every future is waited for (``deadline_s`` at most after the stack is back; earlier
when nothing at all happens for ``stall_s``) and classified: right, wrong, errored (by exception
type), hung; executions per task come from the record file (more than once, never), and a
result surfaced twice is seen two ways: a probe on each future's ``set_result`` /
``set_exception`` (delegating to the real method) counts a second resolution, which the SDK
would otherwise swallow as ``InvalidStateError``, and task ids / task indices must be unique
among the collected results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import tasks
from .guarantees import markdown as guarantees_table

FAULTS = ("endpoint", "service", "broker", "outage", "client")
TRANSPORTS = ("native", "python")
REPO = Path(__file__).resolve().parents[2]
DOCS_PAGE = REPO / "docs" / "reliability.md"
# The directory that makes ``tasks.__name__`` importable (``tests/`` under pytest, the repository
# under ``python -m tests.faults``): the stack's processes get it on their PYTHONPATH.
TASKS_ROOT = Path(tasks.__file__).resolve().parents[len(tasks.__name__.split(".")) - 1]
CLIENT_MODULE = f"{__package__}.client"
# the least run time of a task in the client fault (see _run_client)
CLIENT_TASK_DELAY_S = 0.01

_ENV_LOCK = threading.Lock()


# --- settings and results ----------------------------------------------------------------------
@dataclass
class Settings:
    tasks: int = 20_000              # per phase (per transport and fault)
    transports: tuple[str, ...] = TRANSPORTS
    faults: tuple[str, ...] = FAULTS
    outage_s: float = 30.0           # how long the broker stays down in the ``outage`` fault
    spread_s: float = 10.0           # submissions are spread over this many seconds
    fault_at: float = 0.3            # the fault strikes once this fraction is submitted
    task_delay_s: float = 0.0        # each task's own run time
    deadline_s: float = 900.0        # every future must resolve within this after the repair
    stall_s: float = 180.0           # ... and stop waiting when nothing happens for this long
    workdir: Path | None = None      # default: a temporary directory, removed at the end
    progress_every_s: float = 5.0
    log: Callable[[str], None] = print

    @classmethod
    def short(cls, **overrides: Any) -> Settings:
        """The version inside ``make test``: a few hundred tasks, one fault of each kind."""
        base = cls(tasks=300, outage_s=5.0, spread_s=2.0, task_delay_s=0.02, deadline_s=120.0,
                   stall_s=45.0)
        return replace(base, **overrides)


@dataclass
class PhaseResult:
    transport: str
    fault: str
    tasks: int
    right: int = 0
    wrong: int = 0
    errored: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)
    hung: int = 0
    surfaced_twice: int = 0
    not_submitted: int = 0            # client fault: tasks the service does not know
    executed_more_than_once: int = 0  # tasks (indices) with two or more execution records
    extra_executions: int = 0         # executions beyond the first, summed
    never_executed: int = 0
    tasks_at_service: int | None = None
    wrong_example: str = ""
    twice_example: str = ""
    fault_note: str = ""
    repair_s: float = 0.0             # from the SIGKILL until the launcher had everything back
    phase_s: float = 0.0
    aborted: str = ""                 # the phase could not run to the end (stack not restartable)

    @property
    def errors(self) -> int:
        return sum(self.errored.values())

    @property
    def lost(self) -> int:
        """Futures that failed (a task of this suite cannot fail by itself) or tasks gone."""
        return self.errors + self.not_submitted

    @property
    def ok(self) -> bool:
        return not (self.aborted or self.lost or self.wrong or self.hung or self.surfaced_twice)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["errored"] = dict(self.errored)
        d.update(lost=self.lost, ok=self.ok)
        return d


@dataclass
class SuiteResult:
    settings: Settings
    phases: list[PhaseResult] = field(default_factory=list)
    started: str = ""
    elapsed_s: float = 0.0
    machine: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        expected = len(self.settings.transports) * len(self.settings.faults)
        return len(self.phases) == expected and all(p.ok for p in self.phases)


# --- the stack -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Variables the stack's children inherit while the launcher spawns them."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _group_members(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that still hold resources.  A SIGKILLed
    multi-threaded process (RabbitMQ's beam.smp) shows its leader as a zombie while its other
    threads are still exiting, and until the last one is gone its sockets stay open: such a
    process counts as alive here (its ``task/`` directory lists more than the leader)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            if fields[0] not in ("Z", "X") or len(os.listdir(entry / "task")) > 1:
                members.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return members


def _wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


class Stack:
    """One private local stack, started and restarted only through the project's launcher."""

    PIDFILES = {
        "endpoint": Path("endpoints/default/daemon.pid"),
        "service": Path("service/service.pid"),
        "broker": Path("broker/server.pid"),
    }

    def __init__(self, home: Path, transport: str, log: Callable[[str], None]) -> None:
        self.home = home
        self.transport = transport
        self.log = log
        self.groups: set[int] = set()        # every process group this stack ever had

    def _launcher(self) -> Any:
        from volley.local.stack import LocalStack

        return LocalStack(self.home, progress=lambda m: self.log(f"    [launcher] {m}"))

    def up(self) -> dict[str, Any]:
        pythonpath = os.pathsep.join(p for p in (str(TASKS_ROOT), os.environ.get("PYTHONPATH")) if p)
        with _environ(VOLLEY_TRANSPORT=self.transport, PYTHONPATH=pythonpath):
            status: dict[str, Any] = self._launcher().up()
        self._note_processes()
        return status

    def _note_processes(self) -> None:
        for name in self.PIDFILES:
            pid = self.pid(name)
            if pid is not None:
                self.groups.add(pid)  # each was spawned as the leader of its own session

    def endpoint_consuming(self, timeout: float) -> bool:
        """Checked here, not taken from the launcher: the service calls the endpoint online on a
        killed agent's last heartbeat too; the new agent itself writes ``daemon.ready`` (its
        pid) once it consumes its queue again."""
        ready = self.home / "endpoints" / "default" / "daemon.ready"

        def consuming() -> bool:
            pid = self.pid("endpoint")
            return pid is not None and _read_pid(ready) == pid

        return _wait_for(consuming, timeout)

    def pid(self, component: str) -> int | None:
        return _read_pid(self.home / self.PIDFILES[component])

    def broker_info(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.home / "broker" / "broker.json").read_text()))
        except (OSError, ValueError):
            return {}

    def config(self) -> dict[str, Any]:
        return dict(json.loads((self.home / "config.json").read_text()))

    def client(self) -> Any:
        from volley.sdk.client import Client

        cfg = self.config()
        return Client(service_url=cfg["service_url"], token=cfg["token"], ca_file=cfg["ca_file"],
                      do_version_check=False)

    def kill(self, component: str) -> str:
        """SIGKILL the component's whole process group; return once no member is left."""
        pgid = self.pid(component)
        if pgid is None:
            raise RuntimeError(f"{component}: no pid file under {self.home}")
        members = _group_members(pgid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        if not _wait_for(lambda: not _group_members(pgid), timeout=30):
            raise RuntimeError(f"{component}: process group {pgid} survived SIGKILL")
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pgid, os.WNOHANG)  # the launcher ran in this process: reap our child
        n = len(members)
        return f"process group {pgid} ({n} process{'' if n == 1 else 'es'}) SIGKILLed"

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("VOLLEY_SERVICE_URL", "VOLLEY_TOKEN", "VOLLEY_CA_FILE", "VOLLEY_ENDPOINT_ID"):
            env.pop(var, None)
        env["VOLLEY_HOME"] = str(self.home)
        env["VOLLEY_TRANSPORT"] = self.transport
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TASKS_ROOT), env.get("PYTHONPATH")) if p)
        return env

    def down(self) -> None:
        """The launcher's ``down``; then whatever of this stack's groups is left (a broker
        killed by the suite leaves its private epmd behind) is stopped too."""
        try:
            self._launcher().down()
        except Exception as exc:
            self.log(f"    [stack] down failed: {exc}; killing the stack's process groups")
        for pgid in sorted(self.groups):
            if _group_members(pgid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
        for pid in self._own_epmds():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _own_epmds(self) -> list[int]:
        """The Erlang port mappers this stack's broker started: each node start runs its own
        (in a session of its own, so it outlives a SIGKILL of the node's group) with the
        node's environment, ``HOME`` being the broker's directory."""
        home = f"HOME={self.home.resolve() / 'broker'}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() != "epmd":
                    continue
                if home in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found


# --- counting ------------------------------------------------------------------------------------
class Records:
    """Reads the execution records file incrementally: ``counts[i]`` executions of task ``i``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[int] = Counter()
        self.total = 0
        self._offset = 0
        self._partial = b""

    def refresh(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self.total
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line:
                self.counts[int(line.split()[0])] += 1
                self.total += 1
        return self.total


class Tracker:
    """The futures of one phase: how many resolved, and any resolved twice."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.futures: dict[int, Any] = {}          # task index -> future
        self.submit_errors: dict[int, BaseException] = {}
        self.resolved = 0
        self.errored = 0
        self.twice = 0
        self.twice_example = ""
        self.all_done = threading.Event()
        self._lock = threading.Lock()
        if expected == 0:
            self.all_done.set()

    def add(self, i: int, fut: Any) -> None:
        self.futures[i] = fut
        self._probe(fut)
        fut.add_done_callback(self._done)

    def add_submit_error(self, i: int, exc: BaseException) -> None:
        self.submit_errors[i] = exc
        self._count(errored=True)

    def _probe(self, fut: Any) -> None:
        """Count a second resolution of ``fut`` (the real method still runs and raises)."""
        for name in ("set_result", "set_exception"):
            real = getattr(fut, name)

            def probe(value: Any, _real: Callable[[Any], None] = real, _name: str = name) -> None:
                if fut.done() and not fut.cancelled():
                    with self._lock:
                        self.twice += 1
                        if not self.twice_example:
                            self.twice_example = f"task {fut.task_id}: {_name}({value!r:.120}) on a resolved future"
                _real(value)

            setattr(fut, name, probe)

    def _done(self, fut: Any) -> None:
        self._count(errored=not fut.cancelled() and fut.exception() is not None)

    def _count(self, errored: bool) -> None:
        with self._lock:
            self.resolved += 1
            self.errored += errored
            if self.resolved >= self.expected:
                self.all_done.set()

    def acked(self) -> int:
        return sum(1 for f in list(self.futures.values()) if f.task_id is not None)


def _error_text(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _classify(res: PhaseResult, tracker: Tracker, records: Records) -> None:
    """Right / wrong / errored / hung per task index, executions from the records."""
    seen_ids: Counter[str] = Counter()
    for i in range(res.tasks):
        exc: BaseException | None
        fut = tracker.futures.get(i)
        if fut is None:
            exc = tracker.submit_errors.get(i) or RuntimeError("never submitted")
        elif not fut.done() or fut.cancelled():  # still pending at the deadline: it never resolved
            res.hung += 1
            continue
        else:
            exc = fut.exception()
            if fut.task_id is not None:
                seen_ids[fut.task_id] += 1
        if exc is not None:
            name = type(exc).__name__
            res.errored[name] += 1
            res.error_examples.setdefault(name, _error_text(exc))
            continue
        value = fut.result()
        if isinstance(value, list | tuple) and tuple(value) == tasks.expected(i):
            res.right += 1
        else:
            res.wrong += 1
            res.wrong_example = res.wrong_example or f"task {i}: {value!r:.120}"
    dup_ids = sum(n - 1 for n in seen_ids.values() if n > 1)
    if dup_ids:
        res.surfaced_twice += dup_ids
        res.twice_example = res.twice_example or "two futures were given the same task id"
    res.surfaced_twice += tracker.twice
    res.twice_example = res.twice_example or tracker.twice_example
    _count_executions(res, records, range(res.tasks))


def _count_executions(res: PhaseResult, records: Records, indices: range) -> None:
    records.refresh()
    for i in indices:
        n = records.counts.get(i, 0)
        if n == 0:
            res.never_executed += 1
        elif n > 1:
            res.executed_more_than_once += 1
            res.extra_executions += n - 1


# --- one phase ------------------------------------------------------------------------------------
class Phase:
    def __init__(self, stack: Stack, fault: str, s: Settings, workdir: Path) -> None:
        self.stack = stack
        self.fault = fault
        self.s = s
        self.res = PhaseResult(stack.transport, fault, s.tasks)
        self.records = Records(workdir / f"{stack.transport}-{fault}.records")
        self.tag = f"[{stack.transport}/{fault}]"
        self.t0 = time.monotonic()
        self.stop = threading.Event()

    def say(self, msg: str) -> None:
        self.s.log(f"{self.tag} {time.monotonic() - self.t0:6.1f}s {msg}")

    def run(self) -> PhaseResult:
        try:
            if self.fault == "client":
                self._run_client()
            else:
                self._run_in_process()
        finally:
            self.stop.set()
            self.res.phase_s = time.monotonic() - self.t0
        return self.res

    # --- faults of the stack, the client being this process ---------------------------------
    def _run_in_process(self) -> None:
        from volley import Executor

        s, res = self.s, self.res
        client = self.stack.client()
        ex = Executor(endpoint_id=self.stack.config()["endpoint_id"], client=client,
                      transport=self.stack.transport, task_group_id=uuid.uuid4())
        tracker = Tracker(s.tasks)
        submitter = threading.Thread(target=self._submit, args=(ex, tracker), name="faults-submit",
                                     daemon=True)
        submitter.start()
        try:
            if self._strike(lambda: len(tracker.futures) + len(tracker.submit_errors), tracker):
                submitter.join()
                self._await(tracker)
        finally:
            # the hung ones are still pending: _classify counts them so (cancel() would now ask
            # the service to cancel each, and a task that started answers False)
            ex.shutdown(wait=False, cancel_futures=True)
            self._stop_watcher(str(ex.task_group_id))
        _classify(res, tracker, self.records)
        res.tasks_at_service = self._tasks_at_service(str(ex.task_group_id))

    def _submit(self, ex: Any, tracker: Tracker) -> None:
        s = self.s
        slices = max(1, min(s.tasks, 20))
        start = time.monotonic()
        path = str(self.records.path)
        for k in range(slices):
            if self.stop.wait(max(0.0, start + s.spread_s * k / slices - time.monotonic())):
                return
            for i in range(k * s.tasks // slices, (k + 1) * s.tasks // slices):
                try:
                    tracker.add(i, ex.submit(tasks.record, path, i, s.task_delay_s))
                except Exception as exc:  # e.g. registering the function while the service is down
                    tracker.add_submit_error(i, exc)

    def _strike(self, submitted: Callable[[], int], tracker: Tracker | None) -> bool:
        """Wait until the fault is due, inject it and have the launcher repair it; False when
        the launcher could not bring the stack back (the phase is aborted)."""
        s, res = self.s, self.res
        due = max(1, int(s.tasks * s.fault_at))
        if not _wait_for(lambda: submitted() >= due and self.records.refresh() > 0,
                         timeout=s.spread_s + 120):
            res.fault_note = "(struck late: no task had executed 120 s after the submissions) "
        component = "broker" if self.fault == "outage" else self.fault
        executed = self.records.refresh()
        resolved = tracker.resolved if tracker else 0
        self.say(f"SIGKILL {component}: submitted {submitted()}, executed {executed}, resolved {resolved}")
        t_kill = time.monotonic()
        what = self.stack.kill(component)
        res.fault_note += f"{component} {what} at {submitted()} submitted, {executed} executed"
        if self.fault == "outage":
            until = t_kill + s.outage_s
            while (left := until - time.monotonic()) > 0:
                self.stop.wait(min(left, s.progress_every_s))  # the outage itself lasts this long
                self._progress(tracker, "broker down")
            res.fault_note += f"; broker kept down {s.outage_s:g} s"
        for attempt in (1, 2):
            try:
                self.stack.up()
                break
            except Exception as exc:
                self.say(f"launcher failed to restart the stack (attempt {attempt}): {exc}")
                if attempt == 2:
                    res.aborted = f"the launcher could not restart the {component}: {_error_text(exc)}"
                    return False
        if component == "endpoint" and not self.stack.endpoint_consuming(timeout=120):
            res.fault_note += "; the restarted agent did not report consuming within 120 s"
        res.repair_s = time.monotonic() - t_kill
        self.say(f"{component} back after {res.repair_s:.1f} s")
        return True

    def _progress(self, tracker: Tracker | None, note: str = "") -> None:
        if tracker is None:
            return
        self.say(f"submitted {len(tracker.futures)}/{self.s.tasks} acked {tracker.acked()} "
                 f"executed {self.records.refresh()} resolved {tracker.resolved} "
                 f"(errors {tracker.errored}) {note}".rstrip())

    def _await(self, tracker: Tracker) -> None:
        """Every future resolved, or the deadline, or ``stall_s`` without any progress."""
        s = self.s
        deadline = time.monotonic() + s.deadline_s
        last = (-1, -1)
        last_change = time.monotonic()
        while not tracker.all_done.is_set():
            now = time.monotonic()
            state = (tracker.resolved, self.records.refresh())
            if state != last:
                last, last_change = state, now
            if now >= deadline or now - last_change >= s.stall_s:
                why = "deadline" if now >= deadline else f"nothing happened for {s.stall_s:g} s"
                self.say(f"giving up waiting ({why}): {tracker.expected - tracker.resolved} futures unresolved")
                return
            tracker.all_done.wait(min(s.progress_every_s, max(0.0, deadline - now)))
            self._progress(tracker)
        self._progress(tracker, "all resolved")

    @staticmethod
    def _stop_watcher(task_group_id: str) -> None:
        """This phase's result watcher must not outlive it (the stack goes away later)."""
        from volley.sdk import watcher

        for w in watcher.all_watchers():
            if getattr(w, "task_group_id", None) == task_group_id:
                with contextlib.suppress(Exception):
                    w.shutdown()

    def _tasks_at_service(self, task_group_id: str) -> int | None:
        """The suite's own count (a client made now, so it finds a service that moved); a
        large group comes in pages."""
        try:
            api = self.stack.client()._api
            resp = api.get(f"/v2/taskgroup/{task_group_id}")
            count = len(resp.get("tasks", []))
            while resp.get("next"):
                resp = api.get(f"/v2/taskgroup/{task_group_id}", params={"after": resp["next"]})
                count += len(resp.get("tasks", []))
            return count
        except Exception as exc:
            self.say(f"could not count the task group's tasks at the service: {exc}")
            return None

    # --- the client fault ---------------------------------------------------------------------
    def _run_client(self) -> None:
        s, res = self.s, self.res
        cfg = self.stack.config()
        log = open(self.records.path.with_suffix(".client.log"), "ab")
        # the kill must find results still on their way: tasks that outlast the submission
        # (no-op tasks all finish before the last submission is acknowledged)
        delay = max(s.task_delay_s, CLIENT_TASK_DELAY_S)
        cmd = [sys.executable, "-m", CLIENT_MODULE, "--records", str(self.records.path),
               "--tasks", str(s.tasks), "--transport", self.stack.transport,
               "--endpoint", cfg["endpoint_id"], "--delay", str(delay)]
        proc = subprocess.Popen(cmd, env=self.stack.child_env(), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log, text=True, cwd=str(TASKS_ROOT))
        state: dict[str, Any] = {}
        reader = threading.Thread(target=self._read_client, args=(proc, state), daemon=True)
        reader.start()
        try:
            if not _wait_for(lambda: "task_group_id" in state or proc.poll() is not None, timeout=60):
                raise RuntimeError("the client did not report its task group within 60 s")
            if "task_group_id" not in state:
                raise RuntimeError(f"the client exited with {proc.returncode} at start; see {log.name}")
            tg = state["task_group_id"]
            self.say(f"client pid {proc.pid} submits {s.tasks} tasks to task group {tg}")
            due = max(1, int(s.tasks * s.fault_at))
            # strike mid-run: every submission acknowledged (so the service has them all) and
            # tasks executing, but not all results in
            all_acked = _wait_for(lambda: state.get("acked", 0) + state.get("errored", 0) >= s.tasks
                                  or proc.poll() is not None, timeout=300)
            _wait_for(lambda: self.records.refresh() >= due, timeout=60)
            seen = dict(state)
            executed = self.records.refresh()
            self.say(f"SIGKILL client: {seen.get('acked')} acked, {executed} executed, "
                     f"{seen.get('resolved')} resolved in the client")
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            log.close()
        res.fault_note = (f"client SIGKILLed with {seen.get('acked')} of {s.tasks} acked, {executed} "
                          f"executed, {seen.get('resolved')} resolved ({seen.get('errored')} errors) in it")
        if not all_acked:
            res.fault_note += "; not every submission was acknowledged before the kill"
        if seen.get("resolved", 0) >= s.tasks:
            res.fault_note += "; every result had reached the client before the kill"
        self._reload(tg)

    @staticmethod
    def _read_client(proc: subprocess.Popen[str], state: dict[str, Any]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                state.update(json.loads(line))

    def _reload(self, task_group_id: str) -> None:
        from volley import Executor

        s, res = self.s, self.res
        client = self.stack.client()
        ex = Executor(endpoint_id=self.stack.config()["endpoint_id"], client=client,
                      transport=self.stack.transport)
        t = time.monotonic()
        try:
            futures = list(ex.reload_tasks(task_group_id))
        except Exception as exc:
            ex.shutdown(wait=False)
            res.errored[type(exc).__name__] += s.tasks
            res.error_examples.setdefault(type(exc).__name__, f"reload_tasks: {_error_text(exc)}")
            _count_executions(res, self.records, range(s.tasks))
            return
        self.say(f"reload_tasks: {len(futures)} futures in {time.monotonic() - t:.1f} s")
        tracker = Tracker(len(futures))
        for k, f in enumerate(futures):
            tracker.add(k, f)
        try:
            self._await(tracker)
        finally:
            ex.shutdown(wait=False, cancel_futures=True)
            self._stop_watcher(task_group_id)
        res.tasks_at_service = len(futures)
        res.not_submitted = max(0, s.tasks - len(futures))
        by_index: Counter[int] = Counter()
        for f in futures:
            if not f.done() or f.cancelled():  # still pending at the deadline
                res.hung += 1
                continue
            exc = f.exception()
            if exc is not None:
                name = type(exc).__name__
                res.errored[name] += 1
                res.error_examples.setdefault(name, _error_text(exc))
                continue
            value = f.result()
            i = value[0] if isinstance(value, list | tuple) and value else None
            if isinstance(i, int) and 0 <= i < s.tasks and tuple(value) == tasks.expected(i):
                res.right += 1
                by_index[i] += 1
            else:
                res.wrong += 1
                res.wrong_example = res.wrong_example or f"task {f.task_id}: {value!r:.120}"
        dup = sum(n - 1 for n in by_index.values() if n > 1)
        if dup:
            res.surfaced_twice += dup
            res.twice_example = f"{dup} results of a task index that another task had returned already"
        res.surfaced_twice += tracker.twice
        res.twice_example = res.twice_example or tracker.twice_example
        _count_executions(res, self.records, range(s.tasks))


# --- the suite ------------------------------------------------------------------------------------
def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kib / 2**20:.1f} GiB"
    info = {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load average at start": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "commit": _git("rev-parse", "HEAD") or "unknown",
        "uncommitted changes": "yes" if _git("status", "--porcelain", "--untracked-files=no") else "no",
        "VOLLEY_GIVE_UP_AFTER": os.environ.get("VOLLEY_GIVE_UP_AFTER") or "(unset: never give up)",
        "VOLLEY_SERVICE_RETRY_FOR": os.environ.get("VOLLEY_SERVICE_RETRY_FOR") or "(unset: the default)",
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"],
                             capture_output=True, text=True, timeout=10, check=False).stdout
        info["rabbitmq-server"] = out.strip() or "unknown"
    with contextlib.suppress(Exception):
        import volley

        where = Path(volley.__file__).resolve().parent
        info["volley"] = volley.__version__ + ("" if where == REPO / "python" / "volley" else f" (imported from {where})")
    return info


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def run_suite(s: Settings) -> SuiteResult:
    suite = SuiteResult(s, started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        machine=machine_info())
    t0 = time.monotonic()
    from volley import Executor

    # every phase uses a task group of its own; Executors made later in this process (other
    # tests) must not inherit the last one as their default
    cleanup_default = Executor._default_task_group_id
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(setattr, Executor, "_default_task_group_id", cleanup_default)
        root = s.workdir or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="volley-faults-")))
        for transport in s.transports:
            s.log(f"[{transport}] starting a private stack under {root / transport}")
            stack = Stack(root / transport / "home", transport, s.log)
            (root / transport / "records").mkdir(parents=True, exist_ok=True)
            try:
                t = time.monotonic()
                stack.up()
                s.log(f"[{transport}] stack up in {time.monotonic() - t:.1f} s")
                for fault in s.faults:
                    res = _run_phase(stack, fault, s, root / transport / "records")
                    suite.phases.append(res)
                    s.log(f"[{transport}/{fault}] {_summary(res)}")
                    if res.aborted:
                        s.log(f"[{transport}] the stack is broken; the remaining faults are skipped")
                        break
            finally:
                s.log(f"[{transport}] stopping the stack")
                stack.down()
    suite.elapsed_s = time.monotonic() - t0
    return suite


def _run_phase(stack: Stack, fault: str, s: Settings, workdir: Path) -> PhaseResult:
    phase = Phase(stack, fault, s, workdir)
    try:
        return phase.run()
    except Exception as exc:  # the phase could not be run as designed: that is a failure too
        phase.res.aborted = phase.res.aborted or f"{type(exc).__name__}: {_error_text(exc)}"
        phase.say(f"aborted: {phase.res.aborted}")
        return phase.res


def _summary(r: PhaseResult) -> str:
    errs = ", ".join(f"{k} {v}" for k, v in r.errored.most_common())
    return (f"{'OK' if r.ok else 'FAILED'}: {r.right}/{r.tasks} right, {r.wrong} wrong, "
            f"{r.errors} errored{f' ({errs})' if errs else ''}, {r.hung} hung, "
            f"{r.surfaced_twice} surfaced twice, {r.not_submitted} not submitted; "
            f"{r.executed_more_than_once} run more than once, {r.never_executed} never run; "
            f"{r.phase_s:.0f} s{'; ABORTED: ' + r.aborted if r.aborted else ''}")


# --- reports ----------------------------------------------------------------------------------------
FAULT_TITLES = {
    "endpoint": "endpoint agent SIGKILLed (whole process group), restarted",
    "service": "service SIGKILLed, restarted",
    "broker": "broker node SIGKILLed, restarted",
    "outage": "broker SIGKILLed, kept down, restarted",
    "client": "client SIGKILLed, new process reloads the task group",
}


def format_table(suite: SuiteResult) -> str:
    head = ("| transport | fault | tasks | right | wrong | errored | hung | surfaced twice | "
            "not at service | run more than once | never run | tasks at service | back after | phase |")
    rows = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in suite.phases:
        def bold(n: int) -> str:
            return f"**{n:,}**" if n else "0"

        rows.append(
            f"| {r.transport} | {r.fault}{' (**aborted**)' if r.aborted else ''} | {r.tasks:,} | {r.right:,} | {bold(r.wrong)} | {bold(r.errors)} | "
            f"{bold(r.hung)} | {bold(r.surfaced_twice)} | {bold(r.not_submitted)} | "
            f"{r.executed_more_than_once:,} (+{r.extra_executions:,}) | {r.never_executed:,} | "
            f"{'?' if r.tasks_at_service is None else f'{r.tasks_at_service:,}'} | "
            f"{'-' if r.fault == 'client' else f'{r.repair_s:.1f} s'} | {r.phase_s:.0f} s |"
        )
    return "\n".join(rows)


def format_details(suite: SuiteResult) -> str:
    out = []
    for r in suite.phases:
        lines = [f"* **{r.transport} / {r.fault}** ({FAULT_TITLES.get(r.fault, r.fault)}): {r.fault_note or '-'}"]
        if r.aborted:
            lines.append(f"  * aborted: {r.aborted}")
        for name, n in r.errored.most_common():
            lines.append(f"  * {n:,} x `{name}`, e.g. \"{r.error_examples.get(name, '')}\"")
        if r.wrong_example:
            lines.append(f"  * wrong, e.g. {r.wrong_example}")
        if r.twice_example:
            lines.append(f"  * surfaced twice, e.g. {r.twice_example}")
        out.append("\n".join(lines))
    return "\n".join(out)


def format_report(suite: SuiteResult) -> str:
    verdict = ("every future resolved right, exactly once" if suite.ok else
               "FAILED: futures lost, wrong, hung or surfaced twice (see the table)")
    return (f"{format_table(suite)}\n\n{format_details(suite)}\n\n"
            f"{len(suite.phases)} phases in {suite.elapsed_s:.0f} s: {verdict}")


def write_docs(suite: SuiteResult, path: Path = DOCS_PAGE) -> None:
    s = suite.settings
    m = suite.machine
    commit = m.get("commit", "unknown")
    dirty = m.get("uncommitted changes") == "yes"
    totals = Counter[str]()
    for r in suite.phases:
        totals["tasks"] += r.tasks
        totals["bad"] += r.lost + r.wrong + r.hung + r.surfaced_twice
        totals["again"] += r.executed_more_than_once
    verdict = (
        f"**All guarantees held in this run**: {totals['tasks']:,} tasks over {len(suite.phases)} faults, "
        f"0 futures lost, wrong or hung, 0 results surfaced twice; {totals['again']:,} tasks ran more "
        "than once (allowed: execution is at-least-once)."
        if suite.ok else
        f"**Not met in this run**: {totals['bad']:,} of {totals['tasks']:,} futures were lost, wrong, "
        "hung or surfaced twice (bold figures below). The guarantees above are what Volley promises; "
        "this run shows where the code at this commit falls short of them."
    )
    machine_rows = "\n".join(f"| {k} | {v} |" for k, v in m.items())
    opts = (f"`--tasks {s.tasks}` per fault and transport, `--outage {s.outage_s:g}`, `--spread {s.spread_s:g}`, "
            f"`--fault-at {s.fault_at:g}`, `--task-delay {s.task_delay_s:g}`, `--deadline {s.deadline_s:g}`, "
            f"`--stall {s.stall_s:g}`")
    text = f"""# Reliability

Generated by `make faults` (the fault suite, [`tests/faults/`](../tests/faults/harness.py)) from
one run of commit `{commit[:12]}`{' **with uncommitted changes**' if dirty else ''}, started {suite.started},
{suite.elapsed_s / 60:.1f} minutes. Every figure below comes from that run; do not edit them by hand.

## What Volley guarantees

* **Execution is at-least-once.** A task whose endpoint dies while running it, or whose result
  could not be acknowledged, runs again: the suite counts such re-executions and reports them
  (few, not zero, is honest). Make tasks idempotent, or able to detect that they ran before.
* **Each future resolves exactly once**: with the task's result, or with an exception that says
  why; never twice, never a result of another task, never pending forever while the system is
  up.
* **Outages are normal.** The SDK, the service and the endpoint ride out a broker or service
  restart: a broker or service outage of any length up to the give-up limit fails no future and
  stops no program. Submissions made during a service outage are retried (a submission is
  idempotent, so a retry never creates tasks twice); tasks committed while the broker is down
  are published when it is back; results delivered while a client was away are fetched from the
  service when it reconnects. The give-up limit is `$VOLLEY_GIVE_UP_AFTER` (seconds, the length
  of one continuous broker outage; default: never give up); past it, the open futures fail with
  a `ConnectionError` that names what was lost and for how long. A call to the service waits out
  a service outage for `$VOLLEY_SERVICE_RETRY_FOR` seconds (default 300); past it, only the
  futures of the batch being submitted fail, with an error naming the cause.
* **A client can die.** A new process calling `Executor.reload_tasks(task_group_id)` gets a
  future for every task of the group, resolved from the service or from the result stream.

## Under concurrency and bad luck

Each line is checked by the test it names, in `make test` (not by this suite's run).

{guarantees_table()}

## This run

{verdict}

Each row is one phase: a fresh task group of N tasks on a private local stack (its own RabbitMQ
node, the service on SQLite, the default endpoint with its process-pool engine), started and
restarted only by the project's launcher (`LocalStack(home).up()`, what `volley local up` runs),
on the given transport for the SDK, the service and the endpoint alike. Submissions are spread
over {s.spread_s:g} s; the fault strikes once {s.fault_at:.0%} of them are submitted and tasks are
running, so it hits submission, execution and result delivery (in the client fault each task runs
at least {CLIENT_TASK_DELAY_S * 1000:g} ms, so results are still on their way when the client is
killed). *Errored* futures count as lost
(these tasks cannot fail by themselves). *Not at service*: submitted tasks the reloading process
did not get back (client fault). *Tasks at service*: tasks the task group holds at the end (more
than N means a submission created tasks twice). *Run more than once*: tasks with two or more
execution records, written by the task itself on the endpoint (in brackets: the extra
executions). *Back after*: from the SIGKILL until the launcher had the stack back (for the
endpoint: until the new agent consumed its queue again).

{format_table(suite)}

What happened in each phase:

{format_details(suite)}

## Machine

| | |
| --- | --- |
{machine_rows}

Options of this run: {opts}.

## Reproduce

```sh
make faults                      # both transports, {Settings().tasks:,} tasks per fault, writes this page
make faults FAULTS_N=2000        # fewer tasks per fault
.venv/bin/python -m tests.faults --help          # every option (faults, transports, outage length, ...)
.venv/bin/python -m tests.faults --transports python --faults outage --outage 120
```

It exits non-zero when any future was lost, wrong or hung or any result surfaced twice. A short
version (a few hundred tasks, one fault of each kind, both transports) runs inside `make test`:
`tests/test_faults.py`.
"""
    path.write_text(text)


# --- command line ------------------------------------------------------------------------------
def _csv(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(",") if x.strip())
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}; got {text!r}")
        return items

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m tests.faults",
                                description="The fault suite (issue 11): see docs/reliability.md.")
    p.add_argument("--tasks", type=int, default=d.tasks, help=f"tasks per fault and transport (default {d.tasks})")
    p.add_argument("--transports", type=_csv(TRANSPORTS), default=d.transports, help="native,python")
    p.add_argument("--faults", type=_csv(FAULTS), default=d.faults, help=",".join(FAULTS))
    p.add_argument("--outage", type=float, default=d.outage_s, help="seconds the broker stays down (outage)")
    p.add_argument("--spread", type=float, default=d.spread_s, help="seconds over which submissions are spread")
    p.add_argument("--fault-at", type=float, default=d.fault_at, help="strike once this fraction is submitted")
    p.add_argument("--task-delay", type=float, default=d.task_delay_s, help="each task's run time, seconds")
    p.add_argument("--deadline", type=float, default=d.deadline_s, help="seconds every future gets after the repair")
    p.add_argument("--stall", type=float, default=d.stall_s, help="stop waiting after this long without progress")
    p.add_argument("--short", action="store_true", help="the short version's defaults (as in make test)")
    p.add_argument("--workdir", type=Path, help="keep stacks, logs and records here (default: a temp dir)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--write-docs", nargs="?", type=Path, const=DOCS_PAGE, default=None,
                   help=f"write the report page (default {DOCS_PAGE.relative_to(REPO)})")
    args = p.parse_args(argv)
    base = Settings.short() if args.short else d
    given = {k: v for k, v in vars(args).items() if p.get_default(k) != v}
    names = {"tasks": "tasks", "transports": "transports", "faults": "faults", "outage": "outage_s",
             "spread": "spread_s", "fault_at": "fault_at", "task_delay": "task_delay_s",
             "deadline": "deadline_s", "stall": "stall_s", "workdir": "workdir"}
    s = replace(base, **{names[k]: v for k, v in given.items() if k in names})
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    s.log(f"fault suite: {s.tasks:,} tasks per phase; transports {', '.join(s.transports)}; "
          f"faults {', '.join(s.faults)}; broker outage {s.outage_s:g} s")
    suite = run_suite(s)
    print("\n" + format_report(suite), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"ok": suite.ok, "elapsed_s": suite.elapsed_s, "machine": suite.machine,
                                         "phases": [r.to_json() for r in suite.phases]}, indent=2))
    if args.write_docs:
        write_docs(suite, args.write_docs)
        print(f"wrote {args.write_docs}", flush=True)
    return 0 if suite.ok else 1
