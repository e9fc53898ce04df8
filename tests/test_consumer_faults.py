"""Consumer faults as the log shows them: repeated failures summarised, a full pool named."""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings
from gevent.event import Event

from geventchannels import Channel, logs, sessions
from geventchannels.routing import route
from geventchannels.sessions import channel_session

from .conftest import free_port
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


RELEASE = Event()
STARTED: list[str] = []


def blocks_first(message):
    STARTED.append("first")
    RELEASE.wait(10)


def blocks_second(message):
    STARTED.append("second")
    RELEASE.wait(10)


def test_a_pool_full_for_a_while_warns_naming_its_consumers_longest_first(caplog):
    RELEASE.clear()
    STARTED.clear()
    caplog.set_level(logging.WARNING, logger="geventchannels.worker")
    routes = [route("first", blocks_first), route("second", blocks_second)]
    overrides = {"WORKER_FULL_WARNING": 0.3}
    with Pool(routes, concurrency=2, overrides=overrides) as pool:
        try:
            pool.layer.send("first", {})
            wait_for(lambda: STARTED == ["first"])
            pool.layer.send("second", {})
            wait_for(lambda: len(STARTED) == 2)

            def warnings() -> list[logging.LogRecord]:
                return [r for r in pool_records(caplog) if "has been busy" in r.getMessage()]

            wait_for(lambda: len(warnings()) >= 2)
        finally:
            RELEASE.set()
        wait_for(lambda: pool.worker._full_check is None)
    first, second = warnings()[:2]
    assert second.created - first.created >= 0.25
    text = first.getMessage()
    assert "every consumer greenlet (2) has been busy for" in text
    assert text.index("test_consumer_faults.blocks_first for") < text.index(
        "test_consumer_faults.blocks_second for"
    )


def test_a_pool_with_a_free_greenlet_does_not_warn(caplog):
    caplog.set_level(logging.WARNING, logger="geventchannels.worker")
    release = Event()
    seen = []

    def waits(message):
        seen.append(1)
        release.wait(10)

    with Pool(
        [route("jobs", waits)], concurrency=2, overrides={"WORKER_FULL_WARNING": 0.1}
    ) as pool:
        pool.layer.send("jobs", {})
        wait_for(lambda: seen)
        assert pool.worker._full_check is None
        release.set()
    assert not [r for r in pool_records(caplog) if "has been busy" in r.getMessage()]


@channel_session
def _keeps_a_session(message):
    """Decorated, so this process deletes the channel session of every socket that closes."""


def test_a_session_store_that_is_down_fails_each_closing_socket_with_one_traceback(
    caplog, monkeypatch
):
    """Every disconnect deletes the socket's channel session: with the store down (a cache
    session engine on a Redis nobody listens on) 20 closing sockets give one traceback,
    then counts."""
    monkeypatch.setattr(logs, "TALLY_INTERVAL", 0.3)
    # Counted from nothing: sockets closed by earlier tests may have failed too.
    fresh = logs.Tally(sessions._failed_deletes.template, sessions.logger)
    monkeypatch.setattr(sessions, "_failed_deletes", fresh)
    caplog.set_level(logging.INFO, logger="geventchannels.sessions")
    gone = f"redis://127.0.0.1:{free_port()}/0"
    cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": gone}
    closed = []
    routes = [route("websocket.disconnect", lambda message: closed.append(1))]
    with override_settings(
        CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.cache",
        CACHES={"default": cache},
    ):
        with Pool(routes, concurrency=4) as pool:
            for n in range(20):
                pool.layer.send(
                    "websocket.disconnect", {"reply_channel": f"gc.t!ws{n}", "code": 1000}
                )
            wait_for(lambda: len(closed) == 20)
            wait_for(lambda: _deletes_counted(caplog) == 20)
    records = _delete_records(caplog)
    assert "could not delete the channel session of gc.t!ws" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert len(records) <= 3 and all(r.exc_info is None for r in records[1:])
    assert "more closed sockets" in records[-1].getMessage()


def _delete_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "delete the channel session" in r.getMessage()]


def _deletes_counted(caplog) -> int:
    """The first record counts one, each summary its number."""
    records = _delete_records(caplog)
    return len(records[:1]) + sum(int(r.getMessage().split()[7]) for r in records[1:])
