"""Log files that do not grow without bound.

A detached daemon (:mod:`volley.supervise`: the local stack's service, ``volley endpoint start
--detach``) is told its log file in ``$VOLLEY_LOG_FILE``; :func:`configure_logging` then logs
there through a rotating handler: once the file would pass ``$VOLLEY_LOG_MAX_BYTES`` (10 MiB by
default) it is renamed ``<log>.1`` (``.1`` becomes ``.2`` and so on, up to
``$VOLLEY_LOG_BACKUPS``, 5 by default; the oldest is deleted) and a new file begins.  Output that
bypasses logging (a traceback the interpreter prints, a library's or a task's ``print``) goes to
stdout and stderr, which the supervisor pointed at the same file: after each rotation they are
pointed at the new one, so nothing keeps writing to a renamed file.  Every file is 0600, like
everything else under ``$VOLLEY_HOME``.

Run in the foreground (no ``$VOLLEY_LOG_FILE``), a program logs to stderr as before.

Only the standard library and :mod:`volley.private_files` are imported here: the supervisor and
the endpoint's CLI use this module without importing the service.
"""

from __future__ import annotations

import logging
import os
import sys
from io import TextIOWrapper
from logging.handlers import RotatingFileHandler
from pathlib import Path

from volley.private_files import open_private_append

LOG_FILE_ENV = "VOLLEY_LOG_FILE"
MAX_BYTES_ENV = "VOLLEY_LOG_MAX_BYTES"
BACKUPS_ENV = "VOLLEY_LOG_BACKUPS"
DEFAULT_MAX_BYTES = 10 * 2**20
DEFAULT_BACKUPS = 5
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _env_int(name: str, default: int, least: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not a whole number; set it to e.g. {default}") from None
    if value < least:
        raise ValueError(f"${name} must be at least {least}, got {value}")
    return value


def rotation_limits() -> tuple[int, int]:
    """``(max_bytes, backups)`` from the environment; a bad value raises ``ValueError`` naming
    the variable."""
    return _env_int(MAX_BYTES_ENV, DEFAULT_MAX_BYTES, 1024), _env_int(BACKUPS_ENV, DEFAULT_BACKUPS, 1)


class RotatingLog(RotatingFileHandler):
    """A rotating handler whose files are 0600 and which, with ``follow_std``, points stdout and
    stderr at the new file after each rotation."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int, backups: int,
                 follow_std: bool = False) -> None:
        self.follow_std = follow_std
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")

    def _open(self) -> TextIOWrapper:
        # created 0600 from the start, never wider, whatever the umask
        return open(open_private_append(self.baseFilename), "a", encoding=self.encoding,
                    errors=self.errors)

    def doRollover(self) -> None:
        super().doRollover()
        if self.follow_std and self.stream is not None:
            for std in (sys.stdout, sys.stderr):
                try:
                    std.flush()
                except (OSError, ValueError):  # closed or broken: nothing to keep
                    pass
            fd = self.stream.fileno()
            os.dup2(fd, 1)
            os.dup2(fd, 2)


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def configure_logging(level: int = logging.INFO) -> Path | None:
    """Set up the root logger: to the rotating ``$VOLLEY_LOG_FILE`` if set (the variable is
    then removed, so the program's children do not rotate the same file), else to stderr.
    Returns the log file, if any."""
    path = os.environ.pop(LOG_FILE_ENV, None)
    if not path:
        logging.basicConfig(level=level, format=LOG_FORMAT)
        return None
    max_bytes, backups = rotation_limits()
    # stdout/stderr follow the rotation only if they write to this very file
    follow = _same_file(1, path) and _same_file(2, path)
    handler = RotatingLog(path, max_bytes=max_bytes, backups=backups, follow_std=follow)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    return Path(path)
