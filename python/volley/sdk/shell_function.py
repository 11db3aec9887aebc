"""ShellFunction: a callable that runs a bash command on the endpoint and returns a ShellResult.

Wire format: dill ships instances *by reference* to this module's classes plus their
``__dict__``, so the module path (``volley.sdk.shell_function``) and the instance attribute
names (``cmd``, ``stdout``, ``stderr``, ``walltime``, ``snippet_lines``, ``__name__``,
``return_dict`` / ``cmd``, ``stdout``, ``stderr``, ``returncode``, ``exception_name``) are part
of the protocol.  Do not add, rename or drop instance attributes.
"""

from __future__ import annotations

import collections
import keyword
import numbers
import os
import signal
import string
import subprocess
import tempfile
import typing as t
import uuid

_SNIPPET_CHARS = 1024  # str() shows at most this many trailing/leading characters...
_SNIPPET_SHOWN_LINES = 10  # ...and at most this many lines of them
_CMD_HEADER = "   command: "


def _tail(text: str, stream: str) -> str:
    """The end of a captured stream as ``str(ShellResult)`` shows it."""
    full = text.lstrip("\n").rstrip()
    shown = "\n".join(full[-_SNIPPET_CHARS:].splitlines()[-_SNIPPET_SHOWN_LINES:])
    if shown != full:
        shown = f"[... truncated; see .{stream} for full output ...]\n{shown}"
    return shown


class ShellResult:
    """Outcome of one ShellFunction run: the command, output snippets, and exit status.

    ``returncode`` is 124 when the walltime expired (as coreutils ``timeout`` reports), and
    ``exception_name`` then names ``subprocess.TimeoutExpired``; any other non-zero code comes
    with ``subprocess.CalledProcessError``.
    """

    def __init__(
        self,
        cmd: str,
        stdout: str,
        stderr: str,
        returncode: int,
        exception_name: str | None = None,
    ) -> None:
        self.cmd = cmd
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = returncode
        self.exception_name = exception_name

    def __str__(self) -> str:
        msg = f"exit code: {self.returncode}\n   stdout:\n{_tail(self.stdout, 'stdout')}"
        if self.returncode != 0:
            # stderr is noise for a successful run; show it only when something went wrong.
            msg += f"\n\n   stderr:\n{_tail(self.stderr, 'stderr')}"
            if self.exception_name:
                msg += f"\n\nexception: {self.exception_name}"
        return msg

    def __repr__(self) -> str:
        parts = [f"returncode={self.returncode!r}", f"cmd={self.cmd!r}"]
        if self.exception_name is not None:
            parts.append(f"exception_name={self.exception_name!r}")
        parts += [f"stdout={self.stdout!r}", f"stderr={self.stderr!r}"]
        return f"{type(self).__name__}({', '.join(parts)})"


def _as_path(value: str | os.PathLike[str] | None, what: str) -> str | None:
    # Stored as str: a pickled PosixPath would tie the object to the submitter's platform.
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, str):
            return path
    raise TypeError(f"{what} must be a file path (str or os.PathLike), got {value!r}")


def _check_format_string(cmd: str) -> None:
    """Reject a cmd that ``str.format`` can never accept, at construction instead of remotely."""
    try:
        list(string.Formatter().parse(cmd))
    except ValueError as exc:
        raise ValueError(
            f"cmd is not a valid format string ({exc}); literal braces in a ShellFunction "
            "command must be doubled: {{ and }}"
        ) from None


def _top_level_fields(cmd: str) -> set[str]:
    """Names of the placeholders in cmd, without attribute/index parts: ``{a.b[0]}`` → ``a``."""
    names = set()
    for _literal, field, _spec, _conversion in string.Formatter().parse(cmd):
        if field is not None:
            names.add(field.partition(".")[0].partition("[")[0])
    return names


