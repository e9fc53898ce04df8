"""The ``layer`` and ``make_layer`` fixtures: every contract test runs once per backend.

The ids are "inmemory" and "redis", so ``-k inmemory`` runs the suite without Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest

from geventchannels.layers.base import BaseChannelLayer

LayerFactory = Callable[..., BaseChannelLayer]


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str = "condition",
) -> None:
    """Return as soon as ``predicate()`` is true; fail after ``timeout`` seconds, saying
    ``what`` was waited for."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.1f} s")
        gevent.sleep(interval)


@pytest.fixture(params=["inmemory", pytest.param("redis", marks=pytest.mark.redis)])
def make_layer(request) -> Iterator[LayerFactory]:
    """Build a layer of the parametrised backend with any configuration keys,
    e.g. ``make_layer(expiry=1, capacity=3, channel_capacity={"big.*": 10})``.
    Every layer made is closed after the test."""
    if request.param == "redis":
        from geventchannels.layers import RedisChannelLayer

        redis_url = request.getfixturevalue("redis_url")

        def build(**config: Any) -> BaseChannelLayer:
            return RedisChannelLayer(hosts=[redis_url], **config)
    else:
        from geventchannels.layers import InMemoryChannelLayer

        build = InMemoryChannelLayer

    made: list[BaseChannelLayer] = []

    def make(**config: Any) -> BaseChannelLayer:
        layer = build(**config)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        layer.close()


@pytest.fixture
def layer(make_layer: LayerFactory) -> BaseChannelLayer:
    """A layer of the parametrised backend with the default configuration."""
    return make_layer()
