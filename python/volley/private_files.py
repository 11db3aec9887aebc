"""Private files and directories: what Volley keeps under ``$VOLLEY_HOME`` (keys, passwords,
tokens, function code, arguments, results) is readable by its owner only.

Every file is *created* with mode 0600 and every directory with 0700 — the mode is given to
``open(2)``/``mkdir(2)`` themselves, so there is no moment when the file exists with a wider
mode (writing first and ``chmod``-ing after leaves one).  The umask can only take bits away
from those modes, never add any, and an explicit ``fchmod``/``chmod`` afterwards makes the
result the same under any umask (0o277 would otherwise leave a file its owner cannot write).
Files are replaced atomically: written to a new temporary file in the same directory
(``O_CREAT | O_EXCL``, so never an existing file or a symlink), flushed, then renamed over
the target, so a reader sees the old content or the new, never half of it.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
TMP_SUFFIX = ".tmp"


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and any missing parents as 0700 directories; an existing ``path`` is
    made 0700 too (parents that already exist are left as they are), unless it is a shared
    directory — sticky (``/tmp``) or another user's — which is never changed."""
    p = Path(path)
    missing: list[Path] = []
    probe = p
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, PRIVATE_DIR_MODE)
        except FileExistsError:
            if d != p:
                continue  # made by someone else meanwhile: not ours to change
        else:
            os.chmod(d, PRIVATE_DIR_MODE)  # undo what the umask took away (never wider)
    st = p.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{p} exists and is not a directory")
    if st.st_uid == os.geteuid() and not st.st_mode & stat.S_ISVTX:
        os.chmod(p, PRIVATE_DIR_MODE)
    return p


def write_private(path: str | os.PathLike[str], data: bytes | str, *, fsync: bool = True) -> Path:
    """Atomically replace ``path`` with ``data`` (str is written as UTF-8), as a 0600 file.

    The parent directory must exist (make it with :func:`private_dir`).  With ``fsync`` the
    data is on disk before the rename, so a crash leaves the old file or the new one."""
    p = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = p.with_name(f"{p.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    try:
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def private_file(path: str | os.PathLike[str]) -> Path:
    """Make sure ``path`` exists as a 0600 file: create it empty (0600 from the start) if it
    is missing, else narrow its mode to 0600 and leave its content alone.  For files that
    another program fills in, such as an SQLite database."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return p


def open_private_append(path: str | os.PathLike[str]) -> int:
    """A file descriptor appending to ``path`` (a log), created 0600 if missing and narrowed
    to 0600 if not.  The caller closes it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd
