"""Transport selection: explicit argument, then $VOLLEY_TRANSPORT, then native; and the
automatic fallback to pika, with a warning, when the compiled module cannot be loaded."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from volley.transport import resolve


def test_explicit_choice_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLLEY_TRANSPORT", "python")
    assert resolve() == "python"
    assert resolve("native") == "native"
    monkeypatch.setenv("VOLLEY_TRANSPORT", "NATIVE ")
    assert resolve() == "native"


def test_unknown_transport_names_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLLEY_TRANSPORT", "zeromq")
    with pytest.raises(ValueError, match=r"unknown transport 'zeromq': expected one of native, python"):
        resolve()


def test_falls_back_to_pika_with_a_warning_when_core_is_missing() -> None:
    # a fresh interpreter in which importing volley._core fails, as without a compiled module
    script = textwrap.dedent(
        """
        import sys, warnings
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "volley._core":
                    raise ImportError("no compiled module in this test")
        sys.meta_path.insert(0, Block())
        from volley.transport import resolve
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(resolve("native"), resolve(None))
        print(len(caught), caught[0].category.__name__, "|", caught[0].message)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert first == "python python"
    count, rest = second.split(" ", 1)
    assert count == "1"  # warned once, not on every call
    assert rest.startswith("RuntimeWarning |")
    assert "no compiled module in this test" in rest and "make setup" in rest
