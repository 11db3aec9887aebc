"""The hand-written stub ``python/volley/_core.pyi`` matches the compiled module."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_stubtest_passes() -> None:
    pytest.importorskip("volley._core")
    pytest.importorskip("mypy.stubtest")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "volley._core"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
