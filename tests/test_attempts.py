"""The endpoint's attempt log: a task running when the agent process dies counts one death at
the next start.  The deaths here are real: a child process opens the log, starts tasks and
SIGKILLs itself."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from concurrent.futures import Future
from pathlib import Path

import pytest

from volley.endpoint import attempts as attempts_mod
from volley.endpoint.attempts import AttemptLog
from volley.endpoint.engines.pools import ProcessPoolEngine
from volley.protocol.codec import decode, pack_task
from volley.serialize import ComputeSerializer

A, B, C = (str(uuid.uuid4()) for _ in range(3))

CHILD = """\
import os, signal, sys
from pathlib import Path
from volley.endpoint.attempts import AttemptLog
log = AttemptLog(Path(sys.argv[1]))
for word in sys.argv[2:]:
    verb, task_id = word.split(":")
    getattr(log, verb)(task_id)
if os.environ.get("CLEAN"):
    log.close()
else:
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_task_running_when_the_agent_is_killed_counts_one_death(tmp_path: Path) -> None:
    path = tmp_path / "attempts.log"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), f"started:{A}", f"started:{B}",
                              f"ended:{B}"])
    assert child.wait(timeout=60) == -9
    log = AttemptLog(path)
    causes = log.causes(A)
    assert len(causes) == 1
    assert f"the endpoint agent (pid {child.pid} " in causes[0]
    assert "stopped while this task ran" in causes[0]
    assert log.causes(B) == []  # it finished before the death
    assert log.causes(C) == []  # never started
    log.close()


def test_deaths_add_up_across_runs_and_an_end_settles_them(tmp_path: Path) -> None:
    path = tmp_path / "attempts.log"
    first = subprocess.Popen([sys.executable, "-c", CHILD, str(path), f"started:{A}"])
    assert first.wait(timeout=60) == -9
    second = subprocess.Popen([sys.executable, "-c", CHILD, str(path), f"started:{A}"])
    assert second.wait(timeout=60) == -9
    log = AttemptLog(path)
    causes = log.causes(A)
    assert [f"pid {first.pid} " in causes[0], f"pid {second.pid} " in causes[1]] == [True, True]
    log.ended(A)
    assert log.causes(A) == []
    log.close()
    assert AttemptLog(path).causes(A) == []  # the end was written down


def test_a_clean_stop_does_not_count(tmp_path: Path) -> None:
    path = tmp_path / "attempts.log"
    killed = subprocess.Popen([sys.executable, "-c", CHILD, str(path), f"started:{A}"])
    assert killed.wait(timeout=60) == -9
    clean = subprocess.Popen([sys.executable, "-c", CHILD, str(path), f"started:{A}", f"started:{B}"],
                             env={**os.environ, "CLEAN": "1"})
    assert clean.wait(timeout=60) == 0
    log = AttemptLog(path)
    assert len(log.causes(A)) == 1  # the earlier death is kept; the clean stop adds none
    assert log.causes(B) == []
    log.close()


def test_a_torn_or_foreign_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "attempts.log"
    killed = subprocess.Popen([sys.executable, "-c", CHILD, str(path), f"started:{A}"])
    assert killed.wait(timeout=60) == -9
    with open(path, "a") as f:
        f.write("garbage\nS\tnot-a-uuid\t1.0\nE\t\nS\t" + B[:10])  # the last one torn mid-write
    log = AttemptLog(path)
    assert len(log.causes(A)) == 1
    assert log.causes(B) == []
    log.close()


def test_causes_with_newlines_and_tabs_survive_the_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "attempts.log"
    cause = "line one\nline\ttwo \\ end"
    path.write_text(f"D\t{A}\t{json.dumps(cause)}\n")
    log = AttemptLog(path)
    log.close()
    assert AttemptLog(path).causes(A) == ["line one\nline\ttwo \\ end"]


def test_the_log_is_rewritten_when_it_grows_and_keeps_what_is_open(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attempts_mod, "ROTATE_BYTES", 4096)
    path = tmp_path / "attempts.log"
    path.write_text(f"D\t{A}\t{json.dumps('an earlier death')}\n")
    log = AttemptLog(path)
    log.started(B)  # still running across the rewrites
    for _ in range(500):
        t = str(uuid.uuid4())
        log.started(t)
        log.ended(t)
    assert path.stat().st_size < 4096 + 200
    text = path.read_text()
    assert f"S\t{B}\t" in text and f"D\t{A}\t\"an earlier death\"" in text
    # the agent dies now (no clean stop): B counts, A keeps its earlier death
    os.close(log._fd)
    again = AttemptLog(path)
    assert again.causes(A) == ["an earlier death"]
    assert len(again.causes(B)) == 1
    again.close()


def test_the_log_is_private(tmp_path: Path) -> None:
    path = tmp_path / "attempts.log"
    AttemptLog(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


SER = ComputeSerializer()


def _body(task_id: str) -> bytes:
    return pack_task(task_id, SER.pack_buffers([SER.serialize(abs)])
                     + SER.pack_buffers([SER.serialize((-3,)), SER.serialize({})]))


def test_process_pool_reports_a_start_before_the_worker_runs_the_task(tmp_path: Path) -> None:
    engine = ProcessPoolEngine(max_workers=1, endpoint_dir=str(tmp_path))
    seen: list[str] = []
    engine.on_start = seen.append
    engine.start()
    try:
        futures: list[Future] = [engine.submit(t, _body(t), None, None) for t in (A, B)]
        for f in futures:
            m = decode(f.result(timeout=60))
            assert not m.is_error and SER.deserialize(m.data) == 3
    finally:
        engine.shutdown()
    assert seen == [A, B]


def test_an_engine_answers_a_task_lost_too_often_without_running_it(tmp_path: Path) -> None:
    engine = ProcessPoolEngine(max_workers=1, endpoint_dir=str(tmp_path), max_retries_on_system_failure=1)
    seen: list[str] = []
    engine.on_start = seen.append
    engine.start()
    try:
        # the limit is 1, but after deaths of the agent it is at least AGENT_DEATH_RETRIES (2)
        ran = engine.submit(B, _body(B), None, None, failures=["death one", "death two"])
        assert not decode(ran.result(timeout=60)).is_error
        out = engine.submit(A, _body(A), None, None, failures=["death one", "death two", "death three"])
        result = decode(out.result(timeout=60))
    finally:
        engine.shutdown()
    assert seen == [B]  # A never ran
    assert result.is_error
    text = str(result.data)
    assert ("lost this task 3 time(s) (max_retries_on_system_failure=1; a task the endpoint agent died "
            "under runs again at least 2 times)") in text
    assert "--- attempt 1 ---\ndeath one" in text and "--- attempt 3 ---\ndeath three" in text
