"""What the broker answered to one published message (publisher confirms)."""

from __future__ import annotations

from typing import Final, Literal

PublishOutcome = Literal["ack", "nack", "returned"]

ACK: Final = "ack"  # stored (persistent messages: on disk)
NACK: Final = "nack"  # refused: a full queue with ``x-overflow: reject-publish``, or an internal error
RETURNED: Final = "returned"  # mandatory and unroutable: the queue it was meant for does not exist
