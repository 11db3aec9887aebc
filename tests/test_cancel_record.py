"""The endpoint's record of cancelled tasks (``volley.endpoint.cancels``) on a real directory:
what a later run of the agent reads back, what it forgets and when, and what a torn write or a
full disk leaves behind."""

from __future__ import annotations

import errno
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from disk_helpers import tiny_tmpfs
from volley.endpoint import cancels
from volley.endpoint.cancels import CancelRecord


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def test_a_later_run_knows_the_cancels_and_forgets_them_when_dropped_or_old(tmp_path: Path) -> None:
    clock = Clock()
    start = clock.now
    rec = CancelRecord(tmp_path / "c", clock=clock)
    dropped, waiting = str(uuid.uuid4()), str(uuid.uuid4())
    rec.add([dropped, waiting])
    rec.dropped(dropped)
    clock.now = start + 3600
    again = CancelRecord(tmp_path / "c", clock=clock)
    assert dropped in again and waiting in again  # a redelivery of the dropped one is dropped too
    clock.now = start + cancels.SEEN_KEEP_S + 1
    again = CancelRecord(tmp_path / "c", clock=clock)
    assert dropped not in again and waiting in again
    clock.now = start + cancels.KEEP_S + 1
    assert len(CancelRecord(tmp_path / "c", clock=clock)) == 0
    assert (tmp_path / "c" / "ids").read_text() == ""  # rewritten with the live ids only


def test_a_torn_last_line_is_cut_and_what_follows_reads_back(tmp_path: Path) -> None:
    first, second = ids(2)
    rec = CancelRecord(tmp_path / "c")
    rec.add([first])
    with open(tmp_path / "c" / "ids", "a") as f:
        f.write(f"C {second[:20]}")  # the agent died mid-write
    rec = CancelRecord(tmp_path / "c")
    assert first in rec and second not in rec
    rec.add([second])
    assert first in CancelRecord(tmp_path / "c") and second in CancelRecord(tmp_path / "c")


def test_the_oldest_are_forgotten_past_the_bound_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(cancels, "MAX_IDS", 3)
    rec = CancelRecord(tmp_path / "c")
    some = ids(5)
    rec.add(some)
    assert [t in rec for t in some] == [False, False, True, True, True]
    assert "forgot the 2 oldest cancels" in caplog.text


@pytest.fixture()
def full_disk(tmp_path: Path) -> Iterator[Path]:
    with tiny_tmpfs(tmp_path / "c") as d:
        yield d


def test_a_full_disk_raises_keeps_the_ids_in_memory_and_leaves_no_half_line(full_disk: Path) -> None:
    rec = CancelRecord(full_disk)
    kept = ids(1)
    rec.add(kept)
    with open(full_disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    refused = ids(400)  # more than the little space left between the filler's blocks
    with pytest.raises(OSError) as err:
        rec.add(refused)
    assert err.value.errno == errno.ENOSPC
    assert all(t in rec for t in refused)  # the cancels apply all the same
    assert (full_disk / "ids").read_text().endswith("\n")
    (full_disk / "filler").unlink()
    rec.add(refused)  # retried once there is room
    back = CancelRecord(full_disk)
    assert all(t in back for t in kept + refused)