class ShellFunction:
    """A bash command line to run remotely; submit the instance like any function.

    ``cmd`` is a ``str.format`` template filled from the keyword arguments given at call
    (submit) time, e.g. ``ShellFunction("lammps -in {input_file}")``.  Literal braces must be
    written ``{{`` / ``}}``.

    Parameters: ``stdout`` / ``stderr`` are optional capture files (relative paths resolve
    in the task's working directory); ``walltime`` is seconds after which the command is
    stopped (result code 124); ``snippet_lines`` is how many trailing lines of each stream the
    result carries; ``name`` is the function name used at registration (default: the class
    name); ``return_dict=True`` returns a JSON-compatible dict instead of a ShellResult.
    """

    # Class-level default so instances pickled before the attribute existed still run.
    return_dict: bool = False

    def __init__(
        self,
        cmd: str,
        stdout: str | os.PathLike[str] | None = None,
        stderr: str | os.PathLike[str] | None = None,
        walltime: float | None = None,
        snippet_lines: int = 1000,
        name: str | None = None,
        return_dict: bool = False,
    ) -> None:
        if not isinstance(cmd, str):
            raise TypeError(f"cmd must be a str, got {type(cmd).__name__}")
        _check_format_string(cmd)

        if walltime is not None:
            if isinstance(walltime, bool) or not isinstance(walltime, numbers.Real):
                raise TypeError(f"walltime must be a number of seconds or None, got {walltime!r}")
            # AssertionError (not ValueError) because that is what upstream callers catch;
            # raised explicitly so it survives ``python -O``.
            if walltime < 0:
                raise AssertionError(f"Negative walltime={walltime} is not allowed")

        if isinstance(snippet_lines, bool) or not isinstance(snippet_lines, int):
            raise TypeError(f"snippet_lines must be an int, got {snippet_lines!r}")
        if snippet_lines < 0:
            raise ValueError(f"snippet_lines must be >= 0, got {snippet_lines}")

        if not isinstance(return_dict, bool):
            raise TypeError(f"return_dict must be a bool, got {return_dict!r}")

        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")

        self.cmd = cmd
        self.stdout = _as_path(stdout, "stdout")
        self.stderr = _as_path(stderr, "stderr")
        self.walltime = walltime
        self.snippet_lines = snippet_lines
        # An instance attribute, so each instance registers under its own name while the
        # class keeps its own ``__name__``.
        self.__name__ = self._valid_function_name(name or type(self).__name__)
        self.return_dict = return_dict

    @staticmethod
    def _valid_function_name(name: str) -> str:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError("Function name must be valid python name")
        return name

    def __str__(self) -> str:
        lines = []
        if self.walltime is not None:
            lines.append(f" wall time: {self.walltime}")
        if self.stdout is not None:
            lines.append(f"    stdout: {self.stdout!r}")
        if self.stderr is not None:
            lines.append(f"    stderr: {self.stderr!r}")
        lines.append(f"     lines: {self.snippet_lines!r}")
        lines.append(_CMD_HEADER + self._cmd_preview())
        return f"{self.__name__}\n" + "\n".join(lines)

    def _cmd_preview(self) -> str:
        full = self.cmd.strip()
        shown = "\n".join(full[:_SNIPPET_CHARS].splitlines()[:_SNIPPET_SHOWN_LINES])
        if shown != full:
            shown += "\n[... truncated; see .cmd for full script ...]"
        if "\n" not in shown:
            return shown
        # Multi-line scripts are framed and indented under the header so they read as a block.
        indent = "\n" + " " * len(_CMD_HEADER)
        body = shown.strip().replace("\n", indent)
        return f"-----{indent}{body}{indent}-----"

    def __repr__(self) -> str:
        parts = []
        if self.__name__ != type(self).__name__:
            parts.append(f"name={self.__name__!r}")
        if self.walltime is not None:
            parts.append(f"walltime={self.walltime!r}")
        if self.stdout is not None:
            parts.append(f"stdout={self.stdout!r}")
        if self.stderr is not None:
            parts.append(f"stderr={self.stderr!r}")
        parts.append(f"snippet_lines={self.snippet_lines}")
        parts.append(f"cmd={self.cmd!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def _format_cmd(self, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]) -> str:
        if args:
            raise TypeError(
                f"{type(self).__name__} takes keyword arguments only (they fill the "
                f"{{placeholders}} of cmd); got {len(args)} positional argument(s)"
            )
        try:
            return self.cmd.format(**kwargs)
        except KeyError as exc:
            # Only explain the common cases (a missing keyword, or shell braces such as awk's
            # '{print $1}' read as a placeholder); anything deeper keeps its own error.
            missing = exc.args[0] if exc.args else None
            if missing in _top_level_fields(self.cmd) and missing not in kwargs:
                raise KeyError(
                    f"cmd placeholder {{{missing}}} has no matching keyword argument "
                    "(write literal braces as {{ and }})"
                ) from None
            raise
        except IndexError:
            if any(f == "" or f.isdigit() for f in _top_level_fields(self.cmd)):
                raise IndexError(
                    "cmd has a positional placeholder such as {} or {0}; use named "
                    "placeholders filled by keyword arguments, or write literal braces "
                    "as {{ and }}"
                ) from None
            raise

    def __call__(self, *args: t.Any, **kwargs: t.Any) -> ShellResult | dict[str, t.Any]:
        """Run the command (this is what the endpoint worker calls) and report its outcome."""
        return self._run(self._format_cmd(args, kwargs))

    def _run(self, cmd: str) -> ShellResult | dict[str, t.Any]:
        outcome = _execute_cmd_line(
            cmd,
            stdout_path=self.stdout,
            stderr_path=self.stderr,
            walltime=self.walltime,
            snippet_lines=self.snippet_lines,
        )
        if self.return_dict:
            return outcome
        return ShellResult(**outcome)


# --- execution on the worker ----------------------------------------------------------------

_SANDBOX_WARNING = (
    "WARNING: Task sandboxing will not work due to endpoint misconfiguration. "
    "Please enable sandboxing on the remote endpoint. "
)
# What coreutils ``timeout`` returns when it had to stop the command; users test for it.
_TIMEOUT_RETURNCODE = 124
# After SIGTERM, how long the command gets to exit (flush output, remove temp files) before
# the whole process group is SIGKILLed.
_TERM_GRACE_S = 2.0


def _execute_cmd_line(
    cmd: str,
    *,
    stdout_path: str | None,
    stderr_path: str | None,
    walltime: float | None,
    snippet_lines: int,
) -> dict[str, t.Any]:
    """Run cmd with /bin/bash, capturing both streams to files; return the result fields."""
    sandbox = os.environ.get("GC_TASK_SANDBOX_DIR")
    if sandbox:
        os.makedirs(sandbox, exist_ok=True)  # an unusable sandbox raises OSError: loud, early
        run_dir = os.path.abspath(sandbox)
        warning = None
    else:
        run_dir = os.getcwd()
        warning = _SANDBOX_WARNING
    # The endpoint exports the task id, so capture files can be traced back to their task;
    # older endpoints do not, so fall back to a short random tag.
    prefix = (os.environ.get("GC_TASK_UUID") or str(uuid.uuid4())[-10:]) + "."

    files: list[t.IO[str]] = []
    try:
        out = _open_capture(stdout_path, run_dir, prefix, ".stdout")
        files.append(out)
        err = _open_capture(stderr_path, run_dir, prefix, ".stderr")
        files.append(err)
        if warning:
            print(warning, file=err)
            err.flush()  # before the command appends to the same file

        returncode, exception_name = _run_bash(cmd, out, err, run_dir, walltime)
        stdout_snippet = _last_lines(out, snippet_lines)
        stderr_snippet = _last_lines(err, snippet_lines)
    finally:
        for f in files:
            f.close()

    return {
        "cmd": cmd,
        "stdout": stdout_snippet,
        "stderr": stderr_snippet,
        "returncode": returncode,
        "exception_name": exception_name,
    }


def _open_capture(path: str | None, run_dir: str, prefix: str, suffix: str) -> t.IO[str]:
    """Open (append mode, so reruns and shared files never truncate) one capture file."""
    if not path:
        # mkstemp creates the name atomically (no race with another task picking it), then
        # it is reopened in append mode like a user-given file.
        fd, path = tempfile.mkstemp(dir=run_dir, prefix=prefix, suffix=suffix)
        os.close(fd)
    else:
        path = os.path.join(run_dir, path)  # an absolute user path replaces run_dir
        os.makedirs(os.path.dirname(path), exist_ok=True)
    # Commands may print anything; undecodable bytes must not fail an otherwise good task.
    return open(path, "a+", encoding="utf-8", errors="replace")


def _run_bash(
    cmd: str, out: t.IO[str], err: t.IO[str], run_dir: str, walltime: float | None
) -> tuple[int, str | None]:
    proc = subprocess.Popen(
        cmd,
        shell=True,
        executable="/bin/bash",
        stdout=out,
        stderr=err,
        cwd=run_dir,
        close_fds=False,
        # Its own process group, so a walltime stop reaches bash *and* everything it started.
        start_new_session=True,
    )
    try:
        proc.wait(timeout=walltime)
    except subprocess.TimeoutExpired:
        # Upstream leaves the command running after the walltime; we stop it, so a timed-out
        # task does not keep burning the allocation or writing into its files.
        _stop_process_group(proc)
        return _TIMEOUT_RETURNCODE, "subprocess.TimeoutExpired"
    except BaseException:
        # Interrupted from outside (e.g. the endpoint's own task timeout): do not leave the
        # command behind.
        _stop_process_group(proc)
        raise
    if proc.returncode != 0:
        return proc.returncode, "subprocess.CalledProcessError"
    return 0, None


def _stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the command's process group, then SIGKILL whatever is left, and reap bash."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=_TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    # Children that ignored SIGTERM (or outlived bash) are still in the group.  The group id
    # cannot be reused while any member is alive, so this cannot hit an unrelated process.
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # already gone, or a member changed identity (setuid); nothing more we may do


def _last_lines(f: t.IO[str], count: int) -> str:
    """The last ``count`` lines of a capture file, without holding the whole file in memory."""
    if count <= 0:
        return ""
    f.seek(0)
    return "".join(collections.deque(f, maxlen=count))
