"""``<endpoint dir>/unacked_results/``: results the broker has not confirmed yet.

A result that cannot be published (broker down, channel lost, nack) is written here before its
task's delivery is acknowledged, and re-sent until confirmed; then the file is removed.  The
service ingests results idempotently by task id, so a re-send after an unnoticed success is
harmless.  Files are written to a temporary name, fsynced and renamed, so a crash never leaves
half a result; they hold user data, so they are 0600 in a 0700 directory.  Which task ids are
stored is also kept in memory: the agent asks for every task it receives, and a ``stat`` per
task showed in its profile.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from volley.private_files import PRIVATE_FILE_MODE, TMP_SUFFIX, private_dir, write_private


class ResultStore:
    def __init__(self, directory: Path) -> None:
        self.dir = private_dir(directory)  # results are user data: 0700, files 0600
        for stale in self.dir.glob(f"*{TMP_SUFFIX}"):  # a crash between write and rename
            stale.unlink(missing_ok=True)
        self._ids: set[str] = set()
        for p in self.dir.iterdir():
            if not p.name.endswith(TMP_SUFFIX):
                p.chmod(PRIVATE_FILE_MODE)  # stored by an older Volley, perhaps 0644
                self._ids.add(p.name)

    def _path(self, task_id: str) -> Path:
        return self.dir / str(uuid.UUID(task_id))  # a task id never escapes the directory

    def put(self, task_id: str, body: bytes) -> None:
        path = self._path(task_id)
        write_private(path, body)  # a temporary file, fsynced, renamed; 0600 from the start
        self._ids.add(path.name)

    def has(self, task_id: str) -> bool:
        """``task_id`` in canonical form, as decoded messages carry it."""
        return task_id in self._ids

    def get(self, task_id: str) -> bytes | None:
        path = self._path(task_id)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            self._ids.discard(path.name)  # removed behind our back
            return None

    def delete(self, task_id: str) -> None:
        path = self._path(task_id)
        path.unlink(missing_ok=True)
        self._ids.discard(path.name)

    def task_ids(self) -> list[str]:
        return sorted(self._ids)

    def __len__(self) -> int:
        return len(self._ids)
