"""Bad inputs on a real MPIEngine endpoint (issue 12, finding 2): a resource specification
whose count is a Unicode digit ("²" passes ``str.isdigit()``, then ``int()`` raises) used to
raise out of the engine and stop the endpoint, again on every redelivery.  Now it is that
task's error, and the same endpoint process runs the next task."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import endpoint_helpers as eh
from volley import Executor, MPIFunction
from volley.demo import ensure_endpoint, example_env
from volley.endpoint import local
from volley.errors import TaskExecutionFailed


@pytest.fixture(scope="module")
def mpi_endpoint(stack: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    yield ensure_endpoint("mpi", example_env(stack)), Path(stack["state_dir"]) / "endpoints" / "mpi"
    eh.stop_extra_endpoints(Path(stack["state_dir"]))


@pytest.mark.parametrize("spec", [
    {"num_nodes": "²", "ranks_per_node": 1},
    {"num_nodes": 1, "ranks_per_node": "٣"},  # int() would have read 3
    {"num_nodes": 1, "ranks_per_node": 1, "num_ranks": "1" * 5000},  # int() raises past 4300 digits
])
def test_unicode_digit_counts_are_the_tasks_error(mpi_endpoint: tuple[str, Path], spec: dict[str, Any]) -> None:
    endpoint_id, directory = mpi_endpoint
    pid = local.pid_of(directory)
    bad_key = next(k for k, v in spec.items() if isinstance(v, str))
    with Executor(endpoint_id=endpoint_id) as ex:
        ex.resource_specification = spec
        bad = ex.submit(MPIFunction("hostname"))
        ex.resource_specification = {"num_nodes": 1, "ranks_per_node": 1}
        good = ex.submit(MPIFunction("echo fine"))
        with pytest.raises(TaskExecutionFailed) as info:
            bad.result(timeout=120)
        assert good.result(timeout=120).stdout.strip() == "fine"
    text = str(info.value)
    assert "InvalidResourceSpecification" in text
    assert f"resource_specification[{bad_key!r}] must be a positive integer" in text
    # the same agent answered both: it neither exited nor was restarted
    assert local.is_running(directory) and local.pid_of(directory) == pid
