"""Status reports to the ``heartbeats`` exchange, and stopping an endpoint that sits idle.

One thread (``volley-heartbeat``) sends a report every ``heartbeat_period`` seconds.  It also
counts idle periods: ``idle_heartbeats_soft`` periods with nothing left to do after some work,
or ``idle_heartbeats_hard`` periods in which no task moved, stop the endpoint (each 0: never).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from volley.protocol.codec import pack_status_report
from volley.protocol.outcomes import ACK
from volley.transport import Publisher

log = logging.getLogger(__name__)


class Heartbeats:
    def __init__(
        self,
        publisher: Publisher,
        route: tuple[str, str],
        endpoint_id: str,
        *,
        period: float,
        idle_soft: int,
        idle_hard: int,
        status: Callable[[bool], dict[str, Any]],
        progress: Callable[[], tuple[int, int]],
        all_done: Callable[[], bool],
        stop: Callable[[str], None],
        stopped: threading.Event,
    ) -> None:
        self.publisher = publisher
        self.exchange, self.routing_key = route
        self.endpoint_id = endpoint_id
        self.period = period
        self.idle_soft, self.idle_hard = idle_soft, idle_hard
        self.status = status  # the report's global_state; its argument: still active
        self.progress = progress  # (tasks received, results confirmed)
        self.all_done = all_done  # nothing held, nothing waiting to be sent
        self.stop = stop
        self.stopped = stopped
        self.thread = threading.Thread(target=self._loop, name="volley-heartbeat", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def send(self, active: bool = True) -> bool:
        """Send one report; whether the broker confirmed it."""
        try:
            outcome = self.publisher.publish(
                self.exchange, self.routing_key, pack_status_report(self.endpoint_id, self.status(active)),
                mandatory=True, timeout=5.0,
            )
        except (ConnectionError, TimeoutError) as exc:
            log.warning("heartbeat not sent: %s", exc)
            return False
        return outcome == ACK

    def _loop(self) -> None:
        idle_soft = idle_hard = 0
        moved_ever = False
        last = (0, 0)
        while True:
            self.send()
            if self.stopped.wait(self.period):
                return
            now = self.progress()
            moved = now != last
            last = now
            moved_ever = moved_ever or moved
            idle_hard = 0 if moved else idle_hard + 1
            idle_soft = idle_soft + 1 if (moved_ever and self.all_done() and not moved) else 0
            if self.idle_soft and idle_soft >= self.idle_soft:
                self.stop(f"idle for {idle_soft} heartbeats after finishing its work (idle_heartbeats_soft)")
            elif self.idle_hard and idle_hard >= self.idle_hard:
                self.stop(f"no task moved for {idle_hard} heartbeats (idle_heartbeats_hard)")
