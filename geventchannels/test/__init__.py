"""Test helpers: consumers under test with a client and fresh in-memory layers
(``ChannelTestCase``, ``WSClient``), and the real server in the test's process
(``ChannelLiveServerTestCase``, ``live_server``). The pytest fixtures are in ``plugin``.

Names are resolved on first use, so that the pytest plugin, which pytest loads before
anything else, imports neither Django nor gevent.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "ChannelTestCase": "base",
    "TransactionChannelTestCase": "base",
    "ChannelTestCaseMixin": "base",
    "Client": "base",
    "TestLayers": "base",
    "apply_routes": "base",
    "WSClient": "websocket",
    "HttpClient": "websocket",
    "ChannelLiveServerTestCase": "live",
    "ConsumerError": "live",
    "LiveServer": "live",
    "live_server": "live",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
