"""One echo server for the whole conformance package, a raw connection per test, and a
check that no server greenlet died and nothing logged an error while a test ran."""

from __future__ import annotations

import logging

import gevent
import pytest

from tests.livesrv import live_server

from .consumers import ECHO_ROUTING
from .rawclient import RawWebSocket


@pytest.fixture(scope="package")
def echo_server():
    with live_server(ECHO_ROUTING) as server:
        yield server


@pytest.fixture
def ws(echo_server):
    """An open, handshaken raw connection to the echo server."""
    with RawWebSocket.connect(echo_server.host, echo_server.port, "/echo/") as conn:
        yield conn


@pytest.fixture(autouse=True)
def no_server_errors(monkeypatch, caplog):
    """Fail a test when a greenlet died with an exception (gevent reports those to the
    hub) or the server or websockets logged at ERROR while it ran."""
    hub = gevent.get_hub()
    crashes = []
    report = hub.handle_error

    def record(context, kind, value, tb):
        if kind is not None and not issubclass(kind, gevent.GreenletExit):
            crashes.append(f"{value!r} in {context!r}")
        return report(context, kind, value, tb)

    monkeypatch.setattr(hub, "handle_error", record)
    caplog.set_level(logging.WARNING)
    yield
    errors = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("geventchannels", "websockets")
    ]
    assert not crashes, f"server greenlets crashed: {crashes}"
    assert not errors, f"server logged errors: {errors}"
