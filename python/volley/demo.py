"""``volley demo``: the main job.  Brings the local stack up and runs the user guide's examples."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

# In the guide's order; each grows with the system (see docs/examples/README.md).
EXAMPLES = [
    ("Basic usage", "executor_basic_example.py"),
    ("Multiple function invocations (Collatz)", "executor_collatz.py"),
    ("Handling exceptions", "executor_handle_result_exceptions.py"),
    ("Receiving results out of order", "executor_results_as_arrived.py"),
    ("Shell functions", "shell_function.py"),
]


def find_examples(explicit: Path | None) -> Path:
    candidates = [explicit] if explicit else [
        Path.cwd() / "docs" / "examples",
        Path(__file__).resolve().parents[2] / "docs" / "examples",
    ]
    for c in candidates:
        if c is not None and (c / EXAMPLES[0][1]).exists():
            return c
    raise SystemExit("cannot find the example scripts: run from the Volley checkout or pass --examples DIR")


def run_demo(examples: Path | None = None, transport: str | None = None) -> int:
    from volley.local.stack import LocalStack

    directory = find_examples(examples)
    print("== Bringing the local stack up", flush=True)
    status = LocalStack(progress=lambda m: print("   " + m, flush=True)).up()
    print(f"   service {status['service_url']}, endpoint {status['endpoint_id']}, "
          f"AMQPS port {status['amqps_port']}", flush=True)
    env = dict(os.environ, VOLLEY_ENDPOINT_ID=status["endpoint_id"], VOLLEY_HOME=status["state_dir"])
    if transport:
        env["VOLLEY_TRANSPORT"] = transport
    failures = 0
    for title, name in EXAMPLES:
        print(f"\n== {title}  ({name})", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, str(directory / name)], env=env, cwd=directory,
                              capture_output=True, text=True, timeout=600)
        out = proc.stdout.rstrip()
        if out:
            print(out)
        if proc.returncode != 0:
            failures += 1
            print(f"!! {name} failed (exit {proc.returncode}):\n{proc.stderr.rstrip()}")
        else:
            print(f"-- ok in {time.monotonic() - t0:.2f}s", flush=True)
    print(f"\n== {len(EXAMPLES) - failures} of {len(EXAMPLES)} examples ran; "
          "the stack keeps running (`volley local down` stops it)")
    return 1 if failures else 0
