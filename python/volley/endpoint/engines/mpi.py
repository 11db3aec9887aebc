"""MPI: checking a task's resource specification, and the launch prefix for Debian's OpenMPI.

Parsl's MPI mode turns ``{num_nodes, ranks_per_node, num_ranks, launcher_options}`` into
``$PARSL_MPI_PREFIX`` on the worker.  Two upstream hazards are closed here, before a task
reaches Parsl: a specification without ``num_nodes`` (or empty) hangs the manager (Parsl #3427),
and one asking for more nodes than a block has waits in the backlog forever.  Both become an
error Result the client sees at once.

Parsl composes the ``mpiexec`` prefix in MPICH/Hydra syntax (``-ppn``, ``-hosts``), which
OpenMPI's ``mpiexec`` rejects; on an OpenMPI machine the worker rewrites it (``--map-by
ppr:N:node --host h:N,...``) from the same numbers.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from typing import Any

from volley.endpoint.engines.base import ResourceSpecError

MPI_KEYS = ("num_nodes", "ranks_per_node", "num_ranks", "launcher_options")
MPI_FLAVORS = ("auto", "openmpi", "mpich")
EXAMPLE = "e.g. {'num_nodes': 1, 'ranks_per_node': 2}"
# A count given as text: ASCII digits only.  str.isdigit() also accepts "²" (int() raises
# ValueError, which escaped to the agent) and "٣" (int() reads 3); past 4300 digits int()
# raises too, so the length is bounded.
_COUNT_TEXT = re.compile(r"\s*([0-9]{1,18})\s*", re.ASCII)
# MPI counts ranks in a C int; a larger number (up to 4300 digits from JSON) would only make
# the error texts below fail to format
MAX_COUNT = 2**31 - 1


def _count(spec: dict[str, Any], key: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        digits = _COUNT_TEXT.fullmatch(value)
        if digits is None:
            raise ResourceSpecError(
                f"resource_specification[{key!r}] must be a positive integer, got {_short(value)}"
            )
        value = int(digits.group(1))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ResourceSpecError(
            f"resource_specification[{key!r}] must be a positive integer, got {_short(value)}"
        )
    if value > MAX_COUNT:
        raise ResourceSpecError(
            f"resource_specification[{key!r}] must be at most {MAX_COUNT}, got {_short(value)}"
        )
    return value


def _short(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_mpi_spec(spec: dict[str, Any], block_nodes: int) -> dict[str, Any]:
    """The completed specification, or ResourceSpecError saying what is missing or impossible."""
    if not spec:
        raise ResourceSpecError(
            "MPIEngine needs a resource_specification for every task "
            f"({EXAMPLE}); set it on the Executor: ex.resource_specification = {{...}}"
        )
    unknown = sorted(set(spec) - set(MPI_KEYS))
    if unknown:
        raise ResourceSpecError(
            f"Invalid Resource Specification Supplied: {unknown}; MPIEngine accepts only {list(MPI_KEYS)}"
        )
    nodes, rpn, ranks = (_count(spec, k) for k in ("num_nodes", "ranks_per_node", "num_ranks"))
    options = spec.get("launcher_options", "")
    if not isinstance(options, str):
        raise ResourceSpecError(f"resource_specification['launcher_options'] must be a string, got {_short(options)}")
    if nodes is None:
        if ranks is None or rpn is None:
            raise ResourceSpecError(
                f"resource_specification needs 'num_nodes' (or both 'num_ranks' and 'ranks_per_node'); {EXAMPLE}"
            )
        nodes = -(-ranks // rpn)
    if rpn is None:
        if ranks is None:
            raise ResourceSpecError(
                f"resource_specification needs 'ranks_per_node' or 'num_ranks' besides 'num_nodes'; {EXAMPLE}"
            )
        if ranks % nodes:
            raise ResourceSpecError(f"num_ranks={ranks} cannot be spread evenly over num_nodes={nodes}")
        rpn = ranks // nodes
    if ranks is None:
        ranks = nodes * rpn
    if ranks != nodes * rpn:
        raise ResourceSpecError(
            f"inconsistent resource_specification: num_ranks={ranks} but num_nodes x ranks_per_node = {nodes * rpn}"
        )
    if nodes > block_nodes:
        raise ResourceSpecError(
            f"resource_specification asks for {nodes} nodes but a block of this endpoint has "
            f"{block_nodes} (provider nodes_per_block); the task could never start"
        )
    return {"num_nodes": nodes, "ranks_per_node": rpn, "num_ranks": ranks, "launcher_options": options}


@functools.lru_cache(maxsize=1)
def detect_flavor() -> str:
    try:
        out = subprocess.run(["mpiexec", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "mpich"
    text = (out.stdout + out.stderr).lower()
    return "openmpi" if ("open mpi" in text or "openrte" in text) else "mpich"


def prepare_mpi_env(spec: dict[str, Any], launcher: str, flavor: str) -> None:
    """Runs on the worker before an MPI task: fix the prefix for OpenMPI; allow root runs."""
    if os.geteuid() == 0:
        # OpenMPI refuses to run as root unless told twice; containers and CI often are root
        os.environ["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        os.environ["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    nodelist = os.environ.get("PARSL_MPI_NODELIST")
    if launcher != "mpiexec" or not nodelist or not spec:
        return
    if (detect_flavor() if flavor == "auto" else flavor) != "openmpi":
        return
    rpn = spec["ranks_per_node"]
    hosts = ",".join(f"{h}:{rpn}" for h in nodelist.split(",") if h)
    prefix = f"mpiexec -n {spec['num_ranks']} --map-by ppr:{rpn}:node --host {hosts} {spec.get('launcher_options', '')}"
    os.environ["PARSL_MPIEXEC_PREFIX"] = os.environ["PARSL_MPI_PREFIX"] = prefix.strip()
