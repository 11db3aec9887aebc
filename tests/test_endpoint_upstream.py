"""Interop: the real upstream endpoint worker (globus-compute-endpoint 4.19.0, its own venv made
by scripts/setup.sh) runs tasks submitted through ``volley.Executor``.

Upstream's own recipe for a multi-user endpoint: the worker is started as ``_start-user-endpoint NAME`` with
the AMQP credentials our service issues at registration (POST /v3/endpoints) on stdin; it
consumes its task queue on our broker and publishes results and heartbeats there.  TLS: pika
builds its default SSL context for ``amqps://``, which trusts ``SSL_CERT_FILE`` (our CA).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import endpoint_helpers as eh
import interop_functions as fns
from volley import Executor
from volley.errors import TaskExecutionFailed
from volley.sdk.client import Client
from volley.serialize import JSONData

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT / ".venv-upstream-ep" / "bin" / "globus-compute-endpoint"
CONFIG = "heartbeat_period: 5\nengine:\n  type: ThreadPoolEngine\n  max_workers: 2\n"


@pytest.fixture(scope="module")
def upstream_endpoint(stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not UPSTREAM.exists():
        pytest.fail(f"{UPSTREAM} is missing: run scripts/setup.sh (it builds the upstream endpoint's venv)")
    client = Client()
    reg = client.register_endpoint("upstream-uep", display_name="upstream globus-compute-endpoint 4.19.0")
    eid = reg["endpoint_id"]
    user_dir = tmp_path_factory.mktemp("gc-user-dir")
    (user_dir / "upstream-uep").mkdir()
    creds = {"endpoint_id": eid, **{k: reg[k] for k in ("task_queue_info", "result_queue_info", "heartbeat_queue_info")}}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOLLEY_", "GLOBUS_COMPUTE_ENDPOINT_DIR"))}
    env.update(GLOBUS_COMPUTE_USER_DIR=str(user_dir), SSL_CERT_FILE=str(client.ca_file),
               PYTHONPATH=str(Path(__file__).parent))
    log = open(user_dir / "uep.log", "wb")
    # started directly by this process: the worker exits once its original parent is gone
    proc = subprocess.Popen([str(UPSTREAM), "_start-user-endpoint", "upstream-uep"], stdin=subprocess.PIPE,
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"amqp_creds": creds, "config": CONFIG, "ep_info": {}}).encode())
    proc.stdin.close()
    try:
        # it is consuming once its first heartbeat reached our service
        eh.wait_for(lambda: (proc.poll() is None and client.get_endpoint_status(eid)["status"] == "online")
                    or (proc.poll() is not None and pytest.fail(f"upstream worker exited {proc.returncode}:\n"
                                                                 f"{(user_dir / 'uep.log').read_text()}")),
                    120, "the upstream worker's first heartbeat")
        yield eid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        eh.kill_session(proc.pid)
        log.close()


def test_upstream_worker_runs_volley_tasks(upstream_endpoint: str) -> None:
    with Executor(endpoint_id=upstream_endpoint) as ex:
        ok = ex.submit(fns.double, 21)
        bad = ex.submit(fns.fail, "raised on the upstream worker")
        assert ok.result(timeout=60) == 42
        with pytest.raises(TaskExecutionFailed) as info:
            bad.result(timeout=60)
    assert "RuntimeError: raised on the upstream worker" in str(info.value)


def test_upstream_worker_honours_result_serializers(upstream_endpoint: str) -> None:
    with Executor(endpoint_id=upstream_endpoint, result_serializers=[JSONData()]) as ex:
        assert ex.submit(fns.as_dict, 3).result(timeout=60) == {"n": 3, "squares": [0, 1, 4]}


def test_upstream_heartbeats_reach_the_service(upstream_endpoint: str) -> None:
    details = Client().get_endpoint_status(upstream_endpoint)["details"]
    assert details["heartbeat_period"] == 5
    assert details["engine_type"] == "ThreadPoolEngine"
