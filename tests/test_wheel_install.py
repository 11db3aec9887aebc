"""The built wheel, installed with no extras into a fresh venv, runs the user guide's examples
against the local stack (started from the development venv, which has every extra).

The wheel is ``$VOLLEY_WHEEL`` when set, else built here with ``maturin build --release``, which
reuses the release build ``make setup`` made (seconds).  Installing it fetches the SDK's few
dependencies from the package index (cached by pip after the first run).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test_guide_examples import DIR, EXPECT
from volley.demo import EXAMPLES, Example, example_env, run_example
from volley.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.stack


def _index_unreachable() -> str | None:
    """Why pip cannot reach its package index, or None if it can be reached."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    url = urllib.parse.urlsplit(index)
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=10).close()
    except OSError as exc:
        return f"cannot reach the package index {url.hostname} to install the SDK's dependencies: {exc}"
    return None


def _build_wheel(out: Path) -> Path:
    maturin = shutil.which("maturin", path=str(Path(sys.executable).parent)) or shutil.which("maturin")
    if maturin is None or shutil.which("cargo") is None:
        pytest.skip("cannot build the wheel: maturin and cargo are needed (make setup installs maturin)")
    proc = subprocess.run([maturin, "build", "--release", "-i", sys.executable, "-o", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("volley-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("VOLLEY_WHEEL")
    return Path(given) if given else _build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def sdk_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and nothing else than its own dependencies; its python."""
    venv = tmp_path_factory.mktemp("sdk-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           str(wheel)], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        reason = _index_unreachable()
        if reason:
            pytest.skip(reason)
        raise AssertionError(f"pip install {wheel.name} failed:\n{proc.stdout}{proc.stderr}")
    return python


def _sdk_env(stack: dict[str, Any]) -> dict[str, str]:
    """The examples' environment, minus PYTHONPATH: the venv imports the installed wheel."""
    env = example_env(stack, "native")
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module", autouse=True)
def _extra_endpoints_stopped(stack: dict[str, Any]) -> Iterator[None]:
    """The MPI examples start an extra endpoint in the stack's home; stop it at the end."""
    yield
    from endpoint_helpers import stop_extra_endpoints

    stop_extra_endpoints(Path(stack["state_dir"]))


def test_wheel_is_abi3_and_brings_no_extra(wheel: Path, sdk_venv: Path, stack: dict[str, Any]) -> None:
    assert "-cp310-abi3-" in wheel.name
    heavy = [m for modules in EXTRAS.values() for m in modules]
    probe = textwrap.dedent(f"""
        import importlib.util, volley, volley._core
        print(volley._core.__file__)
        print([m for m in {heavy!r} if importlib.util.find_spec(m) is not None])
    """)
    out = subprocess.run([str(sdk_venv), "-c", probe], env=_sdk_env(stack), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    core, found = out.stdout.splitlines()
    assert core.startswith(str(sdk_venv.parents[1])) and core.endswith("_core.abi3.so")
    assert found == "[]", f"installed without extras, yet importable: {found}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.script.removesuffix(".py"))
def test_guide_example_from_the_wheel(sdk_venv: Path, stack: dict[str, Any], example: Example) -> None:
    outcome = run_example(example, DIR, _sdk_env(stack), timeout=180, python=str(sdk_venv))
    assert outcome.ok, f"{example.script}: {outcome.error}\n{outcome.output}"
    for text in EXPECT[example.script]:
        assert text in outcome.output, f"{example.script} did not print {text!r}:\n{outcome.output}"


def test_progress_from_the_wheel(sdk_venv: Path, stack: dict[str, Any]) -> None:
    script = textwrap.dedent("""
        import os, sys
        import volley

        def odd_only(x):
            if x % 2 == 0:
                raise ValueError(x)
            return x

        with volley.Executor(endpoint_id=os.environ["VOLLEY_ENDPOINT_ID"]) as ex:
            futs = volley.progress([ex.submit(odd_only, i) for i in range(6)], desc="wheel",
                                   file=sys.stdout)
        print("results", sorted(f.result() for f in futs if f.exception() is None))
    """)
    out = subprocess.run([str(sdk_venv), "-c", script], env=_sdk_env(stack), capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "results [1, 3, 5]" in out.stdout
    last_bar = [f for f in out.stdout.replace("\r", "\n").splitlines() if f.startswith("wheel:")][-1]
    assert "6/6" in last_bar and "failed=3" in last_bar, out.stdout


def test_cli_without_extras_names_them(sdk_venv: Path, stack: dict[str, Any]) -> None:
    volley_cmd = str(sdk_venv.parent / "volley")
    env = _sdk_env(stack)
    assert subprocess.run([volley_cmd, "--help"], env=env, capture_output=True, timeout=60).returncode == 0
    for args, install in ((["local", "status"], "pip install 'volley[service,endpoint]'"),
                          (["token", "list"], "pip install 'volley[service]'"),
                          (["endpoint", "list"], "pip install 'volley[endpoint]'")):
        out = subprocess.run([volley_cmd, *args], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and install in out.stderr, out.stdout + out.stderr
        assert "Traceback" not in out.stderr, out.stderr
