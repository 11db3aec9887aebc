"""``volley demo``: the main job.  Brings the local stack up and runs the user guide's examples.

The registry below is the one list of examples: the demo runs it, and the test suite runs the
same entries on both transports.  Some examples are two-act plays (a script that dies or exits,
then a second run that reloads its task group); the runner passes the task group id along.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Example:
    title: str
    script: str
    # a second script (or the same one) run with the task group id the first one printed
    then: str | None = None
    # the first act ends by killing itself (the guide's "simulated process death")
    killed: bool = False
    # which endpoint runs it: the stack's default one, or "mpi" (an MPIEngine endpoint that
    # ensure_endpoint configures and starts in the same VOLLEY_HOME)
    endpoint: str = "default"


# In the guide's order.
EXAMPLES = [
    Example("Basic usage", "executor_basic_example.py"),
    Example("Multiple function invocations (Collatz)", "executor_collatz.py"),
    Example("Handling exceptions", "executor_handle_result_exceptions.py"),
    Example("Receiving results out of order", "executor_results_as_arrived.py"),
    Example("Reloading tasks after process death", "executor_reload_tasks.py",
            then="executor_reload_tasks.py", killed=True),
    Example("Client batch, reloaded by an Executor", "client_submit_batch.py",
            then="executor_reload_batch.py"),
    Example("Shell functions", "shell_function.py"),
    Example("Shell functions returning dicts", "shell_function_return_dict.py"),
    Example("Shell function walltime", "shell_function_walltime.py"),
    Example("Submit-side serialization strategy", "serializer_strategy.py"),
    Example("Result serialization strategies", "result_serializers.py"),
    Example("Submitting MPI tasks", "mpi_function.py", endpoint="mpi"),
    Example("Multi-line MPI commands", "mpi_function_multiline.py", endpoint="mpi"),
    Example("AMQP port", "amqp_port.py"),
]

# Extra endpoints some examples need, by name: their engine.
EXTRA_ENDPOINTS = {"mpi": "MPIEngine"}


def ensure_endpoint(name: str, env: dict[str, str]) -> str:
    """Configure (once) and start (if not running) endpoint ``name`` in env's VOLLEY_HOME."""
    from volley.endpoint import local

    directory = Path(env["VOLLEY_HOME"]) / "endpoints" / name
    if not (directory / "config.yaml").exists():
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.yaml").write_text(local.render_config(EXTRA_ENDPOINTS[name], heartbeat_period=5))
    if not local.is_running(directory):
        local.start_detached(name, directory, env=env)
    ep_id = local.endpoint_id(directory)
    assert ep_id is not None, f"endpoint {name} started without registering"
    return ep_id


@dataclass
class Outcome:
    ok: bool
    output: str
    error: str = ""


def find_examples(explicit: Path | None = None) -> Path:
    candidates = [explicit] if explicit else [
        Path.cwd() / "docs" / "examples",
        Path(__file__).resolve().parents[2] / "docs" / "examples",
    ]
    for c in candidates:
        if c is not None and (c / EXAMPLES[0].script).exists():
            return c
    raise SystemExit("cannot find the example scripts: run from the Volley checkout or pass --examples DIR")


def example_env(status: dict, transport: str | None = None) -> dict[str, str]:
    env = dict(os.environ, VOLLEY_ENDPOINT_ID=status["endpoint_id"], VOLLEY_HOME=status["state_dir"],
               VOLLEY_AMQPS_PORT=str(status["amqps_port"]), EXPENSIVE_TASK_SECONDS="1")
    if transport:
        env["VOLLEY_TRANSPORT"] = transport
    return env


def run_example(example: Example, directory: Path, env: dict[str, str], timeout: float = 300,
                python: str = sys.executable) -> Outcome:
    """Run one example with ``python`` (default: this interpreter; the wheel test passes a fresh
    venv's, which has only the SDK)."""

    def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, str(directory / script), *args], env=env, cwd=directory,
                              capture_output=True, text=True, timeout=timeout)

    if example.endpoint != "default":
        env = dict(env, VOLLEY_ENDPOINT_ID=ensure_endpoint(example.endpoint, env))
    first = run(example.script)
    out = first.stdout
    expected_rc = -signal.SIGKILL if example.killed else 0
    if first.returncode != expected_rc:
        return Outcome(False, out, f"exit {first.returncode} (expected {expected_rc}):\n{first.stderr}")
    if example.then is None:
        return Outcome(True, out)
    ids = _UUID.findall(out)
    if not ids:
        return Outcome(False, out, "the first act printed no task group id")
    second = run(example.then, ids[-1])
    out += f"\n-- then: {example.then} {ids[-1]}\n" + second.stdout
    if second.returncode != 0:
        return Outcome(False, out, f"exit {second.returncode}:\n{second.stderr}")
    return Outcome(True, out)


def run_demo(examples: Path | None = None, transport: str | None = None) -> int:
    from volley.local.stack import LocalStack

    directory = find_examples(examples)
    print("== Bringing the local stack up", flush=True)
    status = LocalStack(progress=lambda m: print("   " + m, flush=True)).up()
    print(f"   service {status['service_url']}, endpoint {status['endpoint_id']}, "
          f"AMQPS port {status['amqps_port']}", flush=True)
    env = example_env(status, transport)
    failures = 0
    for ex in EXAMPLES:
        print(f"\n== {ex.title}  ({ex.script})", flush=True)
        t0 = time.monotonic()
        outcome = run_example(ex, directory, env)
        if outcome.output.strip():
            print(outcome.output.rstrip())
        if outcome.ok:
            print(f"-- ok in {time.monotonic() - t0:.2f}s", flush=True)
        else:
            failures += 1
            print(f"!! {ex.script} failed: {outcome.error.rstrip()}", flush=True)
    print(f"\n== {len(EXAMPLES) - failures} of {len(EXAMPLES)} examples ran; "
          "the stack keeps running (`volley local down` stops it)")
    return 1 if failures else 0
