"""ShellFunction / ShellResult: formats, validation, and running real bash commands."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import select
import typing as t
import uuid

import dill
import pytest

import volley
import volley.sdk.shell_function as shell_function
from volley.sdk.shell_function import ShellFunction, ShellResult

SANDBOX_WARNING = (
    "WARNING: Task sandboxing will not work due to endpoint misconfiguration. "
    "Please enable sandboxing on the remote endpoint. "
)


@pytest.fixture(autouse=True)
def clean_task_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without the endpoint's task variables (set them per test)."""
    for name in ("GC_TASK_SANDBOX_DIR", "GC_TASK_UUID", "PARSL_MPI_PREFIX"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def in_tmp(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def sandbox(in_tmp: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A per-task sandbox, as an endpoint with run_in_sandbox exports it (not yet created)."""
    path = in_tmp / str(uuid.uuid4())
    monkeypatch.setenv("GC_TASK_SANDBOX_DIR", str(path))
    return path


# --- ShellResult formats --------------------------------------------------------------------


def _expected_tail(text: str) -> str:
    return "\n".join(text.lstrip("\n").rstrip()[-1024:].splitlines()[-10:])


@pytest.mark.parametrize("rc", [0, 1, 255])
@pytest.mark.parametrize("exc_name", [None, "subprocess.CalledProcessError"])
@pytest.mark.parametrize("length", [1024, 1025])
def test_result_str_shape(rc: int, exc_name: str | None, length: int) -> None:
    out = (" out\n" * 300)[:length]
    err = out.replace("out", "err")
    s = str(ShellResult("cmd", out, err, rc, exc_name))

    assert s.startswith(f"exit code: {rc}\n   stdout:\n")
    assert _expected_tail(out) in s
    assert "truncated; see .stdout" in s  # 300 lines never fit in 10
    if rc == 0:
        assert "stderr:" not in s
        assert "exception:" not in s
    else:
        assert "\n\n   stderr:\n" in s
        assert _expected_tail(err) in s
        assert "truncated; see .stderr" in s
        assert ("\n\nexception: " in s) == bool(exc_name)


def test_result_str_exact_short() -> None:
    res = ShellResult("false", "\n\nhello\n", "oops\n", 1, "subprocess.CalledProcessError")
    assert str(res) == (
        "exit code: 1\n   stdout:\nhello\n\n   stderr:\noops\n\n"
        "exception: subprocess.CalledProcessError"
    )


def test_result_str_truncation_marker() -> None:
    out = "".join(f"line {i}\n" for i in range(12))
    s = str(ShellResult("c", out, "", 0))
    assert s == (
        "exit code: 0\n   stdout:\n[... truncated; see .stdout for full output ...]\n"
        + "\n".join(f"line {i}" for i in range(2, 12))
    )


@pytest.mark.parametrize("exc_name", [None, "subprocess.TimeoutExpired"])
def test_result_repr(exc_name: str | None) -> None:
    cmd = "a command longer than eighty characters " + "x" * 60
    res = ShellResult(cmd, stdout="so", stderr="se", returncode=43, exception_name=exc_name)
    middle = "" if exc_name is None else f"exception_name={exc_name!r}, "
    assert repr(res) == (
        f"ShellResult(returncode=43, cmd={cmd!r}, {middle}stdout='so', stderr='se')"
    )


# --- ShellFunction formats ------------------------------------------------------------------


@pytest.mark.parametrize("name", [None, "somename"])
@pytest.mark.parametrize("walltime", [None, 15.7])
@pytest.mark.parametrize("sout", [None, "/some / path"])
@pytest.mark.parametrize("serr", [None, "/other/path/"])
@pytest.mark.parametrize("lines", [None, 12345])
@pytest.mark.parametrize("cmd_len", [10, 1024, 1025])
def test_function_str_shape(
    name: str | None,
    walltime: float | None,
    sout: str | None,
    serr: str | None,
    lines: int | None,
    cmd_len: int,
) -> None:
    cmd = ("a script's line\n" * 100)[:cmd_len]
    kw: dict[str, object] = {"name": name, "walltime": walltime, "stdout": sout, "stderr": serr}
    if lines is not None:
        kw["snippet_lines"] = lines
    s = str(ShellFunction(cmd, **kw))  # type: ignore[arg-type]

    assert s.startswith(f"{name or 'ShellFunction'}\n")
    assert (f"\n wall time: {walltime}" in s) == (walltime is not None)
    assert (f"\n    stdout: {sout!r}" in s) == (sout is not None)
    assert (f"\n    stderr: {serr!r}" in s) == (serr is not None)
    assert f"\n     lines: {lines or 1000}\n" in s

    shown = "\n".join(cmd.strip()[:1024].splitlines()[:10])
    if "\n" not in shown:
        assert s.endswith(f"\n   command: {shown}")
    else:
        indent = "\n" + " " * len("   command: ")
        assert f"\n   command: -----{indent}{shown.replace(chr(10), indent)}" in s
        assert s.endswith(f"[... truncated; see .cmd for full script ...]{indent}-----")


def test_function_str_exact() -> None:
    sf = ShellFunction("echo one\necho two\n", walltime=3, stdout="o.txt", name="pair")
    assert str(sf) == (
        "pair\n"
        " wall time: 3\n"
        "    stdout: 'o.txt'\n"
        "     lines: 1000\n"
        "   command: -----\n"
        "            echo one\n"
        "            echo two\n"
        "            -----"
    )


@pytest.mark.parametrize("name", [None, "somename"])
@pytest.mark.parametrize("walltime", [None, 0.5, 15.7])
@pytest.mark.parametrize("sout", [None, "/some / path"])
@pytest.mark.parametrize("serr", [None, "/other/path/"])
@pytest.mark.parametrize("lines", [None, 918273])
def test_function_repr(
    name: str | None,
    walltime: float | None,
    sout: str | None,
    serr: str | None,
    lines: int | None,
) -> None:
    cmd = "some command -with --arguments"
    kw: dict[str, object] = {"name": name, "walltime": walltime, "stdout": sout, "stderr": serr}
    if lines is not None:
        kw["snippet_lines"] = lines
    parts = []
    if name is not None:
        parts.append(f"name={name!r}")
    if walltime is not None:
        parts.append(f"walltime={walltime!r}")
    if sout is not None:
        parts.append(f"stdout={sout!r}")
    if serr is not None:
        parts.append(f"stderr={serr!r}")
    parts += [f"snippet_lines={lines or 1000}", f"cmd={cmd!r}"]

    sf = ShellFunction(cmd, **kw)  # type: ignore[arg-type]
    assert repr(sf) == f"ShellFunction({', '.join(parts)})"


# --- naming and validation ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Hello", "World", "My_Shell_Function", "École"])
def test_name_becomes_instance_dunder_name(name: str) -> None:
    assert ShellFunction("pwd", name=name).__name__ == name


def test_default_name_and_class_untouched() -> None:
    a, b, plain = (
        ShellFunction("pwd", name="A"),
        ShellFunction("pwd", name="B"),
        ShellFunction("pwd"),
    )
    assert (a.__name__, b.__name__, plain.__name__) == ("A", "B", "ShellFunction")
    assert ShellFunction.__name__ == "ShellFunction"


@pytest.mark.parametrize("name", ["for", "with", "break", " abc", "2be", "a-b", "x y"])
def test_bad_name(name: str) -> None:
    with pytest.raises(ValueError, match="Function name must be valid python name"):
        ShellFunction("pwd", name=name)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"cmd": None}, TypeError, "cmd must be a str"),
        ({"cmd": b"pwd"}, TypeError, "cmd must be a str"),
        ({"cmd": "echo {"}, ValueError, "literal braces"),
        ({"cmd": "echo }"}, ValueError, "literal braces"),
        ({"walltime": -1}, AssertionError, "Negative walltime=-1 is not allowed"),
        ({"walltime": -0.5}, AssertionError, "Negative walltime"),
        ({"walltime": "5"}, TypeError, "walltime must be a number"),
        ({"walltime": True}, TypeError, "walltime must be a number"),
        ({"snippet_lines": -1}, ValueError, "snippet_lines must be >= 0"),
        ({"snippet_lines": 2.5}, TypeError, "snippet_lines must be an int"),
        ({"snippet_lines": None}, TypeError, "snippet_lines must be an int"),
        ({"snippet_lines": False}, TypeError, "snippet_lines must be an int"),
        ({"return_dict": "yes"}, TypeError, "return_dict must be a bool"),
        ({"name": 5}, TypeError, "name must be a str"),
        ({"stdout": 3}, TypeError, "stdout must be a file path"),
        ({"stderr": b"/tmp/x"}, TypeError, "stderr must be a file path"),
    ],
)
def test_bad_constructor_input(kwargs: dict[str, object], error: type, match: str) -> None:
    kwargs = {"cmd": "pwd", **kwargs}
    with pytest.raises(error, match=match):
        ShellFunction(**kwargs)  # type: ignore[arg-type]


def test_path_objects_are_stored_as_str() -> None:
    sf = ShellFunction("pwd", stdout=pathlib.Path("a/out.txt"), stderr=pathlib.Path("/e"))
    assert (sf.stdout, sf.stderr) == ("a/out.txt", "/e")


def test_instance_state_is_the_wire_format() -> None:
    sf = ShellFunction("echo {x}", walltime=2, name="wire", return_dict=True)
    assert vars(sf) == {
        "cmd": "echo {x}",
        "stdout": None,
        "stderr": None,
        "walltime": 2,
        "snippet_lines": 1000,
        "__name__": "wire",
        "return_dict": True,
    }
    assert ShellFunction.__module__ == "volley.sdk.shell_function"
    assert ShellResult.__module__ == "volley.sdk.shell_function"
    assert volley.ShellFunction is ShellFunction and volley.ShellResult is ShellResult


@pytest.mark.parametrize("dumps, loads", [(pickle.dumps, pickle.loads), (dill.dumps, dill.loads)])
def test_pickle_round_trip(
    dumps: t.Callable[[object], bytes], loads: t.Callable[[bytes], t.Any]
) -> None:
    sf = ShellFunction("echo {x}", walltime=2.5, stderr="e.txt", name="pf")
    back = loads(dumps(sf))
    assert type(back) is ShellFunction and vars(back) == vars(sf)
    res = ShellResult("c", "o", "e", 3, "subprocess.CalledProcessError")
    back_res = loads(dumps(res))
    assert type(back_res) is ShellResult and vars(back_res) == vars(res)


# --- calling: argument handling -------------------------------------------------------------


def test_positional_arguments_refused(sandbox: pathlib.Path) -> None:
    with pytest.raises(TypeError, match="keyword arguments only"):
        ShellFunction("echo {x}")("hello")
    assert not sandbox.exists(), "nothing may run when the call is refused"


def test_missing_placeholder_value(sandbox: pathlib.Path) -> None:
    with pytest.raises(KeyError, match=r"placeholder \{target\}"):
        ShellFunction("echo {target}")(other=1)
    assert not sandbox.exists()


def test_shell_braces_need_doubling(sandbox: pathlib.Path) -> None:
    with pytest.raises(KeyError, match="literal braces"):
        ShellFunction("echo a b | awk '{print $2}'")()
    res = ShellFunction("echo a b | awk '{{print $2}}'")()
    assert isinstance(res, ShellResult)
    assert res.stdout == "b\n"


def test_positional_placeholder(sandbox: pathlib.Path) -> None:
    with pytest.raises(IndexError, match="positional placeholder"):
        ShellFunction("echo {}")()


def test_other_format_errors_pass_through(sandbox: pathlib.Path) -> None:
    # A key missing *inside* a given argument is the caller's own data problem: untouched.
    with pytest.raises(KeyError) as info:
        ShellFunction("echo {d[k]}")(d={})
    assert info.value.args == ("k",)


# --- calling: running bash ------------------------------------------------------------------


def test_runs_and_captures(sandbox: pathlib.Path) -> None:
    sf = ShellFunction("echo 'Hello'")
    res = sf()
    assert isinstance(res, ShellResult)
    assert res.stdout == "Hello\n"
    assert res.stderr == ""
    assert (res.returncode, res.exception_name) == (0, None)
    assert res.cmd == "echo 'Hello'"
    assert "exit code: 0" in str(res)


def test_uses_bash(sandbox: pathlib.Path) -> None:
    res = ShellFunction("echo $BASH_VERSION; [[ 1 == 1 ]] && echo bashism")()
    assert isinstance(res, ShellResult)
    assert res.stdout.splitlines()[0] != ""
    assert "bashism" in res.stdout


def test_kwargs_fill_the_template(sandbox: pathlib.Path) -> None:
    sf = ShellFunction("echo 'Hello {target}'; echo 'Bye {target}' 1>&2")
    for target in ("world_1", "world_2"):
        res = sf(target=target)
        assert isinstance(res, ShellResult)
        assert res.cmd == f"echo 'Hello {target}'; echo 'Bye {target}' 1>&2"
        assert res.stdout == f"Hello {target}\n"
        assert res.stderr == f"Bye {target}\n"


def test_repeated_runs_in_fresh_sandboxes_are_isolated(
    in_tmp: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sf = ShellFunction("echo 'Hello {target}'")
    for i in range(1, 3):
        monkeypatch.setenv("GC_TASK_SANDBOX_DIR", str(in_tmp / f"task{i}"))
        res = sf(target=f"world_{i}")
        assert isinstance(res, ShellResult)
        assert res.stdout == f"Hello world_{i}\n", "output of the previous run leaked in"


def test_failure_sets_called_process_error(sandbox: pathlib.Path) -> None:
    res = ShellFunction("echo 'hi'; cat /non_existent", walltime=30)()
    assert isinstance(res, ShellResult)
    assert res.returncode == 1
    assert res.exception_name == "subprocess.CalledProcessError"
    assert res.stdout == "hi\n"
    assert "No such file or directory" in res.stderr
    assert str(res).endswith("exception: subprocess.CalledProcessError")


def test_exit_code_passed_through(sandbox: pathlib.Path) -> None:
    res = ShellFunction("exit 42")()
    assert isinstance(res, ShellResult)
    assert (res.returncode, res.exception_name) == (42, "subprocess.CalledProcessError")


def test_user_capture_files(sandbox: pathlib.Path, tmp_path: pathlib.Path) -> None:
    err_file = tmp_path / "elsewhere" / "foo.err"
    res = ShellFunction("echo out; echo err >&2", stdout="sub/foo.out", stderr=str(err_file))()
    assert isinstance(res, ShellResult)
    assert (res.stdout, res.stderr) == ("out\n", "err\n")
    # relative paths land in the sandbox (parents created); absolute ones where they say
    assert (sandbox / "sub" / "foo.out").read_text() == "out\n"
    assert err_file.read_text() == "err\n"


def test_capture_files_are_appended_to(sandbox: pathlib.Path) -> None:
    sandbox.mkdir()
    (sandbox / "log.txt").write_text("earlier run\n")
    res = ShellFunction("echo now", stdout="log.txt")()
    assert isinstance(res, ShellResult)
    assert res.stdout == "earlier run\nnow\n"
    assert (sandbox / "log.txt").read_text() == "earlier run\nnow\n"


def test_snippet_lines_keeps_the_tail(sandbox: pathlib.Path) -> None:
    res = ShellFunction("seq 1 5; seq 6 9 >&2; exit 1", snippet_lines=2)()
    assert isinstance(res, ShellResult)
    assert (res.stdout, res.stderr) == ("4\n5\n", "8\n9\n")


def test_snippet_lines_zero_captures_nothing(sandbox: pathlib.Path) -> None:
    res = ShellFunction("echo something", snippet_lines=0, stdout="full.txt")()
    assert isinstance(res, ShellResult)
    assert res.stdout == ""
    assert (sandbox / "full.txt").read_text() == "something\n"  # the file still has it all


def test_undecodable_output_does_not_fail(sandbox: pathlib.Path) -> None:
    res = ShellFunction(r"printf 'ok \xff\xfe\n'")()
    assert isinstance(res, ShellResult)
    assert res.returncode == 0
    assert res.stdout.startswith("ok ")


def test_return_dict(sandbox: pathlib.Path) -> None:
    res = ShellFunction("echo '{message}'", return_dict=True)(message="hola")
    assert res == {
        "cmd": "echo 'hola'",
        "stdout": "hola\n",
        "stderr": "",
        "returncode": 0,
        "exception_name": None,
    }
    assert json.loads(json.dumps(res)) == res


# --- walltime -------------------------------------------------------------------------------


def test_walltime_returns_124(sandbox: pathlib.Path) -> None:
    res = ShellFunction("sleep 5; echo Fail", walltime=0.5)()
    assert isinstance(res, ShellResult)
    assert res.returncode == 124
    assert res.exception_name == "subprocess.TimeoutExpired"
    assert "Fail" not in res.stdout


def test_walltime_keeps_output_so_far(sandbox: pathlib.Path) -> None:
    res = ShellFunction("echo 'Hello'; sleep 5", walltime=0.5)()
    assert isinstance(res, ShellResult)
    assert res.returncode == 124
    assert res.stdout == "Hello\n"
    assert res.stderr == ""


def test_walltime_as_dict(sandbox: pathlib.Path) -> None:
    res = ShellFunction("sleep 5", walltime=0.5, return_dict=True)()
    assert isinstance(res, dict)
    assert (res["returncode"], res["exception_name"]) == (124, "subprocess.TimeoutExpired")


def _assert_exits(pid: int) -> None:
    """Wait (on the kernel's exit notification, not a sleep loop) for pid to be gone."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone and reaped
    try:
        readable, _, _ = select.select([fd], [], [], 10)
        assert readable, f"process {pid} outlived its timed-out task"
    finally:
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfd_open (Linux)")
def test_walltime_stops_background_children(sandbox: pathlib.Path) -> None:
    """Unlike upstream, nothing the command started keeps running after the walltime."""
    res = ShellFunction("sleep 30 & echo $! > child.pid; wait", walltime=1)()
    assert isinstance(res, ShellResult)
    assert res.returncode == 124
    _assert_exits(int((sandbox / "child.pid").read_text()))


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfd_open (Linux)")
def test_walltime_kills_children_ignoring_sigterm(
    sandbox: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shell_function, "_TERM_GRACE_S", 0.2)
    cmd = "bash -c 'trap \"\" TERM; sleep 30' & echo $! > child.pid; wait"
    res = ShellFunction(cmd, walltime=1)()
    assert isinstance(res, ShellResult)
    assert res.returncode == 124
    _assert_exits(int((sandbox / "child.pid").read_text()))


# --- working directory, sandbox and capture-file naming -------------------------------------


def test_runs_in_sandbox_and_creates_it(sandbox: pathlib.Path) -> None:
    worker_cwd = os.getcwd()
    res = ShellFunction("pwd")()
    assert isinstance(res, ShellResult)
    assert res.stdout.strip() == str(sandbox)
    assert sandbox.is_dir()
    assert SANDBOX_WARNING not in res.stderr
    # We pass cwd to the child instead of chdir-ing the worker (safe with threaded engines).
    assert os.getcwd() == worker_cwd


def test_existing_sandbox_is_used_as_is(
    in_tmp: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = str(uuid.uuid4())
    monkeypatch.setenv("GC_TASK_SANDBOX_DIR", str(in_tmp))
    monkeypatch.setenv("GC_TASK_UUID", task_id)
    res = ShellFunction("pwd")()
    assert isinstance(res, ShellResult)
    assert res.stdout.strip() == str(in_tmp)
    assert not (in_tmp / task_id).exists(), "no nested per-task dir may be invented"


def test_unusable_sandbox_raises(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    # A directory below a regular file cannot exist, even for root.
    monkeypatch.setenv("GC_TASK_SANDBOX_DIR", str(blocker / "sandbox"))
    with pytest.raises(OSError):
        ShellFunction("pwd")()


def test_warning_without_sandbox(in_tmp: pathlib.Path) -> None:
    res = ShellFunction("pwd; echo real error >&2; exit 2")()
    assert isinstance(res, ShellResult)
    assert res.stdout.strip() == str(in_tmp)
    assert res.stderr == SANDBOX_WARNING + "\nreal error\n"


def test_capture_files_named_after_task(
    in_tmp: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = str(uuid.uuid4())
    monkeypatch.setenv("GC_TASK_UUID", task_id)
    ShellFunction("echo hi")()
    # the middle part is random, so sort by the stream suffix
    names = sorted(os.listdir(in_tmp), key=lambda n: n.rsplit(".", 1)[-1])
    assert [n.split(".")[0] for n in names] == [task_id, task_id]
    assert [n.split(".")[2] for n in names] == ["stderr", "stdout"]
    assert all(len(n.split(".")) == 3 for n in names)
    stdout_file = next(n for n in names if n.endswith(".stdout"))
    assert (in_tmp / stdout_file).read_text() == "hi\n"


def test_capture_files_without_task_id(in_tmp: pathlib.Path) -> None:
    ShellFunction("echo hi")()
    names = os.listdir(in_tmp)
    assert sorted(n.rsplit(".", 1)[1] for n in names) == ["stderr", "stdout"]
    for name in names:
        parts = name.split(".")
        assert len(parts) == 3
        assert len(parts[0]) == 10


def test_capture_files_in_sandbox(sandbox: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GC_TASK_UUID", "task-123")
    ShellFunction("echo hi")()
    assert sorted(n.rsplit(".", 1)[1] for n in os.listdir(sandbox)) == ["stderr", "stdout"]
    assert all(n.startswith("task-123.") for n in os.listdir(sandbox))
