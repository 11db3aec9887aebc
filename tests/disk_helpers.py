"""A real full disk for the tests that need one: a 64 KiB tmpfs mounted over a directory (root
only; a test skips, saying why, where it cannot mount), and a filler that takes what is left."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tiny_tmpfs(directory: Path) -> Iterator[Path]:
    """``directory`` (made if missing, 0700) as a 64 KiB tmpfs until the block ends."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    directory.mkdir(mode=0o700, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path, name: str = "filler") -> None:
    """Write the file ``name`` until the filesystem refuses more, then check that it refuses a
    small write too."""
    with open(directory / name, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    with pytest.raises(OSError) as full:
        (directory / "probe").write_bytes(b"x" * 1024)
    assert full.value.errno == errno.ENOSPC
