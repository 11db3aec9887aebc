"""MPIFunction: a ShellFunction launched through $PARSL_MPI_PREFIX."""

from __future__ import annotations

import pathlib
import pickle

import dill
import pytest

import volley
from volley.sdk.mpi_function import MPIFunction
from volley.sdk.shell_function import ShellFunction, ShellResult


@pytest.fixture(autouse=True)
def sandbox(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GC_TASK_UUID", raising=False)
    monkeypatch.delenv("PARSL_MPI_PREFIX", raising=False)
    monkeypatch.setenv("GC_TASK_SANDBOX_DIR", str(tmp_path / "task"))
    return tmp_path / "task"


def test_prefix_applied() -> None:
    res = MPIFunction("hostname")()
    assert isinstance(res, ShellResult)
    assert res.cmd == "$PARSL_MPI_PREFIX hostname"
    # Outside an MPI engine the prefix is empty and the command simply runs.
    assert res.returncode == 0
    assert res.stdout.strip() != ""


def test_prefix_is_expanded_by_bash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARSL_MPI_PREFIX", "echo launched:")
    res = MPIFunction("my_app --in {path}")(path="data.in")
    assert isinstance(res, ShellResult)
    assert res.cmd == "$PARSL_MPI_PREFIX my_app --in data.in"
    assert res.stdout == "launched: my_app --in data.in\n"


def test_prefix_only_once_for_multiline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARSL_MPI_PREFIX", "echo launched:")
    res = MPIFunction("true\necho second")()
    assert isinstance(res, ShellResult)
    assert res.cmd == "$PARSL_MPI_PREFIX true\necho second"
    assert res.stdout == "launched: true\nsecond\n"


def test_return_dict_and_walltime() -> None:
    res = MPIFunction("sleep 5", walltime=0.5, return_dict=True)()
    assert isinstance(res, dict)
    assert res["cmd"] == "$PARSL_MPI_PREFIX sleep 5"
    assert (res["returncode"], res["exception_name"]) == (124, "subprocess.TimeoutExpired")


def test_names() -> None:
    assert MPIFunction("hostname").__name__ == "MPIFunction"
    assert MPIFunction("hostname", name="lammps").__name__ == "lammps"
    assert MPIFunction.__name__ == "MPIFunction"
    assert repr(MPIFunction("x", snippet_lines=5)) == "MPIFunction(snippet_lines=5, cmd='x')"
    assert str(MPIFunction("x")).startswith("MPIFunction\n")


def test_same_validation_as_shell_function() -> None:
    assert issubclass(MPIFunction, ShellFunction)
    with pytest.raises(ValueError, match="valid python name"):
        MPIFunction("x", name="not valid")
    with pytest.raises(AssertionError, match="Negative walltime"):
        MPIFunction("x", walltime=-3)
    with pytest.raises(TypeError, match="keyword arguments only"):
        MPIFunction("x {y}")("positional")


def test_module_path_and_pickling() -> None:
    assert MPIFunction.__module__ == "volley.sdk.mpi_function"
    assert volley.MPIFunction is MPIFunction
    mf = MPIFunction("app {n}", snippet_lines=7, name="app")
    for dumps, loads in ((pickle.dumps, pickle.loads), (dill.dumps, dill.loads)):
        back = loads(dumps(mf))
        assert type(back) is MPIFunction
        assert vars(back) == vars(mf)
