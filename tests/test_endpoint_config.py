"""Endpoint configuration, MPI resource specifications and the execution contract, without a
broker: each bad input fails with its key and reason."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from volley.endpoint.config import ConfigError, parse_config
from volley.endpoint.engines.base import ResourceSpecError
from volley.endpoint.engines.mpi import check_mpi_spec
from volley.endpoint.execute import execute_task
from volley.endpoint.local import TEMPLATES, check_name, render_config
from volley.protocol.messages import decode, pack_task
from volley.serialize import ComputeSerializer

GUIDE_SANDBOX_CONFIG = """\
display_name: SandboxExample
engine:
  type: GlobusComputeEngine

  # Enable sandboxing
  run_in_sandbox: True
"""


@pytest.mark.parametrize(("text", "message"), [
    ("foo: 1\n", "unknown key 'foo'"),
    ("engine: {type: Nope}\n", "engine.type 'Nope' is not one of"),
    ("engine: {max_workers: 2}\n", "engine.type is missing"),
    ("engine: []\n", "engine must be a mapping"),
    ("engine: {type: ProcessPoolEngine, max_workers: 0}\n", "engine.max_workers: must be a positive integer"),
    ("engine: {type: ThreadPoolEngine, max_wrkers: 2}\n", "engine.max_wrkers: unknown key for ThreadPoolEngine"),
    ("engine: {type: HighThroughputEngine, max_wrkers_per_node: 2}\n", "engine.max_wrkers_per_node: unknown key"),
    ("engine: {type: HighThroughputEngine, provider: {type: NoSuchProvider}}\n",
     "engine.provider.type: 'NoSuchProvider' is not a Parsl provider"),
    ("engine: {type: HighThroughputEngine, provider: {type: LocalProvider, init_blockz: 1}}\n",
     "engine.provider.init_blockz: unknown key"),
    ("engine: {type: HighThroughputEngine, provider: {type: LocalProvider, max_blocks: many}}\n",
     "engine.provider.max_blocks: expected int"),
    ("engine: {type: HighThroughputEngine, provider: {type: SlurmProvider, launcher: {type: Nope}}}\n",
     "engine.provider.launcher.type: 'Nope' is not a Parsl launcher"),
    ("engine: {type: HighThroughputEngine, provider: LocalProvider}\n", "engine.provider: must be a mapping"),
    ("engine: {type: HighThroughputEngine, heartbeat_period: 30, heartbeat_threshold: 40}\n",
     "engine.heartbeat_threshold: 40 must be at least twice"),
    ("engine: {type: HighThroughputEngine, enable_mpi_mode: true}\n", "engine.enable_mpi_mode: MPI settings belong"),
    ("engine: {type: HighThroughputEngine, container_type: docker}\n", "engine.container_type: containers are not supported"),
    ("engine: {type: HighThroughputEngine, address: {type: address_by_nothing}}\n", "engine.address.type"),
    ("engine: {type: HighThroughputEngine, job_status_kwargs: {strategy: fastest}}\n",
     "engine.job_status_kwargs.strategy: 'fastest'"),
    ("engine: {type: MPIEngine, provider: {type: LocalProvider, launcher: {type: SingleNodeLauncher}}}\n",
     "engine.provider.launcher: MPIEngine needs SimpleLauncher"),
    ("engine: {type: MPIEngine, mpi_launcher: mpirun}\n", "mpi_launcher"),
    ("engine: {type: MPIEngine, mpi_flavor: lam}\n", "engine.mpi_flavor: 'lam' is not one of"),
    ("engine: {type: MPIEngine, max_workers_per_node: 2}\n", "engine.max_workers_per_node: not used by MPIEngine"),
    ("engine: {type: ThreadPoolEngine, max_retries_on_system_failure: -1}\n", "engine.max_retries_on_system_failure"),
    ("engine: {type: ThreadPoolEngine, allowed_serializers: [nope.Nope]}\n", "engine.allowed_serializers"),
    ("heartbeat_period: soon\n", "heartbeat_period must be a number"),
    ("heartbeat_period: 0\n", "heartbeat_period must be at least"),
    ("run_in_sandbox: yes please\n", "run_in_sandbox must be true or false"),
    ("allowed_functions: [not-a-uuid]\n", "allowed_functions[0]: 'not-a-uuid' is not a function id"),
    ("allowed_functions: abc\n", "allowed_functions must be a list"),
    ("amqp_port: 70000\n", "amqp_port must be at most 65535"),
    ("prefetch: 0\n", "prefetch must be at least 1"),
    ("idle_heartbeats_soft: -2\n", "idle_heartbeats_soft must be at least 0"),
    ("display_name: [a]\n", "display_name must be a string"),
    ("engine: {type: ThreadPoolEngine\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_bad_config_names_key_and_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "config.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("config.yaml: ")


def test_guide_sandbox_config_loads_with_upstream_names() -> None:
    cfg = parse_config(GUIDE_SANDBOX_CONFIG)
    assert cfg.engine_type == "HighThroughputEngine"
    assert cfg.sandbox is True
    assert parse_config("engine: {type: GlobusMPIEngine}\n").engine_type == "MPIEngine"


def test_cluster_provider_config_loads() -> None:
    cfg = parse_config("""\
