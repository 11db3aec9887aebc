"""Local stacks for the benchmarks: one per transport and configuration, each in its own
temporary ``VOLLEY_HOME``.

Everything is the real thing: ``LocalStack.up()`` starts a private RabbitMQ node, the service
on SQLite and the default endpoint.  Two configurations:

* *default*: the endpoint's ``config.yaml`` is left for ``up()`` to write, so the stack is
  exactly what ``volley local up`` gives a user (the headline);
* *tuned*: ``config.yaml`` is written before ``up()`` (a thread-pool engine, so no-op tasks
  measure the system rather than process hand-offs, and a deep ``prefetch``).

``VOLLEY_TRANSPORT`` is set while ``up()`` spawns the children so the service and the endpoint
use the transport under test too.  ``down()`` always runs, even when a benchmark fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cputime import cpu_seconds, descendants, this_process, tree

from volley import Executor
from volley.endpoint.config import load_config
from volley.local.broker import BrokerInfo
from volley.local.stack import LocalStack
from volley.sdk.client import Client

BENCH_DIR = Path(__file__).resolve().parent
# only this folder goes on the children's PYTHONPATH: the functions the endpoint imports
TASKS_DIR = BENCH_DIR / "tasks"

ENDPOINT_CONFIG = """\
# written by benches/stacks.py before `volley local up`
display_name: Volley bench endpoint ({transport})
engine:
  type: ThreadPoolEngine
  max_workers: {workers}
heartbeat_period: 5
{prefetch}"""

_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set variables that the stack's children inherit, for the duration of ``up()``."""
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


@dataclass
class BenchStack:
    transport: str
    home: Path
    stack: LocalStack
    status: dict[str, Any]
    config: dict[str, Any]
    startup_s: float
    default_config: bool
    _idle_endpoints: list[str] = field(default_factory=list)

    @property
    def endpoint_id(self) -> str:
        return str(self.status["endpoint_id"])

    @property
    def service_url(self) -> str:
        return str(self.config["service_url"])

    @property
    def token(self) -> str:
        return str(self.config["token"])

    @property
    def ca_file(self) -> str:
        return str(self.config["ca_file"])

    def client(self) -> Client:
        return Client(service_url=self.service_url, token=self.token, ca_file=self.ca_file,
                      do_version_check=False)

    def broker(self) -> BrokerInfo:
        """The private node's administrative identity (to fill and delete benchmark queues)."""
        return BrokerInfo(**json.loads((self.home / "broker" / "broker.json").read_text()))

    def service_pid(self) -> int | None:
        return _read_pid(self.home / "service" / "service.pid")

    def endpoint_pid(self) -> int | None:
        return _read_pid(self.home / "endpoints" / "default" / "daemon.pid")

    def broker_pid(self) -> int | None:
        return _read_pid(self.home / "broker" / "rabbit.pid")

    def roles(self) -> dict[str, list[int]]:
        """The processes a task goes through, by role, for ``cputime.CpuWindow``: this process
        (the SDK's), the service, the broker (its ``beam.smp`` and helpers), the endpoint agent
        and the agent's children (a process pool's workers; none for a thread pool)."""
        agent = self.endpoint_pid()
        return {"client": this_process(), "service": tree(self.service_pid()),
                "broker": tree(self.broker_pid()), "endpoint": [] if agent is None else [agent],
                "workers": descendants(agent)}

    def endpoint_config(self) -> dict[str, Any]:
        """What the endpoint runs with, read back from its ``config.yaml`` (for the page)."""
        cfg = load_config(self.home / "endpoints" / "default" / "config.yaml", check_engine=False)
        return {"engine": cfg.engine_type, "max_workers": cfg.engine_options().get("max_workers"),
                "prefetch": cfg.prefetch, "default_config": self.default_config}

    def executor(self) -> Executor:
        """A warm Executor on this stack's transport: registration, the first batch and the
        watcher's connection are behind it."""
        import workload  # on sys.path once conftest has run (TASKS_DIR)

        ex = Executor(endpoint_id=self.endpoint_id, client=self.client(), task_group_id=uuid.uuid4(),
                      transport=self.transport)
        ex.submit(workload.noop).result(timeout=120)
        return ex

    def idle_endpoint(self) -> str:
        """An endpoint that is registered but never started: submitted tasks wait in its queue."""
        reg = self.client().register_endpoint(f"bench-idle-{uuid.uuid4().hex[:8]}")
        eid = str(reg["endpoint_id"])
        self._idle_endpoints.append(eid)
        return eid

    def drop_idle_endpoints(self) -> None:
        client = self.client()
        for eid in self._idle_endpoints:
            try:
                client.delete_endpoint(eid)
            except Exception as exc:  # cleanup only: the whole stack goes away at the end anyway
                print(f"[bench] could not delete idle endpoint {eid}: {exc}")
        self._idle_endpoints.clear()

    def down(self) -> None:
        self.stack.down()


