"""``Executor(retry_on=(SomeError,), max_retries=N)``: opt-in resubmission of tasks whose function
raised one of the listed exception types.

Only the remote traceback text comes back (the exception is not rebuilt: the client may not be
able to import its type), so the type is read from the text's final exception line.  A name
that this process has already imported (builtins, the user's own modules) is resolved, so a
subclass of a listed type matches; any other name matches a listed type of exactly that name.
"""

from __future__ import annotations

import builtins
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

# the line naming the exception, at column 0 after the last frame: "ValueError: text",
# "pkg.mod.MyError: text", or a bare name
_EXC_LINE = re.compile(r"([A-Za-z_][\w.]*)(?::|$)")
_FRAME = re.compile(r"^(?:Traceback \(most recent call last\):|  File )")


def raised_type_name(remote_data: str) -> str | None:
    """The (qualified) name of the exception a remote traceback text ends with, or None."""
    lines = remote_data.splitlines()
    start = 0
    for i, line in enumerate(lines):
        if _FRAME.match(line):
            start = i + 1
    for line in lines[start:]:
        if line[:1].strip():  # column 0: not frame source (indented), not blank
            m = _EXC_LINE.match(line)
            if m:
                return m.group(1)
    return None


def _resolve(name: str) -> type | None:
    """The class ``name`` denotes in this process, if its module is imported already (nothing
    is imported here: a name from the remote side must not run code)."""
    if "." not in name:
        found = getattr(builtins, name, None)
        return found if isinstance(found, type) else None
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        obj: Any = sys.modules.get(".".join(parts[:cut]))
        if obj is None:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        return obj if isinstance(obj, type) else None
    return None


def _name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class RetryPolicy:
    """What an Executor retries: the exception types and how many times at most."""

    __slots__ = ("max_retries", "retry_on")

    def __init__(self, retry_on: Iterable[type[BaseException]], max_retries: int) -> None:
        types = tuple(retry_on)
        bad = [t for t in types if not (isinstance(t, type) and issubclass(t, BaseException))]
        if bad:
            raise TypeError(f"retry_on must list exception classes (like retry_on=(ValueError,)), got {bad[0]!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        self.retry_on = types
        self.max_retries = max_retries

    def matches(self, remote_data: str) -> bool:
        name = raised_type_name(remote_data)
        if name is None:
            return False
        cls = _resolve(name)
        if cls is not None and issubclass(cls, self.retry_on):
            return True
        return any(_name(t) == name for t in self.retry_on)


class Retrying:
    """One future's retry state: how to send its task again, and each failed attempt's error."""

    __slots__ = ("errors", "policy", "resubmit")

    def __init__(self, policy: RetryPolicy, resubmit: Callable[[], None]) -> None:
        self.policy = policy
        self.resubmit = resubmit
        self.errors: list[str] = []

    def failed(self, remote_data: str, user_error: bool) -> str | None:
        """The task failed with ``remote_data``: resubmit it and return None, or return the text
        to fail the future with (every attempt's error when there was more than one).
        ``user_error``: the function raised it (not the engine losing the task)."""
        self.errors.append(remote_data)
        if user_error and len(self.errors) <= self.policy.max_retries and self.policy.matches(remote_data):
            try:
                self.resubmit()
                return None
            except Exception as exc:  # never leave the future unresolved
                self.errors.append(f"not sent again: {type(exc).__name__}: {exc}")
        if len(self.errors) == 1:
            return remote_data
        names = ", ".join(_name(t) for t in self.policy.retry_on)
        return (f"The task failed {len(self.errors)} time(s) (retry_on=({names}), "
                f"max_retries={self.policy.max_retries}):\n{attempts_text(self.errors)}")


def attempts_text(errors: list[str]) -> str:
    """Every attempt's error, numbered, as one text (the SDK's and the endpoint's retries)."""
    return "\n\n".join(f"--- attempt {i + 1} ---\n{t}" for i, t in enumerate(errors))
