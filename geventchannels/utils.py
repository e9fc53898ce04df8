"""Small helpers shared by the worker and the routing."""

from __future__ import annotations

from typing import Any


def name_that_thing(thing: Any) -> str:
    """A dotted name for a consumer in logs: a function, method, class or callable object."""
    target = getattr(thing, "__func__", thing)
    qualname = getattr(target, "__qualname__", None)
    if qualname is None:
        target = type(thing)
        qualname = target.__qualname__
    module = getattr(target, "__module__", None)
    return f"{module}.{qualname}" if module else qualname
