"""Start Parsl's interchange so that it dies with the endpoint agent.

HTEX runs the interchange as a plain child process; if the agent is killed (SIGKILL, OOM), the
interchange would run on, orphaned, holding its ports.  This wrapper asks the kernel to send it
SIGTERM when its parent dies (``PR_SET_PDEATHSIG``, kept across ``exec``), then becomes Parsl's
interchange; the config pickle on stdin passes through untouched.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main() -> None:
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the interchange then outlives a killed agent, as upstream's does
    if os.getppid() != parent:  # the agent died before the request took effect
        sys.exit(0)
    os.execv(sys.executable, [sys.executable, "-m", "parsl.executors.high_throughput.interchange"])


if __name__ == "__main__":
    main()