engine:
  type: GlobusMPIEngine
  max_workers_per_block: 2
  mpi_launcher: srun
  address: 127.0.0.1
  provider:
    type: SlurmProvider
    partition: debug
    account: abc123
    nodes_per_block: 4
    walltime: "01:00:00"
    worker_init: "module load openmpi"
    launcher: {type: SimpleLauncher}
""")
    assert cfg.engine_type == "MPIEngine"


def test_allowed_functions_are_normalised() -> None:
    cfg = parse_config("allowed_functions: ['6F9619FF-8B86-D011-B42D-00C04FC964FF']\n")
    assert cfg.allowed_functions == ["6f9619ff-8b86-d011-b42d-00c04fc964ff"]


@pytest.mark.parametrize("engine_type", sorted(TEMPLATES))
def test_configure_templates_are_valid(engine_type: str) -> None:
    cfg = parse_config(render_config(engine_type, display_name="x y", workers=3, sandbox=True))
    assert cfg.engine_type == engine_type and cfg.sandbox and cfg.display_name == "x y"


@pytest.mark.parametrize("name", ["", "a b", "a/b", ".hidden", "x..y", "q'uote", "n" * 129])
def test_bad_endpoint_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid endpoint name"):
        check_name(name)


# --- MPI resource specifications --------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "expected"), [
    ({"num_nodes": 2, "ranks_per_node": 3}, {"num_nodes": 2, "ranks_per_node": 3, "num_ranks": 6}),
    ({"num_nodes": 2, "num_ranks": 8}, {"num_nodes": 2, "ranks_per_node": 4, "num_ranks": 8}),
    ({"num_ranks": 4, "ranks_per_node": 2}, {"num_nodes": 2, "ranks_per_node": 2, "num_ranks": 4}),
    ({"num_nodes": "1", "ranks_per_node": "2", "launcher_options": "--bind-to core"},
     {"num_nodes": 1, "ranks_per_node": 2, "num_ranks": 2, "launcher_options": "--bind-to core"}),
])
def test_mpi_spec_is_completed(spec: dict[str, Any], expected: dict[str, Any]) -> None:
    assert check_mpi_spec(spec, block_nodes=4) == {"launcher_options": "", **expected}


@pytest.mark.parametrize(("spec", "message"), [
    ({}, "needs a resource_specification"),
    ({"num_nodes": 1}, "needs 'ranks_per_node' or 'num_ranks'"),
    ({"num_ranks": 3}, "needs 'num_nodes'"),
    ({"num_nodes": 2, "num_ranks": 3}, "cannot be spread evenly"),
    ({"num_nodes": 5, "ranks_per_node": 1}, "asks for 5 nodes but a block of this endpoint has 4"),
    ({"num_nodes": 1.5, "ranks_per_node": 1}, "must be a positive integer"),
    ({"num_nodes": 1, "ranks_per_node": 1, "launcher_options": 3}, "'launcher_options'] must be a string"),
    ({"num_nodes": 1, "ranks_per_node": 1, "priority": 1}, "Invalid Resource Specification Supplied: ['priority']"),
])
def test_bad_mpi_spec(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ResourceSpecError) as info:
        check_mpi_spec(spec, block_nodes=4)
    assert message in str(info.value)


# --- execute_task: the execution contract ---------------------------------------------------------
def pwd_and_env() -> tuple[str, str | None, str | None]:
    return os.getcwd(), os.environ.get("GC_TASK_UUID"), os.environ.get("GC_TASK_SANDBOX_DIR")


def unserializable() -> Any:
    return (i for i in range(2))


def _task(fn: Any, *args: Any) -> tuple[str, bytes]:
    import uuid

    s = ComputeSerializer()
    tid = str(uuid.uuid4())
    buf = s.pack_buffers([s.serialize(fn)]) + s.pack_buffers([s.serialize(args), s.serialize({})])
    return tid, pack_task(tid, buf)


@pytest.fixture()
def restore_cwd() -> Any:
    cwd = os.getcwd()
    env = {k: os.environ.get(k) for k in ("GC_TASK_UUID", "GC_TASK_SANDBOX_DIR")}
    yield
    os.chdir(cwd)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("sandbox", [False, True])
def test_working_dir_and_environment(tmp_path: Path, restore_cwd: Any, sandbox: bool) -> None:
    tid, body = _task(pwd_and_env)
    m = decode(execute_task(tid, body, run_dir=str(tmp_path), run_in_sandbox=sandbox))
    cwd, uuid_env, sandbox_env = ComputeSerializer().deserialize(m.data)
    expected = tmp_path / tid if sandbox else tmp_path
    assert (cwd, uuid_env) == (str(expected), tid)
    assert sandbox_env == (str(expected) if sandbox else None)


def test_json_result_serializer_gives_json(tmp_path: Path, restore_cwd: Any) -> None:
    tid, body = _task(dict, [("a", 1)])
    m = decode(execute_task(tid, body, run_dir=str(tmp_path),
                            result_serializers=["globus_compute_sdk.serialize.JSONData"]))
    assert m.data == '11\n{"a": 1}' and not m.is_error


def test_every_failing_result_serializer_is_reported(tmp_path: Path, restore_cwd: Any) -> None:
    tid, body = _task(unserializable)
    m = decode(execute_task(tid, body, run_dir=str(tmp_path), result_serializers=[
        "globus_compute_sdk.serialize.JSONData", "globus_compute_sdk.serialize.DillDataBase64"]))
    assert m.error_code == "RemoteExecutionError"
    assert "All strategies failed" in m.data
    assert "not JSON serializable" in m.data and "cannot pickle 'generator' object" in m.data


def test_oversize_result(tmp_path: Path, restore_cwd: Any) -> None:
    tid, body = _task(str.__mul__, "y", 10 * 1024 * 1024)
    m = decode(execute_task(tid, body, run_dir=str(tmp_path)))
    assert m.error_code == "MaxResultSizeExceeded"
    assert m.data.startswith("MaxResultSizeExceeded(") and m.data.endswith(", 10485760)")
    assert m.error_message.startswith("remote error: Task result of ")


def test_unusable_payload_is_could_not_execute(tmp_path: Path, restore_cwd: Any) -> None:
    m = decode(execute_task("00000000-0000-0000-0000-000000000001",
                            pack_task("00000000-0000-0000-0000-000000000001", "3\nabc"), run_dir=str(tmp_path)))
    assert m.error_code == "CouldNotExecuteUserTaskError"
    assert m.error_message.startswith("remote error: ")
    assert m.data.startswith("CouldNotExecuteUserTaskError(")


def test_disallowed_deserializer_is_refused(tmp_path: Path, restore_cwd: Any) -> None:
    tid, body = _task(pwd_and_env)
    m = decode(execute_task(tid, body, run_dir=str(tmp_path), allowed_serializers=[
        "globus_compute_sdk.serialize.DillCodeSource", "globus_compute_sdk.serialize.JSONData"]))
    assert m.error_code == "CouldNotExecuteUserTaskError"
    assert "disabled by current configuration" in m.data
