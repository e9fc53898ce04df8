"""pytest fixtures for consumers and the live server (loaded through the ``pytest11``
entry point, so installing geventchannels is enough):

- ``channel_layer``: fresh in-memory layers for every configured alias; the value is the
  ``default`` one (``channel_layer.send(...)``, ``channel_layer.receive([...])``).
- ``ws_client``: a :class:`~geventchannels.test.WSClient` on those layers.
- ``channels_live_server``: the project's server running in this process for the test
  (``.url``, ``.ws_url``, ``.layer``); ``live_server_ws``: its ``ws://`` URL. With
  pytest-django they use its ``transactional_db``, so the server sees the test's rows.

Set ``geventchannels_patch = true`` in the pytest configuration to have gevent patched
before anything else is imported (as ``python -m gevent.monkey --module pytest`` does).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "geventchannels_patch",
        "apply geventchannels.monkey.patch() before conftest files are imported",
        type="bool",
        default=False,
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    if early_config.getini("geventchannels_patch"):
        from geventchannels.monkey import patch

        patch()


@pytest.fixture
def channel_layer() -> Iterator[Any]:
    from geventchannels import DEFAULT_CHANNEL_LAYER
    from geventchannels.test.base import TestLayers

    with TestLayers() as wrappers:
        yield wrappers[DEFAULT_CHANNEL_LAYER]


@pytest.fixture
def ws_client(channel_layer: Any) -> Any:
    from geventchannels.test.websocket import WSClient

    return WSClient(channel_layer.alias)


@pytest.fixture
def channels_live_server(request: pytest.FixtureRequest) -> Iterator[Any]:
    from geventchannels.test.live import live_server, project_layer, require_patched

    require_patched()
    try:
        request.getfixturevalue("transactional_db")
    except pytest.FixtureLookupError:
        pass  # no pytest-django: the database is the project's as configured
    with live_server(layer=project_layer(), serve_static=True) as server:
        yield server


@pytest.fixture
def live_server_ws(channels_live_server: Any) -> str:
    return channels_live_server.ws_url
