"""The pure-Python envelope codec against upstream's globus_compute_common (test-only peer):
byte-identical packing and equivalent decoding, on fixed vectors and generated messages."""

from __future__ import annotations

import json
import uuid

import pytest
from globus_compute_common import messagepack as upstream
from globus_compute_common.messagepack.message_types import (
    EPStatusReport,
    Result,
    ResultErrorDetails,
    Task,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from volley.protocol import messages as ours

TID = "00000000-0000-0000-0000-000000000001"

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def test_reference_vectors() -> None:
    assert ours.pack_task(TID, "abc") == (
        b'\x01{"message_type":"task","data":{"task_id":"' + TID.encode()
        + b'","container_id":null,"container":null,"task_buffer":"abc"}}'
    )
    assert ours.pack_result(
        TID, "x", error_code="C", error_message="m",
        task_statuses=[{"timestamp": 1, "state": "execution-start", "actor": "worker"}],
    ) == (
        b'\x01{"message_type":"result","data":{"task_id":"' + TID.encode()
        + b'","data":"x","details":null,"error_details":{"code":"C","user_message":"m"},'
        b'"task_statuses":[{"timestamp":1,"state":"execution-start","actor":"worker"}]}}'
    )
    assert ours.pack_status_report(TID, {"a": 1}) == (
        b'\x01{"message_type":"ep_status_report","data":{"endpoint_id":"' + TID.encode()
        + b'","global_state":{"a":1},"task_statuses":{}}}'
    )


@settings(max_examples=200, deadline=None)
@given(task_id=st.uuids(), buf=st.text())
def test_task_bytes_match_upstream(task_id: uuid.UUID, buf: str) -> None:
    assert ours.pack_task(task_id, buf) == upstream.pack(Task(task_id=task_id, task_buffer=buf))
    m = ours.decode(upstream.pack(Task(task_id=task_id, task_buffer=buf)))
    assert (m.kind, m.task_id, m.data) == ("task", str(task_id), buf)


@settings(max_examples=200, deadline=None)
@given(task_id=st.uuids(), data=st.text(), err=st.none() | st.tuples(st.text(), st.text()),
       details=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_result_bytes_match_upstream(task_id: uuid.UUID, data: str, err: tuple[str, str] | None,
                                     details: dict | None) -> None:
    theirs = Result(
        task_id=task_id, data=data, details=details,
        error_details=None if err is None else ResultErrorDetails(code=err[0], user_message=err[1]),
    )
    packed = ours.pack_result(task_id, data, error_code=err and err[0], error_message=err and err[1],
                              details=details)
    assert packed == upstream.pack(theirs)
    back = upstream.unpack(packed)
    assert back.data == data and back.is_error == (err is not None)
    m = ours.decode(upstream.pack(theirs))
    assert m.data == data and m.is_error == (err is not None)
    assert (json.loads(m.details) if m.details else None) == details


@settings(max_examples=100, deadline=None)
@given(endpoint_id=st.uuids(), state=st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_status_report_bytes_match_upstream(endpoint_id: uuid.UUID, state: dict) -> None:
    theirs = EPStatusReport(endpoint_id=endpoint_id, global_state=state, task_statuses={})
    assert ours.pack_status_report(endpoint_id, state) == upstream.pack(theirs)
    assert json.loads(ours.decode(upstream.pack(theirs)).details) == state


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty message body"),
        (b"\x02{}", "unrecognized protocol version: 2"),
        (b"\x01not json", "not valid JSON"),
        (b'\x01{"message_type":"nope","data":{}}', "unknown message_type: 'nope'"),
        (b'\x01{"message_type":"result","data":{"data":"x"}}', "missing required field 'task_id'"),
        (b'\x01{"message_type":"result","data":{"task_id":"zzz","data":"x"}}', "is not a valid UUID"),
        (b'\x01{"message_type":"task","data":{"task_id":"' + TID.encode() + b'"}}',
         "missing required field 'task_buffer'"),
        (b'\x01{"message_type":"result","data":{"task_id":"' + TID.encode() + b'","data":5}}',
         "field 'data' must be a string"),
    ],
)
def test_invalid_messages_name_the_problem(body: bytes, fragment: str) -> None:
    with pytest.raises(ours.InvalidMessageError, match=fragment) as info:
        ours.decode(body)
    assert isinstance(info.value, ValueError)


def test_unknown_fields_are_ignored() -> None:
    body = b'\x01{"message_type":"task","extra":1,"data":{"task_id":"' + TID.encode() + b'","task_buffer":"b","new":2}}'
    m = ours.decode(body)
    assert (m.task_id, m.data) == (TID, "b")
