"""docs/protocol.md against ``volley.protocol``: every table on the page lists exactly what the
code defines, so the page cannot drift from the wire contract."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

import pytest

from volley.protocol import headers, topology
from volley.protocol.codes import ApiCode, ResultCode
from volley.protocol.messages import pack_result, pack_status_report, pack_task
from volley.protocol.outcomes import PublishOutcome

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
TID = "00000000-0000-0000-0000-000000000001"


def section(title: str) -> str:
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/protocol.md has no section {title!r}"
    return match.group(1)


def table(title: str) -> list[list[str]]:
    """The rows of the first table in a section, cells stripped, header and rule dropped."""
    rows = [line for line in section(title).splitlines() if line.startswith("|")]
    assert len(rows) > 2, f"no table in section {title!r}"
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def constants(module: object) -> set[str]:
    return {v for k, v in vars(module).items() if k.isupper() and isinstance(v, str)}


def test_exchanges_and_queues_are_the_topology() -> None:
    rows = {(names(r[0])[0], r[1].split()[0]) for r in table("Exchanges and queues")}
    expected = {
        (topology.TASKS_EXCHANGE, "exchange"),
        (topology.task_queue("<endpoint_id>"), "queue"),
        (topology.control_queue("<endpoint_id>"), "queue"),
        (topology.RESULTS_EXCHANGE, "exchange"),
        (topology.RESULTS_QUEUE, "queue"),
        (topology.HEARTBEATS_EXCHANGE, "exchange"),
        (topology.HEARTBEATS_QUEUE, "queue"),
        (topology.sdk_queue_prefix("<user_id>") + "<task_group_id>", "queue"),
        (topology.DEAD_LETTER_EXCHANGE, "exchange"),
        (topology.DEAD_LETTER_QUEUE, "queue"),
    }
    assert rows == expected
    text = section("Exchanges and queues")
    for key in (topology.results_routing_key("<endpoint_id>"), topology.heartbeats_routing_key("<endpoint_id>")):
        assert f"`{key}`" in text


@pytest.mark.parametrize(
    ("kind", "packed"),
    [
        ("task", pack_task(TID, "4\n01\nx")),
        ("result", pack_result(TID, "01\nx", error_code="RemoteExecutionError", error_message="m")),
        ("ep_status_report", pack_status_report(TID, {"active": True})),
    ],
)
def test_message_fields_are_what_the_packers_write_in_order(kind: str, packed: bytes) -> None:
    rows = {names(r[0])[0]: names(r[1]) for r in table("Message bodies")}
    assert set(rows) == {"task", "result", "ep_status_report"}
    envelope = json.loads(packed[1:])
    assert packed[0] == 1 and envelope["message_type"] == kind
    assert rows[kind] == list(envelope["data"])


def test_task_headers_are_the_headers_module() -> None:
    documented = {names(r[0])[0] for r in table("Task message headers")}
    assert documented == constants(headers)
    written = headers.task_headers("f", TID, headers.submission_headers({"num_nodes": 1}, ["a.B"], 2))
    assert set(written) == documented


def test_result_error_codes_are_the_codes_module() -> None:
    documented = [names(r[0])[0] for r in table("Result error codes")]
    assert len(documented) == len(set(documented))
    assert set(documented) == constants(ResultCode)


def test_rest_error_codes_are_the_codes_module() -> None:
    documented = [names(r[0])[0] for r in table("REST error codes")]
    assert len(documented) == len(set(documented))
    assert set(documented) == constants(ApiCode)


def test_publish_outcomes_are_the_outcome_type() -> None:
    documented = {names(r[0])[0] for r in table("Publish outcomes")}
    assert documented == set(get_args(PublishOutcome))


def test_limits_are_the_constants() -> None:
    rows = {r[0]: r[1] for r in table("Limits")}
    payload = next(v for k, v in rows.items() if k.startswith("payload"))
    assert payload.startswith(f"{topology.MAX_PAYLOAD_SIZE // 2**20} MiB") and "MAX_PAYLOAD_SIZE" in payload
    assert rows["broker message"].startswith(f"{topology.MAX_MESSAGE_SIZE // 2**20} MiB")


def test_result_batches_are_the_code() -> None:
    from volley.protocol import batches

    text = section("Result batches")
    assert f'"{batches.CAPABILITY}": true' in text
    assert f"`{batches.BATCH_HEADER}`" in text
    assert batches.MAX_BATCH_BYTES == 1024 * 1024 and "1 MiB" in text
    assert batches.pack_batch([b"ab"]) == b"\x00\x00\x00\x02ab"  # "a 4-byte big-endian length"