def run_probe(script: Path, *args: str, env: dict[str, str], timeout: float, what: str) -> dict[str, Any]:
    """Run a benchmark script in a fresh interpreter; return the JSON object on its last line."""
    proc = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def submit_request_latency(stack: BenchStack, ex: Executor, n: int) -> tuple[list[float], float]:
    """The HTTP part of a round trip alone: one-task batches posted to an endpoint that is not
    running (the service stores the task and publishes it with a confirm, nothing executes).
    Returns the latencies (ms) and this process's CPU per request (ms): the client's share."""
    import workload

    idle = stack.idle_endpoint()
    fid = ex.register_function(workload.echo)
    client = ex.client
    out = []
    cpu0 = time.process_time()
    try:
        for i in range(n):
            batch = client.create_batch(task_group_id=ex.task_group_id, create_websocket_queue=True)
            batch.add(fid, (i,), {})
            t0 = time.perf_counter()
            client.batch_run(idle, batch)
            out.append((time.perf_counter() - t0) * 1e3)
        cpu = (time.process_time() - cpu0) / n * 1e3
    finally:
        stack.drop_idle_endpoints()
    return out, cpu


def wait_until_idle(pid: int | None, *, busy_below: float = 0.05, window_s: float = 0.5,
                    timeout_s: float = 60.0) -> float:
    """Wait until process ``pid`` uses less than ``busy_below`` of a core over ``window_s``
    (RabbitMQ keeps writing, compacting and deleting persistent messages for seconds after a
    queue is filled or deleted, and that work would be billed to the next measurement).
    Returns the seconds waited; gives up quietly after ``timeout_s``."""
    t0 = time.monotonic()
    if pid is None:
        return 0.0
    while time.monotonic() - t0 < timeout_s:
        c0, w0 = cpu_seconds(pid), time.monotonic()
        time.sleep(window_s)
        if (cpu_seconds(pid) - c0) / (time.monotonic() - w0) < busy_below:
            break
    return time.monotonic() - t0


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def start_stack(transport: str, *, workers: int, prefetch: int | None, root: Path,
                default_config: bool = False) -> BenchStack:
    """Start a local stack whose service and endpoint use ``transport``; on failure, tear it down.
    ``default_config``: leave the endpoint's ``config.yaml`` to ``up()`` (``workers`` and
    ``prefetch`` are then unused)."""
    kind = "default" if default_config else "tuned"
    home = Path(tempfile.mkdtemp(prefix=f"stack-{kind}-{transport}-", dir=root))
    if not default_config:
        ep_dir = home / "endpoints" / "default"
        ep_dir.mkdir(parents=True)
        (ep_dir / "config.yaml").write_text(ENDPOINT_CONFIG.format(
            transport=transport, workers=workers,
            prefetch=f"prefetch: {prefetch}\n" if prefetch else "",
        ))
    pythonpath = os.pathsep.join(p for p in (str(TASKS_DIR), os.environ.get("PYTHONPATH")) if p)
    stack = LocalStack(home)
    t0 = time.monotonic()
    try:
        with _environ(VOLLEY_TRANSPORT=transport, PYTHONPATH=pythonpath):
            status = stack.up()
    except BaseException:
        stack.down()
        raise
    config = json.loads((home / "config.json").read_text())
    return BenchStack(transport, home, stack, status, config, time.monotonic() - t0, default_config)


class StackPool:
    """Stacks started on first use and all stopped at the end of the session."""

    def __init__(self, workers: int, prefetch: int | None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="volley-bench-"))
        self.workers = workers
        self.prefetch = prefetch
        # (transport, prefetch) of a tuned stack; (transport, "default") of a default one
        self._stacks: dict[tuple[str, int | str | None], BenchStack] = {}
        self._stopping: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def get(self, transport: str, *, prefetch: int | str | None = "default") -> BenchStack:
        """The tuned stack of ``transport`` (``prefetch``: the pool's unless given)."""
        pf = self.prefetch if prefetch == "default" else prefetch
        assert pf is None or isinstance(pf, int)
        key = (transport, pf)
        if key not in self._stacks:
            self._stacks[key] = start_stack(transport, workers=self.workers, prefetch=pf, root=self.root)
        return self._stacks[key]

    def get_default(self, transport: str) -> BenchStack:
        """The stack exactly as ``volley local up`` writes it, on ``transport``."""
        key = (transport, "default")
        if key not in self._stacks:
            self._stacks[key] = start_stack(transport, workers=self.workers, prefetch=None, root=self.root,
                                            default_config=True)
        return self._stacks[key]

    def stop(self, transport: str, prefetch: int | str | None, *, wait: bool = False) -> None:
        """Stop a stack no longer needed (``prefetch="default"``: the default-configuration one),
        in the background (close() waits for it), or before returning with ``wait``: so that
        its shutdown does not use CPU during the next measurement."""
        st = self._stacks.pop((transport, prefetch), None)
        if st is None:
            return
        t = self._down_in_thread(st)
        if wait:
            t.join()
        else:
            self._stopping.append(t)

    def _down_in_thread(self, st: BenchStack) -> threading.Thread:
        def down() -> None:
            try:
                st.drop_idle_endpoints()
            except Exception as exc:  # the stack goes away anyway
                self._errors.append(exc)
            try:
                st.down()
            except Exception as exc:
                self._errors.append(exc)

        t = threading.Thread(target=down, name=f"bench-down-{st.transport}")
        t.start()
        return t

    def close(self) -> None:
        # stacks stop concurrently: each waits seconds for its processes to exit
        self._stopping += [self._down_in_thread(st) for st in self._stacks.values()]
        self._stacks.clear()
        for t in self._stopping:
            t.join()
        self._stopping.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        if self._errors:
            raise self._errors[0]
