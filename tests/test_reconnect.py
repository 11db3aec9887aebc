"""The one reconnect policy (volley.transport.reconnect): its schedule, its give-up limit and its
log lines.  The consume loop itself runs against a real broker in test_transport_conformance."""

from __future__ import annotations

import logging

import pytest

from volley.transport.reconnect import GIVE_UP_ENV, GaveUp, Outage, ReconnectPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delays_double_up_to_the_cap() -> None:
    p = ReconnectPolicy(first_delay=0.1, max_delay=1.0, jitter=0)
    it = p.delays()
    assert [round(next(it), 3) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_jitter_stays_within_its_fraction() -> None:
    p = ReconnectPolicy(first_delay=1.0, max_delay=1.0, jitter=0.5)
    draws = [p.jittered(1.0) for _ in range(500)]
    assert all(0.5 <= d <= 1.0 for d in draws)
    assert max(draws) - min(draws) > 0.2  # they differ: clients do not come back in lock step


@pytest.mark.parametrize("bad", [dict(first_delay=0), dict(max_delay=0.01), dict(jitter=1.0),
                                 dict(give_up_after=-1), dict(factor=0.5)])
def test_nonsense_policies_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        ReconnectPolicy(**bad)


def test_outage_gives_up_only_past_the_limit_and_names_the_setting() -> None:
    clock = Clock()
    o = Outage("thing", ReconnectPolicy(give_up_after=30, jitter=0), clock=clock)
    waited = 0.0
    with pytest.raises(GaveUp) as info:
        while True:
            delay = o.failed(ConnectionError("refused"))
            assert delay <= 30 - waited + 1e-9  # never sleeps past the limit
            waited += delay
            clock.now += delay
    assert waited == pytest.approx(30)
    text = str(info.value)
    assert "thing" in text and "refused" in text and f"${GIVE_UP_ENV}" in text
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value.__cause__, ConnectionError)


def test_without_a_limit_an_outage_of_a_day_is_still_waited_out() -> None:
    clock = Clock()
    o = Outage("thing", ReconnectPolicy(give_up_after=None, max_delay=10, jitter=0), clock=clock)
    for _ in range(9000):  # 9000 tries at the 10 s cap: a day
        clock.now += o.failed(ConnectionError("down"))
    assert clock.now - 1000.0 > 86_000
    assert o.ongoing


def test_recovery_resets_the_schedule_and_logs_lost_and_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = logging.getLogger("test-reconnect")
    o = Outage("result stream", ReconnectPolicy(first_delay=0.5, jitter=0), logger=logger, clock=clock)
    assert o.recovered() is False  # nothing to recover from
    with caplog.at_level(logging.WARNING, logger="test-reconnect"):
        assert o.failed(ConnectionError("x")) == 0.5
        assert o.failed(ConnectionError("x")) == 1.0
        clock.now += 2
        assert o.recovered() is True
        assert o.failed(ConnectionError("y")) == 0.5  # a new outage starts from the first delay
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("result stream: connection lost (x)")
    assert any("connection back after 2.0 s (2 attempts)" in line for line in lines)
    assert o.outages == 2


def test_give_up_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GIVE_UP_ENV, "90")
    assert ReconnectPolicy.default().give_up_after == 90
    for never in ("", "0", "never"):
        monkeypatch.setenv(GIVE_UP_ENV, never)
        assert ReconnectPolicy.default().give_up_after is None
    monkeypatch.setenv(GIVE_UP_ENV, "soon")
    with pytest.raises(ValueError, match=GIVE_UP_ENV):
        ReconnectPolicy.default()
