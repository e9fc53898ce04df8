"""Channel layers: the in-process default and Redis for several processes or machines.

``geventchannels.layers.InMemoryChannelLayer`` and ``geventchannels.layers.RedisChannelLayer``
are the BACKEND paths users write in CHANNEL_LAYERS.
"""

from .base import BaseChannelLayer

__all__ = ["BaseChannelLayer", "InMemoryChannelLayer", "RedisChannelLayer"]


def __getattr__(name: str):
    # Imported on first use so that a process using only one backend never loads the other.
    if name == "InMemoryChannelLayer":
        from .inmemory import InMemoryChannelLayer

        return InMemoryChannelLayer
    if name == "RedisChannelLayer":
        from .redis import RedisChannelLayer

        return RedisChannelLayer
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
