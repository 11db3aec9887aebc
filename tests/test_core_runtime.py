"""Guarantees of the native core's runtime, seen from Python: objects refuse to work after
fork() (with a clear error) while new ones in the child work, and Ctrl-C interrupts a wait."""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

core = pytest.importorskip("volley._core", reason="the native core is built by `make setup`")


def _broker(stack: dict[str, Any]) -> tuple[str, str]:
    info = json.loads((Path(stack["state_dir"]) / "broker" / "broker.json").read_text())
    from volley.local.broker import BrokerInfo

    b = BrokerInfo(**info)
    return b.url(), b.ca_file


def _child(fn: Any) -> int:
    """Run ``fn`` in a forked child; its exit status says what happened there."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            code = fn()
        except BaseException:
            code = 99
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_objects_refuse_to_work_after_fork_and_new_ones_do(stack: dict[str, Any]) -> None:
    url, ca = _broker(stack)
    pub = core.Publisher(url, ca_file=ca)
    q = f"fork-{uuid.uuid4().hex[:8]}"
    pub.declare_queue(q, auto_delete=False)
    consumer = core.Consumer(url, q, ca_file=ca)

    def in_child() -> int:
        try:
            consumer.next_batch(1, timeout=0.1)
        except core.ForkError as exc:
            if "after fork()" not in str(exc):
                return 2
        else:
            return 1
        try:
            pub.publish("", q, b"x")
        except core.ForkError:
            pass
        else:
            return 3
        fresh = core.Publisher(url, ca_file=ca)  # a new object in the child has its own runtime
        return 0 if fresh.publish("", q, b"from-child") == "ack" else 4

    assert _child(in_child) == 0
    # the parent's objects are unaffected
    got = []
    for _ in range(50):
        got.extend(consumer.next_batch(10, timeout=0.2))
        if got:
            break
    assert [d.body for d in got] == [b"from-child"]
    consumer.ack_through(got[-1].tag)
    consumer.close()
    pub.delete_queue(q)
    pub.close()


def test_ctrl_c_interrupts_a_blocked_wait(stack: dict[str, Any]) -> None:
    url, ca = _broker(stack)
    pub = core.Publisher(url, ca_file=ca)
    q = f"sigint-{uuid.uuid4().hex[:8]}"
    pub.declare_queue(q)
    consumer = core.Consumer(url, q, ca_file=ca)
    # SIGINT this (main) thread half a second into the wait; a wait that ignored signals would
    # sit out its 120 s and return [], failing the test
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            consumer.next_batch(1, timeout=120)
    finally:
        timer.join()
        consumer.close()
        pub.delete_queue(q)
        pub.close()
