"""geventchannels: the Django Channels 1.x model served by one gevent process.

Importing this package loads nothing else: ``geventchannels.monkey.patch()`` must be able
to run before Django, database drivers or ``threading`` are imported. The public names
below are resolved on first use.
"""

__version__ = "0.1.0"

DEFAULT_CHANNEL_LAYER = "default"

_LAZY = {
    "Channel": "geventchannels.channel",
    "Group": "geventchannels.channel",
    "channel_layers": "geventchannels.asgi",
    "get_channel_layer": "geventchannels.asgi",
    "route": "geventchannels.routing",
    "route_class": "geventchannels.routing",
    "include": "geventchannels.routing",
}

__all__ = ["DEFAULT_CHANNEL_LAYER", "__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module 'geventchannels' has no attribute %r" % name)
    import importlib

    value = getattr(importlib.import_module(module), name)
    from .checks import notice_missing_app

    notice_missing_app()
    return value
