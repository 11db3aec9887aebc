"""Executor behaviour: validation and properties (no network), then submission, futures,
map, cancellation, failures and shutdown against the local stack."""

from __future__ import annotations

import concurrent.futures as cf
import subprocess
import sys
import textwrap
import threading
import uuid
from typing import Any

import pytest

from volley import Client, Executor
from volley.errors import TaskExecutionFailed
from volley.sdk.future import ComputeFuture
from volley.sdk.http import ComputeAPIError
from volley.serialize import ComputeSerializer, JSONData


class OfflineClient:
    """Enough of a Client for tests that must not touch the network."""

    def __init__(self) -> None:
        self.fx_serializer = ComputeSerializer()
        self.registered: list[Any] = []

    def register_function(self, fn: Any, **kw: Any) -> str:
        self.registered.append(fn)
        return str(uuid.uuid4())


def offline(**kw: Any) -> Executor:
    return Executor(client=OfflineClient(), **kw)  # type: ignore[arg-type]


def square(x: int) -> int:
    return x * x


def fail(msg: str) -> None:
    raise RuntimeError(msg)


def slow(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


# --- no network -----------------------------------------------------------------------------------
def test_invalid_kwarg_raises() -> None:
    with pytest.raises(TypeError, match="'bogus' is an invalid argument for Executor"):
        offline(bogus=1)


def test_endpoint_id_parsing() -> None:
    ep = uuid.uuid4()
    ex = offline(endpoint_id=str(ep))
    assert ex.endpoint_id == ep
    ex.endpoint_id = ""
    assert ex.endpoint_id is None
    with pytest.raises(ValueError):
        ex.endpoint_id = "not-a-uuid"
    ex.shutdown()


def test_resource_specification_validation() -> None:
    ex = offline()
    with pytest.raises(TypeError, match="Resource specification must be of type dict,not <class 'list'>"):
        ex.resource_specification = [1]
    with pytest.raises(TypeError, match="Resource specification must be JSON-serializable"):
        ex.resource_specification = {"x": object()}
    ex.resource_specification = {"num_nodes": 2}
    assert ex.resource_specification == {"num_nodes": 2}
    ex.shutdown()


def test_user_endpoint_config_validation() -> None:
    ex = offline()
    with pytest.raises(TypeError, match="Config must be of type dict, not <class 'str'>"):
        ex.user_endpoint_config = "x"
    with pytest.raises(TypeError, match="Configuration must be JSON-serializable"):
        ex.user_endpoint_config = {"x": {1, 2}}
    ex.shutdown()


def test_serializer_setter_validation() -> None:
    ex = offline()
    with pytest.raises(TypeError, match="Expected ComputeSerializer, got"):
        ex.serializer = "json"
    ser = ComputeSerializer(strategy_data=JSONData())
    ex.serializer = ser
    assert ex.client.fx_serializer is ser
    ex.shutdown()


def test_result_serializers_validated_and_normalised() -> None:
    from volley.errors import SerdeError

    ex = offline(result_serializers=[JSONData()])
    assert ex._result_serializer_paths == ["globus_compute_sdk.serialize.concretes.JSONData"]
    with pytest.raises(SerdeError):
        ex.result_serializers = ["no.such.Strategy"]
    ex.shutdown()


def test_batch_size_and_burst_arguments_are_clamped() -> None:
    ex = offline(batch_size=0, api_burst_limit=100, api_burst_window_s=0)
    assert (ex.batch_size, ex.api_burst_limit, ex.api_burst_window_s) == (1, 8, 1)
    ex.shutdown()


def test_task_group_id_is_known_before_the_first_submit() -> None:
    ex = offline()
    assert isinstance(ex.task_group_id, uuid.UUID)  # the guide prints it to reload later
    ex.shutdown()


def test_task_group_id_becomes_process_default() -> None:
    tg = uuid.uuid4()
    offline(task_group_id=tg).shutdown()
    ex = offline()
    assert ex.task_group_id == tg
    ex.shutdown()


def test_submit_without_endpoint_shuts_down() -> None:
    ex = offline()
    with pytest.raises(ValueError, match=r"No endpoint_id set\.  Did you forget"):
        ex.submit(square, 2)
    with pytest.raises(RuntimeError, match=r"is shutdown; no new functions may be executed"):
        ex.submit(square, 2)


def test_register_function_cache_rules() -> None:
    ex = offline()
    fid = ex.register_function(square)
    assert ex.register_function(square, function_id=fid) == fid
    with pytest.raises(ValueError, match=f"Function already registered as function id: {fid}"):
        ex.register_function(square)
    other = str(uuid.uuid4())
    with pytest.raises(ValueError, match=r"\(attempted id: "):
        ex.register_function(square, function_id=other)
    assert ex.register_function(fail, function_id=other) == other
    assert ex.client.registered == [square]  # a given id costs no API call
    ex.shutdown()
    with pytest.raises(RuntimeError, match="refusing to register function"):
        ex.register_function(slow)


def test_repr() -> None:
    ep = uuid.uuid4()
    ex = offline(endpoint_id=ep, label="lbl", batch_size=4)
    assert repr(ex).startswith(f"Executor<lbl; ep_id:{ep}; tg_id:")
    assert repr(ex).endswith("; bs:4>")
    ex.shutdown()


def test_interpreter_exits_with_many_executors_open() -> None:
    script = textwrap.dedent(
        """
        import uuid
        from volley import Executor
        from volley.serialize import ComputeSerializer
        class C:
            fx_serializer = ComputeSerializer()
        exs = [Executor(client=C(), endpoint_id=uuid.uuid4()) for _ in range(10)]
        exs[3].shutdown()
        print("main done")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "main done"


# --- against the stack ------------------------------------------------------------------------------
def test_futures_get_task_ids_and_metadata(endpoint_id: str) -> None:
    with Executor(endpoint_id=endpoint_id, task_group_id=uuid.uuid4()) as ex:
        fut = ex.submit(square, 9)
        assert isinstance(fut, ComputeFuture)
        assert fut.result(timeout=60) == 81
        uuid.UUID(fut.task_id)
        assert fut._metadata["endpoint_uuid"] == uuid.UUID(endpoint_id)
        assert fut._metadata["task_group_uuid"] == ex.task_group_id


def test_map_is_ordered_and_honours_timeout(endpoint_id: str) -> None:
    with Executor(endpoint_id=endpoint_id, task_group_id=uuid.uuid4()) as ex:
        assert list(ex.map(square, range(30), timeout=120)) == [i * i for i in range(30)]
        results = ex.map(slow, [3.0], timeout=0.5)
        with pytest.raises(TimeoutError):
            list(results)


def test_as_completed_and_wait(endpoint_id: str) -> None:
    with Executor(endpoint_id=endpoint_id, task_group_id=uuid.uuid4()) as ex:
        futs = [ex.submit(square, i) for i in range(20)]
        got = sorted(f.result() for f in cf.as_completed(futs, timeout=120))
        assert got == sorted(i * i for i in range(20))
        done, not_done = cf.wait(futs, timeout=60)
        assert len(done) == 20 and not not_done


def test_cancel_before_result(endpoint_id: str) -> None:
    ex = Executor(endpoint_id=endpoint_id, task_group_id=uuid.uuid4())
    fut = ex.submit(slow, 2.0)
    assert fut.cancel()
    assert fut.cancelled()
    with pytest.raises(cf.CancelledError):
        fut.result()
    ex.shutdown(wait=True)


def test_remote_exception_and_traceback(endpoint_id: str) -> None:
    with Executor(endpoint_id=endpoint_id, task_group_id=uuid.uuid4()) as ex:
        fut = ex.submit(fail, "kaput")
        exc = fut.exception(timeout=60)
    assert isinstance(exc, TaskExecutionFailed)
    assert "RuntimeError: kaput" in str(exc)


def test_unknown_endpoint_fails_only_its_futures(endpoint_id: str) -> None:
    with Executor(endpoint_id=uuid.uuid4(), task_group_id=uuid.uuid4()) as bad:
        fut = bad.submit(square, 3)
        exc = fut.exception(timeout=60)
        assert isinstance(exc, ComputeAPIError) and exc.http_status == 404
        # the executor is not poisoned: it accepts further work (which fails the same way)
        assert isinstance(bad.submit(square, 4).exception(timeout=60), ComputeAPIError)
    with Executor(endpoint_id=endpoint_id, task_group_id=uuid.uuid4()) as good:
        assert good.submit(square, 3).result(timeout=60) == 9


def test_shutdown_cancel_futures_cancels_unsent(endpoint_id: str) -> None:
    ex = Executor(endpoint_id=endpoint_id, task_group_id=uuid.uuid4())
    futs = [ex.submit(square, i) for i in range(500)]
    ex.shutdown(wait=False, cancel_futures=True)
    for f in futs:
        try:
            f.result(timeout=120)
        except cf.CancelledError:
            pass
    assert all(f.done() for f in futs)
    with pytest.raises(RuntimeError, match="is shutdown"):
        ex.submit(square, 1)


def test_client_task_api(endpoint_id: str) -> None:
    from volley.errors import TaskPending

    client = Client()
    fid = client.register_function(square)
    tid = client.run(12, endpoint_id=endpoint_id, function_id=fid)
    with Executor(endpoint_id=endpoint_id, task_group_id=client.session_task_group_id) as ex:
        (fut,) = ex.reload_tasks()
        assert fut.result(timeout=60) == 144
    assert client.get_result(tid) == 144
    assert client.get_task(tid)["status"] == "success"
    assert client.get_batch_result([tid])[tid]["result"] == 144
    slow_id = client.register_function(slow)
    pending = client.run(3.0, endpoint_id=endpoint_id, function_id=slow_id)
    with pytest.raises(TaskPending):
        client.get_result(pending)


def test_client_api_errors_carry_status(endpoint_id: str) -> None:
    client = Client()
    with pytest.raises(ComputeAPIError) as info:
        client.get_task(uuid.uuid4())
    assert info.value.http_status == 404 and info.value.code == "NOT_FOUND"
    bad = Client(token="vly_not-a-token", do_version_check=False)
    with pytest.raises(ComputeAPIError) as info:
        bad.get_endpoints()
    assert info.value.http_status == 401


def test_interpreter_waits_for_open_futures_at_exit(stack: dict[str, Any], endpoint_id: str) -> None:
    # like concurrent.futures: a script that never calls result() or shutdown() still sees its
    # futures resolved before the interpreter exits
    script = textwrap.dedent(
        f"""
        from volley import Executor

        def late(x):
            import time
            time.sleep(1.0)
            return x + 1

        ex = Executor(endpoint_id="{endpoint_id}")
        fut = ex.submit(late, 41)
        fut.add_done_callback(lambda f: print("resolved", f.result(), flush=True))
        print("main done", flush=True)
        """
    )
    import os

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, VOLLEY_HOME=stack["state_dir"]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["main", "done", "resolved", "42"]


def test_shutdown_waits_only_for_its_own_futures(endpoint_id: str) -> None:
    # CPython reuses the id() of collected objects, so a stale future may carry this
    # Executor's id() in upstream's executor_id; shutdown must not wait on it
    from volley.sdk.watcher import watcher_for

    tg = uuid.uuid4()
    ex = Executor(endpoint_id=endpoint_id, task_group_id=tg)
    assert ex.submit(square, 5).result(timeout=60) == 25
    stranger = ComputeFuture(str(uuid.uuid4()))  # a task that will never report back
    stranger._metadata["executor_id"] = id(ex)
    watcher_for(str(tg), ex.client, transport=ex.transport, port=None).watch([stranger])
    done = threading.Event()
    t = threading.Thread(target=lambda: (ex.shutdown(wait=True), done.set()))
    t.start()
    t.join(timeout=60)
    assert done.is_set(), "shutdown waited on a future that is not this Executor's"
    stranger.cancel()


def test_exit_is_not_held_by_a_future_whose_cancel_its_endpoint_never_answers(stack: dict[str, Any]) -> None:
    # the endpoint is registered but never started: its task would wait forever, and so would the
    # answer to the cancel request; cancel() says False (the task is not known cancelled), and
    # the interpreter still exits: the user gave that future up
    script = textwrap.dedent(
        """
        from volley import Client, Executor

        client = Client()
        ghost = client.register_endpoint("ghost-endpoint")["endpoint_id"]
        ex = Executor(endpoint_id=ghost, client=client)
        fut = ex.submit(abs, -1)
        import time
        while fut.task_id is None:  # accepted by the service: now only a result could end it
            time.sleep(0.05)
        print("cancelled", fut.cancel(), flush=True)
        """
    )
    import os

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, VOLLEY_HOME=stack["state_dir"]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["cancelled", "False"]


def test_a_service_that_stays_down_fails_only_that_batch_naming_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    """Submissions wait out a down service for $VOLLEY_SERVICE_RETRY_FOR seconds (default 300),
    then fail that batch's futures with an error that says what and how to change it; the
    Executor itself keeps working."""
    import socket

    monkeypatch.setenv("VOLLEY_SERVICE_RETRY_FOR", "0.5")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client(service_url=f"http://127.0.0.1:{port}", token="t", do_version_check=False)
    with Executor(endpoint_id=str(uuid.uuid4()), client=client) as ex:
        fid = str(uuid.uuid4())
        first = ex.submit_to_registered_function(fid, args=(1,))
        err = first.exception(timeout=60)
        assert isinstance(err, ConnectionError)
        assert "cannot reach the Volley service" in str(err) and "VOLLEY_SERVICE_RETRY_FOR" in str(err)
        second = ex.submit_to_registered_function(fid, args=(2,))  # a later batch is tried afresh
        assert isinstance(second.exception(timeout=60), ConnectionError)
