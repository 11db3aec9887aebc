"""Broker names every program agrees on (docs/protocol.md, "Exchanges and queues")."""

from __future__ import annotations

TASKS_EXCHANGE = "tasks"  # direct; queue <endpoint_id>.tasks bound by its own name
RESULTS_EXCHANGE = "results"  # topic; queue "results" bound with *.results
HEARTBEATS_EXCHANGE = "heartbeats"  # topic; queue "heartbeats" bound with *.heartbeats
RESULTS_QUEUE = "results"
HEARTBEATS_QUEUE = "heartbeats"
DEAD_LETTER_EXCHANGE = "volley.dead"  # fanout; poison messages land in DEAD_LETTER_QUEUE
DEAD_LETTER_QUEUE = "volley.dead"

# Largest serialized result or task payload, in characters (upstream's 10 MiB limit).
MAX_PAYLOAD_SIZE = 10 * 1024 * 1024
# Largest message, in bytes, the broker takes (its ``max_message_size``; the local stack's
# node is configured with it).  A task or result within MAX_PAYLOAD_SIZE characters takes
# about 10.05 MiB with the default serializers; 16 MiB leaves room for text that JSON escapes
# or that is multi-byte UTF-8.  A larger publish would close the publisher's channel, so the
# service and the endpoint check a message's size before publishing it.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024


def task_queue(endpoint_id: str) -> str:
    return f"{endpoint_id}.tasks"


def control_queue(endpoint_id: str) -> str:
    """An endpoint's control queue: the service sends it cancel notices, on the default exchange."""
    return f"{endpoint_id}.control"


def results_routing_key(endpoint_id: str) -> str:
    return f"{endpoint_id}.results"


def heartbeats_routing_key(endpoint_id: str) -> str:
    return f"{endpoint_id}.heartbeats"


def sdk_queue_prefix(user_id: str) -> str:
    return f"sdk.{user_id}."


def queue_info(connection_url: str, exchange: str, queue: str, routing_key: str | None = None) -> dict:
    """A ``*_queue_info`` object as handed to endpoints (docs/protocol.md)."""
    info: dict = {"connection_url": connection_url, "exchange": exchange, "queue": queue}
    if routing_key is not None:
        info["queue_publish_kwargs"] = {
            "exchange": exchange,
            "routing_key": routing_key,
            "mandatory": True,
            "properties": {"delivery_mode": 2},
        }
    return info
