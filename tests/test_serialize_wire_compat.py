"""Wire compatibility of ``volley.serialize`` with the Globus Compute SDK 4.19.0, both ways.

The upstream SDK is a test-only reference peer (installed by the ``test`` extra); runtime code
never imports it.  These tests deliberately fail, rather than skip, when it is missing.

Byte equality is asserted where it is meaningful: data values, and code payloads that carry
source text or pickle a module-level function by reference.  Functions pickled by value embed
interpreter details, so for those only round trips in both directions are checked.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import sys
import typing as t

import globus_compute_sdk  # the reference peer: must be installed, never skipped
import globus_compute_sdk.serialize as upstream
import pytest
from globus_compute_sdk.serialize import concretes as up_concretes
from globus_compute_sdk.serialize import facade as up_facade
from globus_compute_sdk.serialize import utils as up_utils
from globus_compute_sdk.serialize.base import SerializationStrategy as UpSerializationStrategy
from hypothesis import given, settings
from hypothesis import strategies as st

import volley.serialize as ours
from volley.errors import SerdeError
from volley.serialize import concretes as our_concretes
from volley.serialize import facade as our_facade
from volley.serialize import utils as our_utils
from volley.serialize.base import SerializationStrategy


def test_reference_peer_is_the_pinned_version():
    assert globus_compute_sdk.__version__ == "4.19.0"


def multiply(x, y=3):
    return x * y


def make_closure():
    offset = 11

    def add_offset(value):
        return value + offset

    return add_offset


DATA_VALUES: list[t.Any] = [
    (1, 2),
    {"a": 1},
    "hi",
    ((7,), {}),
    ((1.5, "x", None, True, b"\x00\xff"), {"key": [1, 2, {"deep": ("t",)}]}),
    [2**70, -(2**70), 0.1, float("inf")],
    "é€😀\n\t",
    {"text": "x" * 100_000},
    {1, 2, 3},
    frozenset({"a"}),
    collections.OrderedDict(a=1, b=2),
    collections.Counter("hello"),
    complex(1, 2),
    datetime.datetime(2024, 5, 17, 12, 30, tzinfo=datetime.timezone.utc),
    decimal.Decimal("1.25"),
    fractions.Fraction(3, 7),
    range(5),
    ValueError("boom"),
    (),
    {},
    None,
]
JSON_VALUES: list[t.Any] = [
    {"a": [1, 2.5, None, True, "s"]},
    "hi",
    [],
    12,
    {"nested": {"é": "😀"}},
]

DATA_STRATEGY_NAMES = ["DillDataBase64", "JSONData", "AllDataStrategies"]
CODE_STRATEGY_NAMES = [
    "DillCode",
    "DillCodeSource",
    "DillCodeTextInspect",
    "PureSourceDill",
    "PureSourceTextInspect",
    "AllCodeStrategies",
    "CombinedCode",
]


def pair(name: str) -> tuple[t.Any, t.Any]:
    """(our strategy instance, upstream strategy instance) of the same name."""
    return getattr(our_concretes, name)(), getattr(up_concretes, name)()


def values_for(name: str) -> list[t.Any]:
    return JSON_VALUES if name == "JSONData" else DATA_VALUES


def normal(value: t.Any) -> t.Any:
    # Exceptions do not compare equal; compare their type and arguments instead.
    if isinstance(value, BaseException):
        return (type(value), value.args)
    return value


# -- registry, names, paths -------------------------------------------------------------------


def test_same_identifiers_and_kinds():
    mine = {i: (type(s).__name__, s.for_code) for i, s in SerializationStrategy._CACHE.items()}
    theirs = {i: (type(s).__name__, s.for_code) for i, s in UpSerializationStrategy._CACHE.items()}
    assert mine == theirs


def test_same_selectable_strategies_and_defaults():
    names = [s.__name__ for s in our_concretes.SELECTABLE_STRATEGIES]
    assert names == [s.__name__ for s in up_concretes.SELECTABLE_STRATEGIES]
    assert (
        type(ours.DEFAULT_STRATEGY_CODE).__name__ == type(upstream.DEFAULT_STRATEGY_CODE).__name__
    )
    assert (
        type(ours.DEFAULT_STRATEGY_DATA).__name__ == type(upstream.DEFAULT_STRATEGY_DATA).__name__
    )
    assert ours.__all__ == list(upstream.__all__)


@pytest.mark.parametrize("name", [s.__name__ for s in up_concretes.SELECTABLE_STRATEGIES])
def test_import_path_on_the_wire_is_upstreams(name):
    up_path = up_facade.validate_strategylike(getattr(up_concretes, name)).import_path
    for value in (getattr(our_concretes, name), f"volley.serialize.{name}", up_path):
        assert our_facade.validate_strategylike(value).import_path == up_path
    # And upstream resolves the path we send.
    assert up_facade.validate_strategylike(up_path).type_ is getattr(up_concretes, name)


@pytest.mark.parametrize("name", [s.__name__ for s in up_concretes.SELECTABLE_STRATEGIES])
def test_upstream_strategy_objects_map_onto_ours(name):
    up_cls = getattr(up_concretes, name)
    for value in (up_cls, up_cls()):
        validated = our_facade.validate_strategylike(value)
        assert validated.type_ is getattr(our_concretes, name)


def test_upstream_wildcards_are_ours():
    parsed = our_facade.parse_allowlist(
        [up_facade.AllowlistWildcard.CODE, up_facade.AllowlistWildcard.DATA]
    )
    assert parsed == set(our_concretes.SELECTABLE_STRATEGIES)
    ours_mixed = our_facade.parse_allowlist(
        [up_facade.AllowlistWildcard.CODE, "globus_compute_sdk.serialize.JSONData"]
    )
    theirs_mixed = up_facade.parse_allowlist(
        [up_facade.AllowlistWildcard.CODE, "globus_compute_sdk.serialize.JSONData"]
    )
    assert {c.__name__ for c in ours_mixed} == {c.__name__ for c in theirs_mixed}


@pytest.mark.parametrize(
    "allowlist",
    [
        ["globus_compute_sdk.serialize.DillCode"],
        ["globus_compute_sdk.*Code", "globus_compute_sdk.serialize.DillCode"],
        ["globus_compute_sdk.serialize.nope"],
        ["globus_compute_sdk.serialize.concretes.PickleCode"],
    ],
)
def test_allowlist_errors_match(allowlist):
    with pytest.raises(SerdeError) as mine:
        our_facade.parse_allowlist(allowlist)
    with pytest.raises(upstream_errors().SerdeError) as theirs:
        up_facade.parse_allowlist(allowlist)
    assert str(mine.value) == str(theirs.value)


def upstream_errors() -> t.Any:
    import globus_compute_sdk.errors

    return globus_compute_sdk.errors


# -- data both ways ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATA_STRATEGY_NAMES)
def test_data_payloads_byte_identical_and_cross_readable(name):
    mine, theirs = pair(name)
    for value in values_for(name):
        our_payload = mine.serialize(value)
        their_payload = theirs.serialize(value)
        assert our_payload == their_payload, value
        # JSON turns tuples into lists, so compare with what upstream itself reads back.
        expected = normal(theirs.deserialize(their_payload))
        assert normal(theirs.deserialize(our_payload)) == expected
        assert normal(mine.deserialize(their_payload)) == expected
        if name == "DillDataBase64":
            assert expected == normal(value)


@settings(max_examples=300)
@given(
    st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(),
            st.binary(),
        ),
        lambda kids: st.one_of(
            st.lists(kids),
            st.lists(kids).map(tuple),
            st.dictionaries(st.text(), kids),
            st.sets(st.integers()),
        ),
        max_leaves=30,
    )
)
def test_default_data_serializer_is_byte_identical(value):
    our_payload = ours.ComputeSerializer().serialize(value)
    assert our_payload == upstream.ComputeSerializer().serialize(value)
    assert upstream.ComputeSerializer().deserialize(our_payload) == value


def test_pickle_code_payload_reads_in_both():
    payload = "02\n" + up_concretes.DillDataBase64().serialize([1, "x"])[3:]
    assert our_concretes.PickleCode().deserialize(payload) == [1, "x"]
    assert up_concretes.PickleCode().deserialize(payload) == [1, "x"]


# -- code both ways ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CODE_STRATEGY_NAMES)
def test_module_function_payloads_identical_and_cross_readable(name):
    mine, theirs = pair(name)
    our_payload = mine.serialize(multiply)
    their_payload = theirs.serialize(multiply)
    assert our_payload == their_payload
    if name == "CombinedCode":
        # Reads the first chunk, DillCodeSource, on both sides.
        assert theirs.deserialize(our_payload)(4) == 12
        assert mine.deserialize(their_payload)(4) == 12
        assert mine.deserialize(their_payload, variation=2)(4, 5) == 20
        return
    assert theirs.deserialize(our_payload)(4) == 12
    assert mine.deserialize(their_payload)(4, 5) == 20


def sourceless_function() -> t.Callable[[int], int]:
    namespace: dict[str, t.Any] = {}
    exec("def tripled(v):\n    return v * 3\n", namespace)
    return namespace["tripled"]


def test_by_value_functions_cross_readable():
    mine, theirs = pair("DillCode")
    for fn, arg, expected in (
        (make_closure(), 1, 12),
        (lambda v: v * 2, 4, 8),
        (sourceless_function(), 2, 6),
    ):
        assert theirs.deserialize(mine.serialize(fn))(arg) == expected
        assert mine.deserialize(theirs.serialize(fn))(arg) == expected


@pytest.mark.parametrize("name", ["AllCodeStrategies", "CombinedCode"])
def test_combos_fall_back_to_dill_both_ways(name):
    # No source to extract: only the DillCode part is present.
    mine, theirs = pair(name)
    fn = sourceless_function()
    our_payload, their_payload = mine.serialize(fn), theirs.serialize(fn)
    assert len(our_payload) == len(their_payload)
    assert theirs.deserialize(our_payload)(2) == 6
    assert mine.deserialize(their_payload)(2) == 6


@pytest.mark.parametrize("name", ["DillCodeSource", "PureSourceDill", "AllCodeStrategies"])
def test_nested_function_source_cross_readable(name):
    mine, theirs = pair(name)
    fn = make_closure()
    # The source refers to ``offset`` from the enclosing scope, absent after exec: the
    # failure must be the same on both sides.
    for restored in (
        theirs.deserialize(mine.serialize(fn)),
        mine.deserialize(theirs.serialize(fn)),
    ):
        assert restored.__name__ == "add_offset"


def test_compute_serializer_task_bodies_cross_readable():
    mine, theirs = ours.ComputeSerializer(), upstream.ComputeSerializer()
    our_parts = [mine.serialize(multiply), mine.serialize((6,)), mine.serialize({"y": 7})]
    their_parts = [theirs.serialize(multiply), theirs.serialize((6,)), theirs.serialize({"y": 7})]
    assert our_parts == their_parts

    our_body = our_utils.pack_buffers([our_parts[0]]) + our_utils.pack_buffers(our_parts[1:])
    assert our_body == up_utils.pack_buffers(their_parts)
    fn, args, kwargs = theirs.unpack_and_deserialize(our_body)
    assert fn(*args, **kwargs) == 42
    fn, args, kwargs = mine.unpack_and_deserialize(up_utils.pack_buffers(their_parts))
    assert fn(*args, **kwargs) == 42


@pytest.mark.parametrize("name", [s.__name__ for s in up_concretes.SELECTABLE_STRATEGIES])
def test_serialize_from_list_matches_upstream(name):
    data = multiply if getattr(up_concretes, name).for_code else {"r": [1, 2]}
    path = f"globus_compute_sdk.serialize.concretes.{name}"
    mine = ours.ComputeSerializer.serialize_from_list(data, [path])
    theirs = upstream.ComputeSerializer.serialize_from_list(data, [path])
    assert mine == theirs
    restored = upstream.ComputeSerializer().deserialize(mine)
    if callable(data):
        assert restored(2) == 6
    else:
        assert restored == data


# -- framing and error texts ------------------------------------------------------------------


@given(st.lists(st.text()))
def test_pack_buffers_identical(buffers):
    packed = our_utils.pack_buffers(buffers)
    assert packed == up_utils.pack_buffers(buffers)
    assert our_utils.unpack_buffers(packed) == up_utils.unpack_buffers(packed) == buffers


@pytest.mark.parametrize(
    "packed",
    ["5", "abc\nhello", "-1\nhello", "10\nhello", "2\nab3\nxy", " 2\nab", "+2\nab", "2_0\n"],
)
def test_unpack_errors_and_leniency_match(packed):
    def outcome(fn: t.Callable[[str], list[str]]) -> t.Any:
        try:
            return fn(packed)
        except ValueError as e:
            return ("ValueError", str(e))

    assert outcome(our_utils.unpack_buffers) == outcome(up_utils.unpack_buffers)


def _generator() -> t.Iterator[int]:
    yield 1


@pytest.mark.parametrize("name", DATA_STRATEGY_NAMES)
def test_data_failure_texts_match(name):
    mine, theirs = pair(name)
    with pytest.raises(Exception) as mine_exc:
        mine.serialize(_generator())
    with pytest.raises(Exception) as their_exc:
        theirs.serialize(_generator())
    assert type(mine_exc.value).__name__ == type(their_exc.value).__name__
    assert str(mine_exc.value) == str(their_exc.value)


@pytest.mark.parametrize(
    "payload",
    [
        "zz\nnothing",
        "13\n5\nzz\nab",
        "13\n12\nNO_NEWLINE_x",
        "10\nzz\n:abc",
        "00\n!!!!",
        "st\nfoo:def foo(:\n",
    ],
)
def test_deserialization_failure_texts_match(payload):
    def outcome(serializer: t.Any) -> tuple[str, str]:
        try:
            serializer.deserialize(payload)
        except Exception as e:
            return type(e).__name__, str(e)
        raise AssertionError("expected a failure")

    assert outcome(ours.ComputeSerializer()) == outcome(upstream.ComputeSerializer())


@pytest.mark.parametrize("blocked", ["DillDataBase64", "PureSourceDill"])
def test_allowlist_refusal_texts_match(blocked):
    allow = ["globus_compute_sdk.serialize.DillCode", "globus_compute_sdk.serialize.JSONData"]
    data = multiply if getattr(up_concretes, blocked).for_code else [1]
    payload = getattr(up_concretes, blocked)().serialize(data)
    with pytest.raises(SerdeError) as mine:
        ours.ComputeSerializer(allowed_deserializer_types=allow).deserialize(payload)
    with pytest.raises(upstream_errors().DeserializationError) as theirs:
        upstream.ComputeSerializer(allowed_deserializer_types=allow).deserialize(payload)
    assert str(mine.value) == str(theirs.value)


def test_runtime_does_not_depend_on_upstream():
    for name in (
        "volley.serialize",
        "volley.serialize.base",
        "volley.serialize.concretes",
        "volley.serialize.facade",
        "volley.serialize.utils",
    ):
        module = sys.modules[name]
        assert not any(
            getattr(v, "__module__", "").startswith("globus_compute") for v in vars(module).values()
        ), name
