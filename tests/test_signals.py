"""Django's close_old_connections around every consumer, on the greenlet's own connections,
as the pool runs it (on a SQLite file: Django never closes an in-memory database;
CONN_MAX_AGE is 0 unless a test says)."""

from __future__ import annotations

import gevent
import pytest
from django.db import connections

from geventchannels import signals
from geventchannels.routing import route
from geventchannels.signals import close_old_connections, consumer_finished

from .dbfile import file_database
from .test_worker import Pool, wait_for

pytestmark = pytest.mark.timeout(20)


def query() -> object:
    """Run a query on this greenlet's connection; returns its wrapper."""
    wrapper = connections["default"]
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    return wrapper


@pytest.fixture(autouse=True)
def database():
    file_database()


@pytest.fixture
def max_age(monkeypatch):
    """Set CONN_MAX_AGE for connections opened from now on (wrappers share this dict)."""

    def set_to(seconds: int | None) -> None:
        monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", seconds)

    return set_to


def test_the_greenlets_own_storage_is_read_under_gevent():
    # Otherwise every call would take Django's slower path, and the tests below would not
    # exercise the one the pool uses.
    assert signals._storage is not None


def test_a_connection_is_closed_after_the_message_with_conn_max_age_0(max_age):
    max_age(0)
    wrappers = []
    with Pool([route("test.db", lambda message: wrappers.append(query()))], concurrency=1) as pool:
        pool.layer.send("test.db", {})
        wait_for(lambda: wrappers and wrappers[0].connection is None)


def test_a_persistent_connection_stays_open_and_is_reused(max_age):
    max_age(60)
    opened = []

    def consumer(message):
        opened.append(query().connection)

    with Pool([route("test.db", consumer)], concurrency=1) as pool:
        for _ in range(3):
            pool.layer.send("test.db", {})
        wait_for(lambda: len(opened) == 3)
        assert opened[0] is not None and opened[0] is opened[1] is opened[2]


def test_a_connection_left_out_of_autocommit_is_dropped_even_when_persistent(max_age):
    max_age(60)
    wrappers = []

    def consumer(message):
        wrapper = query()
        wrapper.set_autocommit(False)
        wrappers.append(wrapper)

    with Pool([route("test.db", consumer)], concurrency=1) as pool:
        pool.layer.send("test.db", {})
        wait_for(lambda: wrappers and wrappers[0].connection is None)


def test_a_users_consumer_finished_receiver_runs_and_connections_still_close(max_age):
    max_age(0)
    wrappers, finished = [], []

    def receiver(sender, **kwargs):
        finished.append(sender)

    consumer_finished.connect(receiver)
    try:
        with Pool(
            [route("test.db", lambda message: wrappers.append(query()))], concurrency=1
        ) as pool:
            pool.layer.send("test.db", {})
            wait_for(lambda: finished and wrappers and wrappers[0].connection is None)
    finally:
        consumer_finished.disconnect(receiver)
    assert finished == [type(pool.worker)]


def test_only_the_calling_greenlets_connections_are_checked(max_age):
    """As Django does per thread: another greenlet's expired connection is left to it."""
    max_age(0)
    opened = gevent.event.Event()
    checked = gevent.event.Event()
    seen = {}

    def holder():
        wrapper = query()
        opened.set()
        checked.wait(5)
        seen["before own check"] = wrapper.connection is not None
        close_old_connections()
        seen["after own check"] = wrapper.connection is not None

    def other():
        opened.wait(5)
        close_old_connections()
        checked.set()

    gevent.joinall([gevent.spawn(holder), gevent.spawn(other)], timeout=10, raise_error=True)
    assert seen == {"before own check": True, "after own check": False}
