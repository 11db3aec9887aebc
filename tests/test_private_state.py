"""Private state under ``$VOLLEY_HOME`` (issue 12, finding 3): directories 0700, files 0600,
created with that mode whatever the umask.

The stack test brings up a local stack of its own (its own private RabbitMQ node, service and
default endpoint) in a new home with the umask at 0, the worst case: anything created with
open()'s default 0666 or mkdir()'s 0777 shows up as world-readable, and anything written first
and chmod-ed after is caught by the syscall trace of the helper test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from volley.config import ClientConfig
from volley.endpoint.store import ResultStore
from volley.private_files import open_private_append, private_dir, private_file, write_private

# Files under a stack's home that are legitimately not 0600, with why.
EXCEPTIONS = {
    # Erlang writes its distribution cookie owner-read-only: narrower than 0600, still private
    ".erlang.cookie": 0o400,
}


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def not_private(root: Path) -> list[str]:
    """Every entry under ``root`` (and root itself) whose mode is not the private one."""
    bad = []
    for entry in [root, *sorted(root.rglob("*"))]:
        st = entry.lstat()
        m = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            ok = m == 0o700
        elif stat.S_ISREG(st.st_mode):
            ok = m == EXCEPTIONS.get(entry.name, 0o600)
        else:  # sockets, fifos, symlinks: none are expected
            ok = False
        if not ok:
            bad.append(f"{entry.relative_to(root.parent)}: {oct(m)} ({stat.filemode(st.st_mode)})")
    return bad


# --- the helper -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0, 0o022, 0o277])
def test_write_private_is_0600_under_any_umask(tmp_path: Path, mask: int) -> None:
    target = tmp_path / "secret.json"
    with umask(mask):
        write_private(target, '{"k": 1}')
        write_private(target, b"second")  # replacing keeps the mode
    assert mode(target) == 0o600 and target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["secret.json"]  # no temporary file left


def test_write_private_replaces_a_wider_file_and_never_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "broker.json"
    target.write_text("old")
    target.chmod(0o644)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    with umask(0):
        write_private(target, "new")
    assert mode(target) == 0o600 and target.read_text() == "new"
    link = tmp_path / "link.json"
    link.symlink_to(elsewhere)
    with umask(0):
        write_private(link, "replaced")
    assert not link.is_symlink() and mode(link) == 0o600 and elsewhere.read_text() == "untouched"


def test_private_dir_creates_and_tightens(tmp_path: Path) -> None:
    with umask(0):
        private_dir(tmp_path / "a" / "b" / "c")
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    old.chmod(0o755)
    private_dir(old)
    assert mode(old) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: never ours to change
    private_dir(shared)
    assert mode(shared) == 0o1777
    (tmp_path / "a" / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "a" / "file")


def test_private_file_and_log_keep_content_and_narrow(tmp_path: Path) -> None:
    db = tmp_path / "service.db"
    with umask(0):
        private_file(db)
    assert mode(db) == 0o600 and db.read_bytes() == b""
    db.write_bytes(b"SQLite format 3\0")
    db.chmod(0o644)
    private_file(db)
    assert mode(db) == 0o600 and db.read_bytes() == b"SQLite format 3\0"
    log = tmp_path / "x.log"
    with umask(0):
        for line in (b"one\n", b"two\n"):
            fd = open_private_append(log)
            os.write(fd, line)
            os.close(fd)
    assert mode(log) == 0o600 and log.read_bytes() == b"one\ntwo\n"


_TRACED = """
import os, sys
from volley.private_files import open_private_append, private_dir, private_file, write_private
os.umask(0)
root = sys.argv[1]
private_dir(root + "/d/e")
write_private(root + "/d/e/secret", "s3cret")
write_private(root + "/d/e/secret", "again")
private_file(root + "/d/e/db")
os.close(open_private_append(root + "/d/e/log"))
"""


def test_nothing_is_ever_created_wider_than_private(tmp_path: Path) -> None:
    """The syscalls themselves, under umask 0: every mkdir and every open that creates a
    file already carries the private mode, and no chmod ever widens one.  (A write-then-
    chmod implementation ends with the same modes; only the trace tells them apart.)"""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    trace = tmp_path / "trace.txt"
    root = tmp_path / "root"
    run = subprocess.run(
        [strace, "-f", "-qq", "-o", str(trace), "-e", "trace=openat,open,creat,mkdir,mkdirat,chmod,fchmod,fchmodat",
         sys.executable, "-c", _TRACED, str(root)],
        capture_output=True, text=True, timeout=120,
    )
    if run.returncode != 0 and "ptrace" in run.stderr.lower():
        pytest.skip(f"strace cannot trace here: {run.stderr.strip()[:200]}")
    assert run.returncode == 0, run.stderr
    calls = [line for line in trace.read_text().splitlines() if str(root) in line or "fchmod(" in line]
    creates = [c for c in calls if "O_CREAT" in c or "mkdir" in c]
    assert len(creates) >= 7, calls  # d, d/e, two temporary files, db, log (and more retries)
    for call in calls:
        found = re.search(r"(?:O_CREAT[^)]*|mkdir(?:at)?\([^)]*|chmod(?:at)?\([^)]*), (0[0-7]+)\)", call)
        if found is None:
            assert "O_CREAT" not in call and "mkdir" not in call and "chmod" not in call, call
            continue
        assert int(found.group(1), 8) & 0o077 == 0, f"created or chmod-ed wider than private: {call}"


# --- the writers ------------------------------------------------------------------------------------
def test_client_config_and_result_store_are_private(tmp_path: Path) -> None:
    with umask(0):
        ClientConfig(service_url="http://x", token="t0ken").save(tmp_path / "home" / "config.json")
        store = ResultStore(tmp_path / "home" / "endpoints" / "e" / "unacked_results")
        store.put("6f1c6a5e-3c57-4a44-a2c5-3bde3e3e3e3e", b"result")
    assert not_private(tmp_path / "home") == []
    assert json.loads((tmp_path / "home" / "config.json").read_text())["token"] == "t0ken"


def test_endpoint_configure_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from volley.endpoint.cli import endpoint

    monkeypatch.setenv("VOLLEY_HOME", str(tmp_path / "home"))
    with umask(0):
        r = CliRunner().invoke(endpoint, ["configure", "mine"])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(endpoint, ["configure", "mine", "--force", "--max-workers", "3"])
        assert r.exit_code == 0, r.output
    assert not_private(tmp_path / "home") == []
    assert "max_workers: 3" in (tmp_path / "home" / "endpoints" / "mine" / "config.yaml").read_text()


def test_local_stack_home_is_private(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A whole stack, up under umask 0, after it ran a task: every directory 0700, every file
    0600 (EXCEPTIONS above), including the SQLite database, its -wal and -shm, the broker's
    data and the endpoint's state."""
    from volley.local.broker import missing_broker_message
    from volley.local.stack import LocalStack

    if missing_broker_message():
        pytest.skip(missing_broker_message())
    home = tmp_path_factory.mktemp("private-home") / "volley"  # a home the stack creates itself
    st = LocalStack(home)
    try:
        with umask(0):
            status = st.up()
        # the task runs from a fresh interpreter that knows only this stack (this test is about
        # file modes; in this process the SDK already serves the session's stack, and a future
        # of a second stack was seen not to resolve after test_executor.py ran: a known issue)
        script = ("import sys\nfrom volley import Executor\n"
                  f"with Executor(endpoint_id={status['endpoint_id']!r}) as ex:\n"
                  "    print(ex.submit(pow, 2, 10).result(timeout=120))\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOLLEY_")} | {"VOLLEY_HOME": str(home)}
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0 and proc.stdout.split() == ["1024"], proc.stderr[-3000:]
        for made in ("config.json", "service/service.json", "service/service.db-wal", "service/service.log",
                     "broker/broker.json", "broker/tls/server.key", "broker/mnesia", "broker/.erlang.cookie",
                     "endpoints/default/endpoint.json", "endpoints/default/unacked_results",
                     "endpoints/default/tasks_working_dir"):
            assert (home / made).exists(), made  # the walk below sees the whole stack
        assert not_private(home) == []
    finally:
        st.down()
