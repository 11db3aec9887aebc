"""What `pip install volley` brings and what it leaves to extras: the SDK imports nothing of the
service or the endpoint, the extras in pyproject.toml agree with volley/extras.py, and a command
whose extra is missing says which one to install.  (tests/test_wheel_install.py installs the
real wheel without extras.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import click
import pytest

from volley.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]

# Never loaded by the SDK; the first six are what the issue names.
HEAVY = ("fastapi", "sqlalchemy", "parsl", "yaml", "volley.service", "volley.endpoint",
         "volley.local", "uvicorn", "alembic", "pydantic", "starlette", "cryptography", "click")

SDK_USE = """
import json, pkgutil, sys, importlib
import volley
from volley import Client, Executor, MPIFunction, ShellFunction, ShellResult, progress
from volley.errors import TaskExecutionFailed
from volley.serialize import ComputeSerializer
from volley.transport import open_consumer, open_publisher
import volley.protocol.messages, volley.protocol.topology, volley.config, volley.version
for pkg in ("volley.sdk", "volley.serialize", "volley.transport", "volley.protocol", "volley.errors"):
    for m in pkgutil.iter_modules(importlib.import_module(pkg).__path__):
        importlib.import_module(f"{pkg}.{m.name}")
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_sdk_never_imports_the_service_or_the_endpoint() -> None:
    loaded = _modules_after(SDK_USE)
    assert "volley.sdk.executor" in loaded and "volley._core" in loaded  # it did import the SDK
    assert not [m for m in loaded if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]


def test_import_volley_is_light() -> None:
    loaded = _modules_after("import json, sys, volley; print(json.dumps(sorted(sys.modules)))")
    assert not {"tqdm", "requests", "dill", "volley.sdk.executor", "volley._core"} & loaded


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~;\s]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_all_is_every_runtime_extra() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    assert sorted(extras["all"]) == sorted(extras["service"] + extras["postgres"] + extras["endpoint"])


def test_base_dependencies_leave_the_service_and_endpoint_out() -> None:
    base = _names(_pyproject()["project"]["dependencies"])
    assert base == {"dill", "requests", "certifi", "pika", "tblib", "exceptiongroup", "packaging",
                    "tqdm", "click"}


def test_extras_module_lists_match_pyproject() -> None:
    """Each module volley/extras.py checks for is installed by a distribution of that extra."""
    extras = _pyproject()["project"]["optional-dependencies"]
    dists = packages_distributions()
    for extra, modules in EXTRAS.items():
        listed = _names(extras[extra])
        for module in modules:
            provided_by = {d.lower().replace("_", "-") for d in dists.get(module, [])}
            assert provided_by & listed, f"{module} (checked for {extra!r}) comes from {provided_by}, not in {listed}"


# --- a missing extra named by the CLI ----------------------------------------------------------
def _cli(blocked: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `volley ARGS` in an interpreter where ``blocked`` modules cannot be found, as if
    their extra were not installed."""
    code = (f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"
            f"sys.argv = ['volley', *{list(args)!r}]\n"
            "from volley.cli import main; main()")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("blocked", "args", "install"), [
    (["sqlalchemy"], ["token", "list"], "pip install 'volley[service]'"),
    (["yaml"], ["endpoint", "list"], "pip install 'volley[endpoint]'"),
    (["parsl"], ["endpoint", "start", "default"], "pip install 'volley[endpoint]'"),
    (["sqlalchemy", "yaml"], ["local", "up"], "pip install 'volley[service,endpoint]'"),
    (["cryptography"], ["demo"], "pip install 'volley[service]'"),
])
def test_a_command_names_its_missing_extra(blocked: list[str], args: list[str], install: str) -> None:
    out = _cli(blocked, *args)
    assert out.returncode == 1, out.stdout + out.stderr
    assert install in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert f"missing: {', '.join(blocked)}" in out.stderr


def test_help_works_without_extras_and_says_what_is_missing() -> None:
    out = _cli(["fastapi", "yaml"], "--help")
    assert out.returncode == 0, out.stderr
    assert re.search(r"endpoint\s+\(not installed: pip install 'volley\[endpoint\]'\)", out.stdout)


def test_a_module_of_an_extra_imported_by_a_command_is_explained() -> None:
    """The fallback for a command that imports an extra's module before any check does."""
    from click.testing import CliRunner

    from volley.cli import _Group

    @click.group(cls=_Group)
    def cli() -> None: ...

    @cli.command()
    def needs_parsl() -> None:
        raise ModuleNotFoundError("No module named 'parsl.providers'", name="parsl.providers")

    @cli.command()
    def needs_other() -> None:
        raise ModuleNotFoundError("No module named 'nothing_of_ours'", name="nothing_of_ours")

    out = CliRunner().invoke(cli, ["needs-parsl"])
    assert out.exit_code == 1 and "this command needs Volley's 'endpoint' extra" in out.output
    assert "pip install 'volley[endpoint]'" in out.output
    other = CliRunner().invoke(cli, ["needs-other"])
    assert isinstance(other.exception, ModuleNotFoundError)  # not ours to explain
