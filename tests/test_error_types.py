"""Error classes: texts users see, class hierarchy, and survival across process boundaries."""

from __future__ import annotations

import pickle
import time
import traceback
import typing as t

import dill
import pytest

import volley.errors as errors
from volley.errors import (
    ComputeError,
    DeserializationError,
    MaxResultSizeExceeded,
    SerdeError,
    SerializationError,
    TaskExecutionFailed,
    TaskPending,
    VersionMismatch,
)
from volley.errors.error_types import SERDE_STRATEGY_DOCS

HELP_START = "This appears to be an error with serialization."
WORKER_LOST_START = "One common cause of WorkerLost exceptions is Python version mismatch"


def _pickling_traceback() -> str:
    """A genuine traceback of a failed serialization (lambdas cannot be pickled by name)."""
    try:
        pickle.dumps(lambda: None)
    except Exception:
        return traceback.format_exc()
    pytest.fail("expected pickle to refuse a lambda")


def test_public_names() -> None:
    assert set(errors.__all__) == {
        "ComputeError",
        "TaskExecutionFailed",
        "MaxResultSizeExceeded",
        "SerdeError",
        "SerializationError",
        "DeserializationError",
        "TaskPending",
        "VersionMismatch",
    }


def test_hierarchy() -> None:
    for cls in (VersionMismatch, SerdeError, TaskPending):
        assert issubclass(cls, ComputeError)
    assert issubclass(SerializationError, SerdeError)
    assert issubclass(DeserializationError, SerdeError)
    # These two are plain Exceptions upstream; code catching ComputeError must not see them.
    for plain in (MaxResultSizeExceeded, TaskExecutionFailed):
        assert issubclass(plain, Exception)
        assert not issubclass(plain, ComputeError)


@pytest.mark.parametrize(
    "exc, text",
    [
        (VersionMismatch("too old"), "Globus Compute Versioning Issue: too old"),
        (SerdeError("bad bytes"), "bad bytes"),
        (SerializationError("no way"), "Serialization failed: no way"),
        (DeserializationError("no way"), "Deserialization failed: no way"),
        (TaskPending("waiting-for-ep"), "Task is pending due to waiting-for-ep"),
    ],
)
def test_compute_error_texts(exc: ComputeError, text: str) -> None:
    assert repr(exc) == text
    assert str(exc) == text  # ComputeError's str is its repr


def test_attributes() -> None:
    assert VersionMismatch("m").version_message == "m"
    assert SerializationError("r").reason == "r"
    assert TaskPending("s").reason == "s"
    m = MaxResultSizeExceeded(11, 10)
    assert (m.result_size, m.result_size_limit) == (11, 10)


def test_max_result_size_exceeded_texts() -> None:
    exc = MaxResultSizeExceeded(10485761, 10485760)
    assert str(exc) == "Task result of 10485761B exceeded current limit of 10485760B"
    # The repr is what the endpoint sends back as the remote error text.
    assert repr(exc) == "MaxResultSizeExceeded(10485761, 10485760)"


def test_task_execution_failed_indents_every_line_by_one_space() -> None:
    tef = TaskExecutionFailed(
        "Traceback (most recent call last):\nZeroDivisionError: division by zero"
    )
    assert str(tef) == "\n Traceback (most recent call last):\n ZeroDivisionError: division by zero"


def test_task_execution_failed_leaves_blank_lines_unindented() -> None:
    tef = TaskExecutionFailed("first\n\n  \nlast")
    assert str(tef) == "\n first\n\n  \n last"


def test_task_execution_failed_plain_error_has_no_help() -> None:
    text = str(TaskExecutionFailed("Traceback\nValueError: nope"))
    assert HELP_START not in text
    assert WORKER_LOST_START not in text


def test_task_execution_failed_serialization_help() -> None:
    tb = _pickling_traceback()
    text = str(TaskExecutionFailed(tb))

    assert text.startswith("\n" + " " + tb.splitlines()[0])
    assert HELP_START in text
    assert "ComputeSerializer(strategy_code=AllCodeStrategies())" in text
    assert "from volley.serialize import ComputeSerializer, AllCodeStrategies" in text
    assert SERDE_STRATEGY_DOCS in text
    assert "globus-compute.readthedocs.io" not in text
    assert WORKER_LOST_START not in text


@pytest.mark.parametrize("word", ["dill", "Pickle", "SERIALIZATION", "deserialize"])
def test_task_execution_failed_help_trigger_words(word: str) -> None:
    assert HELP_START in str(TaskExecutionFailed(f"Traceback\nError: {word} broke"))


def test_task_execution_failed_worker_lost() -> None:
    remote = (
        "Traceback (most recent call last):\n"
        "parsl.executors.high_throughput.errors.WorkerLost: Task failure due to loss of worker"
    )
    text = str(TaskExecutionFailed(remote))
    assert HELP_START in text
    assert "*****\n " + WORKER_LOST_START in text
    # The box comes after the serialization help.
    assert text.index(HELP_START) < text.index(WORKER_LOST_START)


def test_task_execution_failed_completion_time() -> None:
    before = time.time()
    stamped = TaskExecutionFailed("x")
    assert before <= float(stamped.completion_t) <= time.time()
    assert stamped.task_details is None

    given = TaskExecutionFailed("x", "1700000000.5", {"os": "Linux"})
    assert given.completion_t == "1700000000.5"
    assert given.task_details == {"os": "Linux"}
    assert given.remote_data == "x"


ALL_EXAMPLES = [
    VersionMismatch("too old"),
    SerdeError("why"),
    SerializationError("why"),
    DeserializationError("why"),
    TaskPending("waiting-for-launch"),
    MaxResultSizeExceeded(200, 128),
    TaskExecutionFailed("Traceback\nKeyError: 'k'", "1700000000.0", {"endpoint_id": "e"}),
]


@pytest.mark.parametrize("dumps, loads", [(pickle.dumps, pickle.loads), (dill.dumps, dill.loads)])
@pytest.mark.parametrize("exc", ALL_EXAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip_through_pickle(
    exc: Exception, dumps: t.Callable[[object], bytes], loads: t.Callable[[bytes], t.Any]
) -> None:
    back = loads(dumps(exc))
    assert type(back) is type(exc)
    assert vars(back) == vars(exc)
    assert str(back) == str(exc)
    assert repr(back) == repr(exc)


def test_task_execution_failed_keeps_completion_time_through_pickle() -> None:
    tef = TaskExecutionFailed("boom")  # stamped now
    back = pickle.loads(pickle.dumps(tef))
    assert back.completion_t == tef.completion_t


def test_errors_can_be_raised_and_caught_by_base() -> None:
    with pytest.raises(SerdeError, match="Deserialization failed: truncated"):
        raise DeserializationError("truncated")
