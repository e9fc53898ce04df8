"""The channel layers a project configures in ``settings.CHANNEL_LAYERS``, built on first use.

``channel_layers[alias]`` is a :class:`ChannelLayerWrapper` holding the layer, its routing
and (lazily) its Router; ``get_channel_layer(alias)`` is the bare layer. A project without
``CHANNEL_LAYERS`` gets an in-memory ``default`` layer with no routes of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import DEFAULT_CHANNEL_LAYER
from .layers.base import BaseChannelLayer

if TYPE_CHECKING:
    from .routing import Router

IN_MEMORY_BACKEND = "geventchannels.layers.InMemoryChannelLayer"
REDIS_BACKEND = "geventchannels.layers.RedisChannelLayer"

#: Channels 1.x backend names and the geventchannels layer that takes their place, so a
#: 1.x project's settings work unchanged.
CHANNELS1_BACKENDS = {
    "asgiref.inmemory.ChannelLayer": IN_MEMORY_BACKEND,
    "asgi_redis.RedisChannelLayer": REDIS_BACKEND,
    "asgi_redis.RedisLocalChannelLayer": REDIS_BACKEND,
}


def _notice_missing_app() -> None:
    from .checks import notice_missing_app

    notice_missing_app()


_notice_missing_app()

DEFAULT_CONFIGS = {DEFAULT_CHANNEL_LAYER: {"BACKEND": IN_MEMORY_BACKEND, "ROUTING": []}}


class ChannelLayerWrapper:
    """A configured layer with its alias and routing; the Router is built when first used."""

    def __init__(self, channel_layer: BaseChannelLayer, alias: str, routing: Any):
        self.channel_layer = channel_layer
        self.alias = alias
        self.routing = routing
        self._router: Router | None = None

    @property
    def router(self) -> Router:
        if self._router is None:
            from .routing import Router

            self._router = Router(self.routing)
        return self._router

    @router.setter
    def router(self, router) -> None:
        self._router = router

    def __getattr__(self, name: str) -> Any:
        # Layer methods (send, receive, group_add...) are reachable on the wrapper, as in 1.x.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.channel_layer, name)

    def __repr__(self) -> str:
        return f"<ChannelLayerWrapper {self.alias!r} {self.channel_layer!r}>"


class ChannelLayerManager:
    """Builds each alias's layer from settings once and keeps it."""

    def __init__(self) -> None:
        self.backends: dict[str, ChannelLayerWrapper] = {}

    @property
    def configs(self) -> dict[str, dict]:
        from django.conf import settings

        configured = getattr(settings, "CHANNEL_LAYERS", None)
        return configured if configured else DEFAULT_CONFIGS

    def _config(self, alias: str) -> dict:
        """The entry for ``alias``, checked as the system checks do (E003 to E005)."""
        from .checks import layer_problems, one_line

        configs = self.configs
        if alias not in configs:
            defined = ", ".join(map(repr, configs)) or "none"
            raise ImproperlyConfigured(
                f"no channel layer named {alias!r}: settings.CHANNEL_LAYERS defines {defined}; "
                f"add {alias!r} to it or use one of those aliases"
            )
        config = configs[alias]
        errors = [m for m in layer_problems(alias, config, routing=False) if m.is_serious()]
        if errors:
            raise ImproperlyConfigured(" ".join(one_line(m) for m in errors))
        return config

    def backend_class(self, alias: str) -> type[BaseChannelLayer]:
        """The layer class configured for ``alias``, without building the layer."""
        backend = self._config(alias)["BACKEND"]
        return import_string(CHANNELS1_BACKENDS.get(backend, backend))

    def make_backend(self, alias: str, test: bool = False) -> ChannelLayerWrapper:
        """Build a new wrapper for ``alias``; with ``test=True`` CONFIG is updated with
        TEST_CONFIG (used by the test helpers)."""
        config = self._config(alias)
        options = dict(config.get("CONFIG") or {})
        if test:
            options.update(config.get("TEST_CONFIG") or {})
        backend = config["BACKEND"]
        layer_class = self.backend_class(alias)
        try:
            layer = layer_class(**options)
        except (TypeError, ValueError) as error:
            raise ImproperlyConfigured(
                f"CHANNEL_LAYERS[{alias!r}]: {backend} cannot be built from its CONFIG: {error}"
            ) from error
        return ChannelLayerWrapper(layer, alias, config["ROUTING"])

    def make_test_backend(self, alias: str) -> ChannelLayerWrapper:
        return self.make_backend(alias, test=True)

    def __getitem__(self, alias: str) -> ChannelLayerWrapper:
        try:
            return self.backends[alias]
        except KeyError:
            wrapper = self.backends[alias] = self.make_backend(alias)
            return wrapper

    def __contains__(self, alias: str) -> bool:
        return alias in self.configs

    def set(self, alias: str, wrapper: ChannelLayerWrapper | None) -> ChannelLayerWrapper | None:
        """Put ``wrapper`` in place for ``alias`` (None forgets it) and return the old one."""
        old = self.backends.get(alias)
        if wrapper is None:
            self.backends.pop(alias, None)
        else:
            self.backends[alias] = wrapper
        return old


channel_layers = ChannelLayerManager()


def get_channel_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> BaseChannelLayer:
    """The channel layer configured under ``alias``."""
    return channel_layers[alias].channel_layer
