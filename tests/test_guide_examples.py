"""Every user-guide example under docs/examples runs against the local stack, on both transports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from volley.demo import EXAMPLES, Example, example_env, find_examples, run_example

DIR = find_examples(Path(__file__).resolve().parents[1] / "docs" / "examples")

# What each example must print (beyond exiting as expected).
EXPECT = {
    "executor_basic_example.py": ["14"],
    "executor_collatz.py": ["All sequences generated (from 1 to 100)", "[27, 82, 41"],
    "executor_handle_result_exceptions.py": ["Oh no!", "ValueError: Sequence not terminated in 100 steps"],
    "executor_results_as_arrived.py": ["Results: ['0 -> 0', '1 -> 2'", "Received: 19 -> 38"],
    "executor_reload_tasks.py": ["Reloading tasks from Task Group ID",
                                 "your Globus Compute logic result, from task: 5"],
    "client_submit_batch.py": ["Received: All done!"],
    "shell_function.py": ["hello", "hola", "bonjour"],
    "shell_function_return_dict.py": ["bonjour 0"],
    "shell_function_walltime.py": ["124"],
    "serializer_strategy.py": ["check_strategies: hello world", "PureSourceTextInspect + JSONData: hello world"],
    "result_serializers.py": ["{'n': 3, 'sum': 6}"],
    "mpi_function.py": ["return code: 0", "hello from rank 0", "hello from rank 1"],
    "mpi_function_multiline.py": ["step 1 on rank 0", "step 1 on rank 1", "step 2 on rank 1"],
    "amqp_port.py": ["1024"],
}


@pytest.fixture(scope="session", autouse=True)
def _extra_endpoints_stopped(stack: dict[str, Any]) -> Any:
    """The MPI examples start an extra endpoint in the stack's home; stop it at the end."""
    yield
    from endpoint_helpers import stop_extra_endpoints

    stop_extra_endpoints(Path(stack["state_dir"]))


def test_every_example_is_registered_and_checked() -> None:
    scripts = {p.name for p in DIR.glob("*.py")}
    used = {e.script for e in EXAMPLES} | {e.then for e in EXAMPLES if e.then}
    assert scripts == used
    assert set(EXPECT) == {e.script for e in EXAMPLES}


@pytest.mark.parametrize("transport", ["native", "python"])
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.script.removesuffix(".py"))
def test_example(stack: dict[str, Any], example: Example, transport: str) -> None:
    outcome = run_example(example, DIR, example_env(stack, transport), timeout=180)
    assert outcome.ok, f"{example.script}: {outcome.error}\n{outcome.output}"
    for text in EXPECT[example.script]:
        assert text in outcome.output, f"{example.script} did not print {text!r}:\n{outcome.output}"
    if example.script == "executor_reload_tasks.py":
        assert outcome.output.count("your Globus Compute logic result") == 5
