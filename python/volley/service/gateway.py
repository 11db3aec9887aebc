"""The service's side of the broker: topology, task publishing, result forwarding."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from volley.protocol import topology as topo
from volley.transport import Publisher, open_publisher

log = logging.getLogger(__name__)

# Per-task-group SDK queues disappear after this long unused (the task TTL).
SDK_QUEUE_EXPIRES_MS = 14 * 24 * 3600 * 1000


class PublishFailed(RuntimeError):
    """The broker did not confirm every message; names how many and why."""


class BrokerGateway:
    def __init__(self, url: str, *, ca_file: str | None, transport: str | None) -> None:
        self.url = url
        self.ca_file = ca_file
        self.transport = transport
        self.publisher: Publisher = open_publisher(url, transport=transport, ca_file=ca_file)

    def declare_topology(self) -> None:
        p = self.publisher
        p.declare_exchange(topo.DEAD_LETTER_EXCHANGE, "fanout")
        p.declare_queue(topo.DEAD_LETTER_QUEUE)
        p.bind_queue(topo.DEAD_LETTER_QUEUE, topo.DEAD_LETTER_EXCHANGE, "")
        p.declare_exchange(topo.TASKS_EXCHANGE, "direct")
        dlx = {"x-dead-letter-exchange": topo.DEAD_LETTER_EXCHANGE}
        for exchange, queue in (
            (topo.RESULTS_EXCHANGE, topo.RESULTS_QUEUE),
            (topo.HEARTBEATS_EXCHANGE, topo.HEARTBEATS_QUEUE),
        ):
            p.declare_exchange(exchange, "topic")
            p.declare_queue(queue, arguments=dlx)
            p.bind_queue(queue, exchange, f"*.{queue}")

    def declare_endpoint_queue(self, endpoint_id: str) -> None:
        queue = topo.task_queue(endpoint_id)
        self.publisher.declare_queue(
            queue, arguments={"x-dead-letter-exchange": topo.DEAD_LETTER_EXCHANGE}
        )
        self.publisher.bind_queue(queue, topo.TASKS_EXCHANGE, queue)

    def declare_sdk_queue(self, name: str) -> None:
        self.publisher.declare_queue(
            name,
            arguments={
                "x-expires": SDK_QUEUE_EXPIRES_MS,
                "x-dead-letter-exchange": topo.DEAD_LETTER_EXCHANGE,
            },
        )

    def publish_tasks(
        self,
        endpoint_id: str,
        tasks: Sequence[tuple[str, str, bytes]],
        *,
        resource_specification: dict[str, Any] | None,
        result_serializers: list[str] | None,
    ) -> None:
        """Publish ``(task_id, function_id, packed_task)`` triples; raise unless all confirmed."""
        common: dict[str, Any] = {}
        if resource_specification:
            common["resource_specification"] = json.dumps(resource_specification)
        if result_serializers:
            common["result_serializers"] = list(result_serializers)
        rk = topo.task_queue(endpoint_id)
        batch = [
            (topo.TASKS_EXCHANGE, rk, body, {"function_uuid": fid, "task_uuid": tid, **common}, None)
            for tid, fid, body in tasks
        ]
        outcomes = self.publisher.publish_batch(batch, mandatory=True)
        bad = [o for o in outcomes if o != "ack"]
        if bad:
            raise PublishFailed(
                f"the broker did not accept {len(bad)} of {len(batch)} task messages "
                f"({', '.join(sorted(set(bad)))}); is the endpoint's task queue present?"
            )

    def forward_results(self, items: Sequence[tuple[str, bytes, int]]) -> list[str]:
        """Send packed Results to SDK queues: ``(queue, body, completion_timestamp)``."""
        batch = [("", queue, body, None, ts) for queue, body, ts in items]
        return self.publisher.publish_batch(batch)

    def close(self) -> None:
        self.publisher.close()
