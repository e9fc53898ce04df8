"""Consumer faults as the log shows them: repeated failures summarised, a full pool named."""

from __future__ import annotations

import logging

import pytest
from gevent.event import Event

from geventchannels import Channel, logs
from geventchannels.routing import route

from .test_worker import Pool, wait_for

pytestmark = pytest.mark.timeout(30)


def failing(message):
    raise ValueError("boom")


DONE = Event()


def failing_by_kind(message):
    if message["n"] == "done":
        DONE.set()
    elif message["n"] == "boom":
        raise ValueError("boom")
    else:
        raise KeyError(message["n"])


def pool_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "geventchannels.worker"]


def test_a_hundred_identical_failures_give_one_traceback_and_a_summary(caplog, monkeypatch):
    monkeypatch.setattr(logs, "TALLY_INTERVAL", 0.3)
    caplog.set_level(logging.INFO, logger="geventchannels.worker")
    with Pool([route("jobs", failing)], concurrency=4) as pool:
        caplog.clear()
        for _ in range(100):
            Channel("jobs", channel_layer=pool.layer).send({"n": 1})
        wait_for(lambda: any("more times" in r.getMessage() for r in pool_records(caplog)))
    records = pool_records(caplog)
    assert len(records) <= 5, [r.getMessage() for r in records]
    first = records[0]
    assert "error in consumer" in first.getMessage()
    assert first.exc_info is not None and first.exc_info[0] is ValueError
    summaries = [r.getMessage() for r in records if "more times" in r.getMessage()]
    assert sum(int(s.split()[3]) for s in summaries) == 99
    assert "ValueError('boom')" in summaries[0]
    assert "test_consumer_faults.failing" in summaries[0]
    assert all(r.exc_info is None for r in records[1:])


def test_a_different_error_is_logged_in_full_at_once(caplog, monkeypatch):
    monkeypatch.setattr(logs, "TALLY_INTERVAL", 30.0)
    caplog.set_level(logging.ERROR, logger="geventchannels.worker")
    DONE.clear()
    # One consumer greenlet and one channel: the messages run in the order they were sent.
    with Pool([route("jobs", failing_by_kind)], concurrency=1) as pool:
        for n in ("boom", "boom", "a", "boom", "a", "b", "done"):
            pool.layer.send("jobs", {"n": n})
        assert DONE.wait(5)
    full = [r for r in pool_records(caplog) if r.exc_info is not None]
    assert sorted(r.exc_info[0].__name__ + str(r.exc_info[1]) for r in full) == [
        "KeyError'a'",
        "KeyError'b'",
        "ValueErrorboom",
    ]
