"""MPIFunction on an MPIEngine endpoint: Parsl's MPI mode (SimpleLauncher, LocalProvider) and
Debian's OpenMPI ``mpiexec``, with 2 ranks on this machine.  The endpoint is the one the guide's
MPI examples use ("mpi" in the stack's home), started once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import endpoint_helpers as eh
from volley import Executor, MPIFunction
from volley.demo import ensure_endpoint, example_env
from volley.errors import TaskExecutionFailed

TWO_RANKS = {"num_nodes": 1, "ranks_per_node": 2}
RANK = "${{OMPI_COMM_WORLD_RANK}}"  # doubled braces: MPIFunction formats its command


@pytest.fixture(scope="session")
def mpi_endpoint(stack: dict[str, Any]) -> Iterator[str]:
    yield ensure_endpoint("mpi", example_env(stack))
    eh.stop_extra_endpoints(Path(stack["state_dir"]))


def mpi_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ("PARSL_NUM_NODES", "PARSL_RANKS_PER_NODE", "PARSL_NUM_RANKS",
                                           "PARSL_MPI_PREFIX", "PARSL_MPI_NODELIST")}


def test_two_ranks(mpi_endpoint: str) -> None:
    with Executor(endpoint_id=mpi_endpoint) as ex:
        ex.resource_specification = TWO_RANKS
        res = ex.submit(MPIFunction(f"bash -c 'echo rank {RANK} of $OMPI_COMM_WORLD_SIZE'")).result(timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(res.stdout.split("\n")[:2]) == ["rank 0 of 2", "rank 1 of 2"]
    assert res.cmd.startswith("$PARSL_MPI_PREFIX bash -c")


def test_resource_specification_becomes_the_prefix(mpi_endpoint: str) -> None:
    with Executor(endpoint_id=mpi_endpoint) as ex:
        ex.resource_specification = {"num_ranks": 2, "ranks_per_node": 2}  # num_nodes derived
        env = ex.submit(mpi_env).result(timeout=120)
    assert env["PARSL_NUM_NODES"] == "1"
    assert env["PARSL_NUM_RANKS"] == "2" and env["PARSL_RANKS_PER_NODE"] == "2"
    assert env["PARSL_MPI_NODELIST"] == "localhost"
    # OpenMPI syntax (Parsl's own prefix is MPICH's -ppn/-hosts, which OpenMPI rejects)
    assert env["PARSL_MPI_PREFIX"] == "mpiexec -n 2 --map-by ppr:2:node --host localhost:2"


def test_multi_line_command_with_explicit_prefixes(mpi_endpoint: str) -> None:
    cmd = f"""true; # force the default prefix to launch a no-op
$PARSL_MPI_PREFIX bash -c 'echo first {RANK}'
$PARSL_MPI_PREFIX bash -c 'echo second {RANK}'
"""
    with Executor(endpoint_id=mpi_endpoint) as ex:
        ex.resource_specification = TWO_RANKS
        res = ex.submit(MPIFunction(cmd)).result(timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(res.stdout.split()) == sorted(["first", "0", "first", "1", "second", "0", "second", "1"])


@pytest.mark.parametrize(("spec", "message"), [
    ({}, "MPIEngine needs a resource_specification"),
    ({"ranks_per_node": 2}, "needs 'num_nodes'"),
    ({"num_nodes": 2, "ranks_per_node": 1}, "asks for 2 nodes but a block of this endpoint has 1"),
    ({"num_nodes": 1, "ranks_per_node": 2, "gpus": 1}, "Invalid Resource Specification Supplied: ['gpus']"),
    ({"num_nodes": 1, "ranks_per_node": 2, "num_ranks": 3}, "inconsistent resource_specification"),
    ({"num_nodes": 0, "ranks_per_node": 2}, "must be a positive integer"),
])
def test_bad_resource_specification_is_a_clear_error(mpi_endpoint: str, spec: dict[str, Any], message: str) -> None:
    # upstream hangs on the first three (Parsl #3427, or waits for nodes that never come)
    with Executor(endpoint_id=mpi_endpoint) as ex:
        ex.resource_specification = spec
        with pytest.raises(TaskExecutionFailed) as info:
            ex.submit(MPIFunction("hostname")).result(timeout=60)
    assert message in str(info.value)
    assert "Failed to start task" in str(info.value)


def test_endpoint_still_runs_after_bad_specs(mpi_endpoint: str) -> None:
    with Executor(endpoint_id=mpi_endpoint) as ex:
        ex.resource_specification = {}
        bad = ex.submit(MPIFunction("hostname"))
        ex.resource_specification = {"num_nodes": 1, "ranks_per_node": 1}
        good = ex.submit(MPIFunction("echo fine"))
        assert good.result(timeout=120).stdout.strip() == "fine"
        with pytest.raises(TaskExecutionFailed):
            bad.result(timeout=60)
