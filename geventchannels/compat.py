"""Run a Channels 1.x project unchanged: ``import channels...`` gets geventchannels.

Call :func:`install` before Django sets up, first thing in ``manage.py`` and ``wsgi.py``::

    import geventchannels.compat
    geventchannels.compat.install()

From then on each Channels 1.x module name in :data:`ALIASES` is the geventchannels module
itself (the same objects, not copies), so ``"channels"`` in INSTALLED_APPS is
geventchannels' app and ``from channels.generic.websockets import WebsocketConsumer``
works. The 1.x backend names (``asgi_redis.RedisChannelLayer``,
``asgiref.inmemory.ChannelLayer``) already mean geventchannels' layers. For projects that
cannot edit those files, :func:`install_from_environment` acts only when
``GEVENTCHANNELS_COMPAT=1`` is set, for a ``.pth`` file (see docs/compat.md).

This module imports only the standard library: installing loads nothing else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType

#: Each Channels 1.x module and the geventchannels module that takes its place. A 1.x
#: module that is not here cannot be imported while the aliases are installed.
ALIASES: dict[str, str] = {
    "channels": "geventchannels",
    "channels.apps": "geventchannels.apps",
    "channels.asgi": "geventchannels.asgi",
    "channels.auth": "geventchannels.auth",
    "channels.binding": "geventchannels.binding",
    "channels.binding.base": "geventchannels.binding.base",
    "channels.binding.websockets": "geventchannels.binding.websockets",
    "channels.channel": "geventchannels.channel",
    "channels.delay": "geventchannels.delay",
    "channels.exceptions": "geventchannels.exceptions",
    "channels.generic": "geventchannels.generic",
    "channels.generic.base": "geventchannels.generic.base",
    "channels.generic.websockets": "geventchannels.generic.websockets",
    "channels.management": "geventchannels.management",
    "channels.management.commands": "geventchannels.management.commands",
    "channels.management.commands.rundelay": "geventchannels.management.commands.rundelay",
    "channels.management.commands.runserver": "geventchannels.management.commands.runserver",
    "channels.management.commands.runworker": "geventchannels.management.commands.runworker",
    "channels.message": "geventchannels.message",
    "channels.routing": "geventchannels.routing",
    "channels.security": "geventchannels.security",
    "channels.security.websockets": "geventchannels.security.websockets",
    "channels.sessions": "geventchannels.sessions",
    "channels.signals": "geventchannels.signals",
    "channels.test": "geventchannels.test",
    "channels.test.base": "geventchannels.test.base",
    "channels.test.http": "geventchannels.test.websocket",
    "channels.test.liveserver": "geventchannels.test.live",
    "channels.test.websocket": "geventchannels.test.websocket",
    "channels.tests": "geventchannels.test",
}

#: The environment variable that makes :func:`install_from_environment` act.
ENVIRONMENT_VARIABLE = "GEVENTCHANNELS_COMPAT"

PACKAGE = "channels"


class CompatError(RuntimeError):
    """The aliases cannot be installed: the real Channels would be used instead."""


class _AliasLoader(Loader):
    """Loads an alias as the geventchannels module it stands for: one module, two names."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._spec: ModuleSpec | None = None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        from importlib import import_module

        module = import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system gave the module the alias's spec: it keeps its own, which
        # says where its file is (Django's autoreloader watches files by spec).
        module.__spec__ = self._spec


class AliasFinder(MetaPathFinder):
    """Finds ``channels`` and its submodules: those in :data:`ALIASES` are the
    geventchannels modules; any other is refused, so that no second copy of a
    geventchannels module is ever loaded under a ``channels.`` name."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != PACKAGE and not fullname.startswith(PACKAGE + "."):
            return None
        alias = ALIASES.get(fullname)
        if alias is None:
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: geventchannels.compat maps only the Channels "
                "1.x modules it provides (geventchannels.compat.ALIASES; see docs/compat.md)",
                name=fullname,
            )
        return ModuleSpec(fullname, _AliasLoader(alias))


_finder = AliasFinder()


def installed() -> bool:
    return _finder in sys.meta_path


def install() -> None:
    """Make the Channels 1.x module names import geventchannels' modules. Call it before
    Django sets up; calling it again does nothing. Raises CompatError when the real
    Channels is imported already or installed, since it would then be used instead
    wherever this was not called first."""
    if installed():
        return
    _refuse_real_channels()
    sys.meta_path.insert(0, _finder)


def install_from_environment() -> bool:
    """:func:`install` when ``GEVENTCHANNELS_COMPAT`` is set to something other than
    ``0`` (for a ``.pth`` file, which every Python of the environment runs); returns
    whether it did."""
    if os.environ.get(ENVIRONMENT_VARIABLE, "0") in ("", "0"):
        return False
    install()
    return True


def uninstall() -> None:
    """Remove the aliases (the geventchannels modules stay imported)."""
    while _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        module = sys.modules[name]
        if getattr(module, "__name__", "").startswith("geventchannels"):
            del sys.modules[name]


def _refuse_real_channels() -> None:
    module = sys.modules.get(PACKAGE)
    if module is not None and not getattr(module, "__name__", "").startswith("geventchannels"):
        where = getattr(module, "__file__", None) or "an unknown place"
        raise CompatError(
            f"the real Channels package is already imported (from {where}), so "
            "geventchannels.compat.install() cannot stand in for it. Call install() before "
            "anything imports channels or Django sets up: first thing in manage.py and wsgi.py."
        )
    spec = PathFinder.find_spec(PACKAGE)
    if spec is not None:
        where = spec.origin or ", ".join(spec.submodule_search_locations or ()) or "sys.path"
        raise CompatError(
            f"a package named 'channels' is installed ({where}). geventchannels replaces "
            "Channels 1.x, daphne and asgi_redis: uninstall them (pip uninstall channels "
            "daphne asgi_redis), or rename a local 'channels' folder; with it present, any "
            "process that did not call geventchannels.compat.install() first would run it."
        )
