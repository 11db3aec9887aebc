"""Parsl engines: HighThroughputEngine (HTEX) and MPIEngine (HTEX in MPI mode).

The agent hands Parsl the packed task as it came off the queue, through HTEX's
``submit_payload`` with a ``task_executor`` context: Parsl's worker imports
:func:`volley.endpoint.execute.run_parsl_task` and calls it with the bytes, so neither side
re-serializes the payload.  Scaling is Parsl's own ``JobStatusPoller``; blocks come from any
Parsl provider (``LocalProvider`` on a laptop, ``SlurmProvider``/``PBSProProvider`` on a
cluster).
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import socket
import sys
import uuid
from concurrent.futures import Future
from typing import Any

from volley.endpoint.engines.base import (
    COMMON_OPTIONS,
    Engine,
    EngineConfigError,
    EngineStopped,
    ResourceSpecError,
)
from volley.endpoint.engines.mpi import MPI_FLAVORS, check_mpi_spec
from volley.endpoint.engines.parsl_objects import build_address, build_provider, check_kwargs

log = logging.getLogger(__name__)

# Keys of the engine block that are ours, not HighThroughputExecutor keywords.
OWN_OPTIONS = ("provider", "address", "label", "job_status_kwargs", "strategy")
REFUSED = {
    "container_type": "containers are not supported by Volley's engines",
    "container_uri": "containers are not supported by Volley's engines",
    "container_cmd_options": "containers are not supported by Volley's engines",
    "executor": "a prebuilt executor cannot be given in YAML",
    "interchange_launch_cmd": "Volley starts the interchange itself (so it dies with the endpoint)",
}
JOB_STATUS_DEFAULTS = {"strategy": "simple", "max_idletime": 120.0, "strategy_period": 5.0}


def _worker_launch_cmd(default: str) -> str:
    # Parsl's default runs `process_worker_pool.py` from PATH, which a venv that is not activated
    # lacks; run the module with this interpreter instead (override with launch_cmd).
    return default.replace(
        "process_worker_pool.py",
        f"{shlex.quote(sys.executable)} -m parsl.executors.high_throughput.process_worker_pool", 1,
    )


class HighThroughputEngine(Engine):
    type_name = "HighThroughputEngine"
    mpi = False

    def __init__(self, **options: Any) -> None:
        common = {k: options.pop(k) for k in COMMON_OPTIONS if k in options}
        for key in ("endpoint_id", "endpoint_dir"):
            if key in options:
                common[key] = options.pop(key)
        super().__init__(**common)
        for key, why in REFUSED.items():
            if key in options:
                raise EngineConfigError(f"engine.{key}: {why}")
        self.label = str(options.pop("label", "volley"))
        self.job_status = self._job_status_kwargs(options.pop("job_status_kwargs", None), options.pop("strategy", None))
        provider_block = options.pop("provider", None) or {"type": "LocalProvider"}
        address = options.pop("address", None)
        executor_kwargs = self._executor_kwargs(options)
        if address is not None:
            executor_kwargs["address"] = build_address(address, "engine.address")
        self.provider = build_provider(
            provider_block, "engine.provider", default_launcher="SimpleLauncher" if self.mpi else None,
        )
        self._check_provider()
        executor_class = self._executor_class()
        check_kwargs(executor_class, executor_kwargs, "engine", exclude=("provider", "label"))
        period = executor_kwargs.get("heartbeat_period", 30)
        threshold = executor_kwargs.get("heartbeat_threshold", 120)
        if threshold < 2 * period:
            # the interchange would declare every busy manager lost (ManagerLost) between beats
            raise EngineConfigError(
                f"engine.heartbeat_threshold: {threshold} must be at least twice engine.heartbeat_period ({period})"
            )
        from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

        executor_kwargs.setdefault("launch_cmd", _worker_launch_cmd(DEFAULT_LAUNCH_CMD))
        try:
            self.executor = executor_class(
                label=f"{self.label}-{executor_class.__name__}", provider=self.provider, **executor_kwargs,
            )
        except Exception as exc:
            raise EngineConfigError(f"engine: {type(exc).__name__}: {exc}") from None
        # The interchange is started through a wrapper that makes it die with the agent; a killed
        # agent would otherwise leave it running for ever.
        self.executor.interchange_launch_cmd = [sys.executable, "-m", "volley.endpoint.engines.interchange"]
        self.poller: Any = None

    # --- configuration ----------------------------------------------------------------------
    @staticmethod
    def _executor_class() -> Any:
        from parsl.executors import HighThroughputExecutor

        return HighThroughputExecutor

    def _executor_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        for key in ("enable_mpi_mode", "mpi_launcher", "max_workers_per_block"):
            if key in options:
                raise EngineConfigError(f"engine.{key}: MPI settings belong to an MPIEngine (GlobusMPIEngine)")
        if "max_workers" in options:  # upstream's old name
            options["max_workers_per_node"] = options.pop("max_workers")
        return options

    def _check_provider(self) -> None:
        pass

    @staticmethod
    def _job_status_kwargs(block: Any, strategy: Any) -> dict[str, Any]:
        out = dict(JOB_STATUS_DEFAULTS)
        if strategy is not None:
            out["strategy"] = strategy
        if block is None:
            return out
        if not isinstance(block, dict):
            raise EngineConfigError("engine.job_status_kwargs: must be a mapping")
        for k, v in block.items():
            if k not in JOB_STATUS_DEFAULTS:
                raise EngineConfigError(
                    f"engine.job_status_kwargs.{k}: unknown key; accepted: {', '.join(JOB_STATUS_DEFAULTS)}"
                )
            out[k] = v
        if out["strategy"] not in ("simple", "htex_auto_scale", "none"):
            raise EngineConfigError(
                f"engine.job_status_kwargs.strategy: {out['strategy']!r} is not one of simple, htex_auto_scale, none"
            )
        return out

    @property
    def block_nodes(self) -> int:
        return int(getattr(self.provider, "nodes_per_block", 1) or 1)

    @property
    def capacity(self) -> int:
        per_node = self.executor.workers_per_node
        if per_node == math.inf:
            per_node = os.cpu_count() or 1
        blocks = max(1, int(getattr(self.provider, "max_blocks", 1) or 1))
        return max(1, int(per_node) * self.block_nodes * blocks)

    # --- running ----------------------------------------------------------------------------
    def start(self) -> None:
        super().start()
        from parsl.jobs.job_status_poller import JobStatusPoller

        scripts = os.path.join(self.endpoint_dir, "submit_scripts")
        os.makedirs(scripts, exist_ok=True)
        self.provider.script_dir = scripts
        self._prepare_provider()
        self.executor.run_dir = self.endpoint_dir
        self.executor.run_id = str(uuid.uuid4())
        self.executor.start()
        self.poller = JobStatusPoller(**self.job_status)
        self.poller.add_executors([self.executor])
        # the poller's first tick provisions init_blocks; do it now, not one period from now
        self.poller.poll()

    def _prepare_provider(self) -> None:
        pass

    def check_resource_specification(self, spec: dict[str, Any]) -> dict[str, Any]:
        extra = sorted(set(spec) - {"priority"})
        if extra:
            raise ResourceSpecError(
                f"Invalid Resource Specification Supplied: {extra}; HighThroughputEngine accepts only "
                "'priority' (for MPI apps, use MPIEngine)"
            )
        return spec

    def _context(self, task_id: str, spec: dict[str, Any], result_serializers: list[str] | None) -> dict[str, Any]:
        context: dict[str, Any] = {"task_executor": {
            "f": "volley.endpoint.execute.run_parsl_task",
            "a": (task_id,),
            "k": self.task_kwargs(result_serializers),
        }}
        if spec:
            context["resource_spec"] = spec
        return context

    def _submit(self, task_id: str, body: bytes, spec: dict[str, Any],
                result_serializers: list[str] | None) -> Future:
        if self._stopping:
            raise EngineStopped(task_id)
        return self.executor.submit_payload(self._context(task_id, spec, result_serializers), body)

    def problem(self) -> str | None:
        if self.executor.bad_state_is_set:
            return f"the Parsl executor is in a bad state: {self.executor.executor_exception!r}"
        return None

    def managers(self) -> list[dict[str, Any]]:
        try:
            return list(self.executor.command_client.run("MANAGERS", timeout_s=5))
        except Exception as exc:  # interchange busy or gone: report nothing rather than hang
            log.debug("MANAGERS query failed: %s", exc)
            return []

    def workers(self) -> dict[str, int]:
        managers = self.managers()
        total = sum(int(m.get("worker_count", 0)) for m in managers)
        busy = sum(int(m.get("tasks", 0)) for m in managers)
        return {
            "total_workers": total, "idle_workers": max(0, total - busy),
            "managers": len(managers), "active_managers": sum(bool(m.get("active")) for m in managers),
        }

    def status(self) -> dict[str, Any]:
        return {
            **super().status(),
            "provider_type": type(self.provider).__name__,
            "nodes_per_block": self.block_nodes,
            "min_blocks": getattr(self.provider, "min_blocks", None),
            "max_blocks": getattr(self.provider, "max_blocks", None),
            "scaling_enabled": self.job_status["strategy"] != "none",
        }

    def shutdown(self) -> None:
        super().shutdown()
        if self.poller is not None:
            try:
                self.poller.close()  # scales in every block: the batch jobs / local pools end
            except Exception:
                log.exception("scaling in the Parsl blocks failed")
        try:
            self.executor.shutdown()
        except Exception:
            log.exception("Parsl executor shutdown failed")
        for fut in list(getattr(self.executor, "tasks", {}).values()):
            if not fut.done():
                fut.set_exception(EngineStopped("engine shut down"))


class MPIEngine(HighThroughputEngine):
    """HTEX in MPI mode: one worker pool per block (SimpleLauncher) whose workers each launch
    an MPI application over the nodes the task's resource specification asks for."""

    type_name = "MPIEngine"
    mpi = True

    def _executor_class(self) -> Any:  # type: ignore[override]
        from parsl.executors import MPIExecutor

        return MPIExecutor

    def _executor_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        self.mpi_flavor = options.pop("mpi_flavor", "auto")
        if self.mpi_flavor not in MPI_FLAVORS:
            raise EngineConfigError(f"engine.mpi_flavor: {self.mpi_flavor!r} is not one of {', '.join(MPI_FLAVORS)}")
        self.mpi_launcher = options.get("mpi_launcher", "mpiexec")
        for key in ("enable_mpi_mode", "max_workers_per_node", "cores_per_worker", "max_workers"):
            if key in options:
                raise EngineConfigError(
                    f"engine.{key}: not used by MPIEngine; set max_workers_per_block "
                    "(how many MPI applications run at once in a block)"
                )
        # upstream's GlobusMPIEngine encrypts by default, unlike Parsl's MPIExecutor
        options.setdefault("encrypted", True)
        return options

    def _check_provider(self) -> None:
        from parsl.launchers import SimpleLauncher

        launcher = getattr(self.provider, "launcher", None)
        if not isinstance(launcher, SimpleLauncher):
            raise EngineConfigError(
                f"engine.provider.launcher: MPIEngine needs SimpleLauncher (got {type(launcher).__name__})"
            )

    @property
    def is_local(self) -> bool:
        from parsl.providers import LocalProvider

        return isinstance(self.provider, LocalProvider)

    @property
    def block_nodes(self) -> int:
        # a LocalProvider block is this one machine, whatever nodes_per_block says
        return 1 if self.is_local else super().block_nodes

    @property
    def capacity(self) -> int:
        blocks = max(1, int(getattr(self.provider, "max_blocks", 1) or 1))
        return max(1, int(self.executor.max_workers_per_block) * blocks)

    def _prepare_provider(self) -> None:
        if not self.is_local:
            return
        # Parsl's MPI manager learns a block's nodes from Slurm or PBS; a LocalProvider block
        # has neither, so describe it as a one-node PBS allocation of this host.
        nodefile = os.path.join(self.endpoint_dir, "mpi_nodefile")
        with open(nodefile, "w") as f:
            f.write("localhost\n")
        init = self.provider.worker_init or ""
        self.provider.worker_init = f"export PBS_NODEFILE={shlex.quote(nodefile)}\n{init}"

    def check_resource_specification(self, spec: dict[str, Any]) -> dict[str, Any]:
        return check_mpi_spec(spec, self.block_nodes)

    def _context(self, task_id: str, spec: dict[str, Any], result_serializers: list[str] | None) -> dict[str, Any]:
        context = super()._context(task_id, spec, result_serializers)
        context["task_executor"]["k"]["mpi"] = {
            "spec": dict(spec), "launcher": self.mpi_launcher, "flavor": self.mpi_flavor,
        }
        return context

    def status(self) -> dict[str, Any]:
        return {**super().status(), "mpi_launcher": self.mpi_launcher, "host": socket.gethostname()}
