"""``volley tasks groups|status|get`` against the real local stack, with the SDK's configuration:
counts, throughput and failures as the service stores them, ``--json``, clear errors, and a
second tenant (another token) that sees none of the first one's task groups or tasks."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from volley import Executor
from volley.cli import main
from volley.errors import TaskExecutionFailed


def triple(x: int) -> int:
    return 3 * x


def refuse(x: int) -> int:
    raise KeyError(f"no such sample {x}")


@pytest.fixture(scope="module")
def group(stack: dict[str, Any]) -> dict[str, Any]:
    """A task group of the stack's user: three tasks done, one failed."""
    tg = str(uuid.uuid4())
    with Executor(endpoint_id=stack["endpoint_id"], task_group_id=tg) as ex:
        done = [ex.submit(triple, i) for i in range(3)]
        failed = ex.submit(refuse, 42)
        assert [f.result(timeout=60) for f in done] == [0, 3, 6]
        with pytest.raises(TaskExecutionFailed):
            failed.result(timeout=60)
    return {"id": tg, "done": [f.task_id for f in done], "failed": failed.task_id}


@pytest.fixture(scope="module")
def other_token(stack: dict[str, Any]) -> str:
    from sqlalchemy import create_engine

    from volley.service.auth import create_token
    from volley.service.db import init_db

    engine = create_engine(f"sqlite:///{Path(stack['state_dir']) / 'service' / 'service.db'}")
    try:
        with init_db(engine)() as s:
            return create_token(s, f"cli-other-{uuid.uuid4().hex[:8]}")[1]
    finally:
        engine.dispose()


def volley(*args: str, env: dict[str, str] | None = None, ok: bool = True) -> Any:
    result = CliRunner().invoke(main, ["tasks", *args], env=env, catch_exceptions=False)
    assert (result.exit_code == 0) == ok, result.output
    return result


def test_groups_lists_the_group_with_its_counts(group: dict[str, Any]) -> None:
    doc = json.loads(volley("groups", "--json", "--limit", "200").output)
    mine = {g["task_group_id"]: g for g in doc["task_groups"]}
    assert mine[group["id"]]["counts"] == {"waiting-for-ep": 0, "success": 3, "failed": 1, "cancelled": 0}
    assert mine[group["id"]]["total"] == 4

    text = volley("groups", "--limit", "200").output
    line = next(ln for ln in text.splitlines() if ln.startswith(group["id"]))
    assert line.split()[-4:] == ["0", "3", "1", "4"]
    assert text.splitlines()[0].split() == ["task", "group", "created", "waiting", "done", "failed", "total"]


def test_groups_limit_follows_pages_and_says_when_more_remain(group: dict[str, Any]) -> None:
    one = json.loads(volley("groups", "--json", "--limit", "1").output)
    assert len(one["task_groups"]) == 1
    everything = json.loads(volley("groups", "--json", "--limit", "1000").output)["task_groups"]
    assert everything[0] == one["task_groups"][0]
    assert ("next" in one) == (len(everything) > 1)
    assert "--limit" in volley("groups", "--limit", "0", ok=False).output


def test_status_shows_counts_throughput_and_the_failure_text(group: dict[str, Any]) -> None:
    text = volley("status", group["id"]).output
    assert f"task group  {group['id']}" in text
    assert "tasks       4: 0 waiting, 3 done, 1 failed" in text
    assert "tasks/s" in text and "completed   " in text
    assert group["failed"] in text and "RemoteExecutionError" in text
    assert "KeyError: 'no such sample 42'" in text

    s = json.loads(volley("status", group["id"], "--json").output)
    assert s["counts"] == {"waiting-for-ep": 0, "success": 3, "failed": 1, "cancelled": 0}
    assert sum(s["throughput"]["success"]) == 3 and sum(s["throughput"]["failed"]) == 1
    [failure] = s["failures"]
    assert failure["task_id"] == group["failed"] and "no such sample 42" in failure["exception"]
    assert "--failures N shows them" in volley("status", group["id"], "--failures", "0").output


def test_get_shows_a_result_or_the_error(group: dict[str, Any]) -> None:
    text = volley("get", group["done"][2]).output
    assert "status      success" in text and "result      6" in text and group["id"] in text
    text = volley("get", group["failed"]).output
    assert "status      failed" in text and "KeyError: 'no such sample 42'" in text
    doc = json.loads(volley("get", group["failed"], "--json").output)
    assert doc["task_id"] == group["failed"] and doc["status"] == "failed" and "exception" in doc


def test_another_tenant_sees_none_of_it(group: dict[str, Any], other_token: str) -> None:
    env = {"VOLLEY_TOKEN": other_token}
    doc = json.loads(volley("groups", "--json", env=env).output)
    assert group["id"] not in json.dumps(doc)
    out = volley("status", group["id"], env=env, ok=False).output
    assert f"task group {group['id']} not found" in out and "404 NOT_FOUND" in out
    out = volley("get", group["done"][0], env=env, ok=False).output
    assert f"task {group['done'][0]} not found" in out


def test_bad_input_and_configuration_are_named(stack: dict[str, Any], tmp_path: Path) -> None:
    assert "not found" in volley("status", str(uuid.uuid4()), ok=False).output
    assert "not found" in volley("get", "not-a-uuid", ok=False).output
    out = volley("groups", env={"VOLLEY_TOKEN": "vly_wrong"}, ok=False).output
    assert "unknown or revoked token" in out and "401 UNAUTHORIZED" in out
    out = volley("groups", env={"VOLLEY_HOME": str(tmp_path)}, ok=False).output
    assert "no Volley service configured" in out and "volley local up" in out
    out = volley("groups", env={"VOLLEY_HOME": str(tmp_path), "VOLLEY_SERVICE_URL": stack["service_url"]},
                 ok=False).output
    assert "no token" in out and "VOLLEY_TOKEN" in out
