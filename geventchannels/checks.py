"""Django system checks: every configuration mistake found in one place, with a stable id.

``manage.py check`` shows them like Django's own; every run mode (runserver, runworker,
``geventchannels serve``, the gunicorn worker) runs them at start through
:func:`startup_errors` and stops with one line per error instead of a traceback.

The gevent-patch check (E001) only speaks in a process that serves: management commands
that do not serve (migrate, shell...) need no patch, so the serving commands call
:func:`expect_serving` first.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from django.core import checks

from . import conf

#: Every check id and when it is reported (docs/settings.md lists them).
CHECKS: dict[str, str] = {
    "geventchannels.E001": "this process serves with geventchannels but is not gevent-patched",
    "geventchannels.E002": "`GEVENTCHANNELS` has an unknown key (the closest known one is "
    "suggested) or a value of the wrong kind",
    "geventchannels.E003": "a `CHANNEL_LAYERS` entry is not a dict or lacks `BACKEND` or "
    "`ROUTING`, or the alias a run mode was asked to serve is not defined",
    "geventchannels.E004": "a layer `BACKEND` cannot be imported (the closest known backend is "
    "suggested)",
    "geventchannels.E005": "a layer `CONFIG` or `TEST_CONFIG` has a key its backend does not take",
    "geventchannels.E006": "a layer `ROUTING` cannot be imported or is not a list of routes",
    "geventchannels.E007": "`CHANNEL_LAYERS` names a geventchannels backend but `geventchannels` "
    "is not in `INSTALLED_APPS`: Django's own runserver would serve without WebSockets or "
    "consumers",
    "geventchannels.W001": "a route listens on a `websocket.*` or `http.*` channel that is no "
    "ASGI 1.0 message type, so it never matches (the closest one is suggested)",
}

#: The channels the server sends to consumers (ASGI 1.0 message types).
PROTOCOL_CHANNELS = (
    "http.request",
    "http.disconnect",
    "websocket.connect",
    "websocket.receive",
    "websocket.disconnect",
)

#: Why --noworker needs a shared layer (runserver and serve say the same).
NOWORKER = "--noworker leaves the consumers to `runworker` processes"

_serving = False


def expect_serving(serving: bool = True) -> None:
    """Say that this process is about to serve (the check then requires the patch)."""
    global _serving
    _serving = serving


def is_serving() -> bool:
    return _serving


def _error(ident: str, message: str, hint: str | None = None) -> checks.Error:
    return checks.Error(message, hint=hint, id=f"geventchannels.{ident}")


def check_gevent_patched(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from .monkey import is_patched

    if not is_serving() or is_patched():
        return []
    return [
        _error(
            "E001",
            "this process serves with geventchannels but is not gevent-patched: every "
            "blocking call (socket, database, Redis) would freeze all connections.",
            "Call geventchannels.monkey.patch() before anything else: at the top of "
            "manage.py and of your wsgi.py (before Django is imported), or serve with "
            "`gunicorn -k geventchannels.gunicorn.Worker`.",
        )
    ]


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return [
        _error("E002", problem, "Fix or remove the key; docs/settings.md lists every setting.")
        for problem in conf.problems()
    ]


def check_channel_layers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """BACKEND, CONFIG and ROUTING of every configured alias."""
    from .asgi import channel_layers

    found: list[checks.CheckMessage] = []
    for alias, config in channel_layers.configs.items():
        found += layer_problems(alias, config)
    return found


def layer_problems(alias: str, config: Any, routing: bool = True) -> list[checks.CheckMessage]:
    """The errors and warnings of one CHANNEL_LAYERS entry (``routing=False``: all but its
    ROUTING, which is imported only to be checked)."""
    from .asgi import IN_MEMORY_BACKEND

    where = f"CHANNEL_LAYERS[{alias!r}]"
    if not isinstance(config, dict):
        return [
            _error(
                "E003",
                f"{where} must be a dict with BACKEND and ROUTING, not {type(config).__name__}",
            )
        ]
    missing = [key for key in ("BACKEND", "ROUTING") if key not in config]
    if missing:
        example = {"BACKEND": IN_MEMORY_BACKEND, "ROUTING": "myproject.routing.channel_routing"}
        return [
            _error(
                "E003",
                f"{where} has no {' and no '.join(missing)}.",
                "Add "
                + ", ".join(f'"{key}": "{example[key]}"' for key in missing)
                + " (or your own).",
            )
        ]
    found: list[checks.CheckMessage] = []
    layer_class = _backend_problems(alias, config["BACKEND"], found)
    if layer_class is not None:
        for key in ("CONFIG", "TEST_CONFIG"):
            _config_problems(alias, key, layer_class, config.get(key), found)
    if routing:
        _routing_problems(alias, config["ROUTING"], found)
    return found


def _backend_problems(alias: str, backend: Any, found: list) -> type | None:
    from django.utils.module_loading import import_string

    from .asgi import CHANNELS1_BACKENDS, IN_MEMORY_BACKEND, REDIS_BACKEND

    where = f"CHANNEL_LAYERS[{alias!r}]['BACKEND']"
    if not isinstance(backend, str):
        found.append(
            _error(
                "E004",
                f"{where} must be a dotted path, not {backend!r}.",
                f'Use "{IN_MEMORY_BACKEND}" or "{REDIS_BACKEND}".',
            )
        )
        return None
    try:
        return import_string(CHANNELS1_BACKENDS.get(backend, backend))
    except ImportError as error:
        known = [IN_MEMORY_BACKEND, REDIS_BACKEND, *CHANNELS1_BACKENDS]
        guess = conf.closest(backend, known)
        hint = (
            f"Did you mean {guess}?"
            if guess
            else (f'Use "{IN_MEMORY_BACKEND}" (one process) or "{REDIS_BACKEND}" (shared).')
        )
        found.append(_error("E004", f"{where} {backend!r} cannot be imported: {error}.", hint))
        return None


def _config_problems(alias: str, key: str, layer_class: type, options: Any, found: list) -> None:
    where = f"CHANNEL_LAYERS[{alias!r}][{key!r}]"
    if options is None:
        return
    if not isinstance(options, dict):
        found.append(
            _error(
                "E005",
                f"{where} must be a dict of {layer_class.__name__} "
                f"arguments, not {type(options).__name__}.",
            )
        )
        return
    accepted = _accepted_arguments(layer_class)
    if accepted is None:
        return
    for option in options:
        if option not in accepted:
            guess = conf.closest(str(option), accepted)
            found.append(
                _error(
                    "E005",
                    f"{where} has a key {option!r} that {layer_class.__name__} does not take.",
                    f"Did you mean {guess!r}?"
                    if guess
                    else f"{layer_class.__name__} takes: {', '.join(accepted)}.",
                )
            )


def _accepted_arguments(layer_class: type) -> list[str] | None:
    """The keyword arguments the layer's constructor takes, following ``**config`` that is
    handed to a base class; None when it takes any."""
    accepted: list[str] = []
    for klass in layer_class.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        parameters = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        accepted += [p.name for p in parameters if p.kind in named]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return accepted
    return None


def _routing_problems(alias: str, routing: Any, found: list) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from .routing import Include

    where = f"CHANNEL_LAYERS[{alias!r}]['ROUTING']"
    try:
        leaves = list(Include(routing).leaves())
    except SyntaxError as error:
        found.append(
            _error(
                "E006",
                f"cannot load {where}: a syntax error in {error.filename}, "
                f"line {error.lineno}: {error.msg}.",
            )
        )
        return
    except (ImproperlyConfigured, ImportError, ValueError, TypeError, AttributeError) as error:
        found.append(
            _error(
                "E006",
                f"cannot load {where}: {error}.",
                "Check the dotted path and the modules it names.",
            )
        )
        return
    found += route_warnings(channel for channel, _, _ in leaves)


def route_warnings(channels: Iterable[str]) -> list[checks.CheckMessage]:
    """W001 for protocol channel names that no server message ever goes to."""
    warnings: list[checks.CheckMessage] = []
    for channel in sorted(set(channels)):
        protocol = channel.partition(".")[0]
        if protocol in ("http", "websocket") and channel not in PROTOCOL_CHANNELS:
            guess = conf.closest(channel, PROTOCOL_CHANNELS)
            warnings.append(
                checks.Warning(
                    f"a route listens on {channel!r}, which is no ASGI message type: the "
                    "server never sends to it, so the route never matches.",
                    hint=f"Did you mean {guess!r}?"
                    if guess
                    else f"The {protocol} channels are: "
                    + ", ".join(c for c in PROTOCOL_CHANNELS if c.startswith(protocol)),
                    id="geventchannels.W001",
                )
            )
    return warnings


def check_app_installed(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E007: registered when geventchannels is imported by project code, so that it can fire
    even though the app (whose ready() registers the other checks) is missing."""
    error = app_missing_error()
    return [error] if error is not None else []


def app_missing_error() -> checks.Error | None:
    from django.apps import apps
    from django.conf import settings

    if not apps.ready or apps.is_installed("geventchannels"):
        return None
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    backends = [c.get("BACKEND", "") for c in layers.values() if isinstance(c, dict)]
    from .asgi import CHANNELS1_BACKENDS

    if not any(CHANNELS1_BACKENDS.get(b, b).startswith("geventchannels.") for b in backends):
        return None
    return _error(
        "E007",
        "CHANNEL_LAYERS uses a geventchannels layer but 'geventchannels' is not in "
        "INSTALLED_APPS: Django's own runserver serves without WebSockets, and messages sent "
        "to channels are never consumed.",
        "Add 'geventchannels' to INSTALLED_APPS, before 'django.contrib.staticfiles'.",
    )


_noticed = False


def notice_missing_app() -> None:
    """Called when project code imports geventchannels: register E007 (the app's ready(),
    which registers the other checks, never runs when the app is missing) and, since the
    import may come too late for the check run under way (URLconf imports happen during
    the checks), log the error at once."""
    global _noticed
    if _noticed:
        return
    from django.apps import apps
    from django.conf import settings

    if not settings.configured or not apps.ready:
        return
    _noticed = True
    checks.register(check_app_installed, "geventchannels")
    error = app_missing_error()
    if error is not None:
        import logging

        logging.getLogger("geventchannels").error("%s", one_line(error))


def register() -> None:
    """Register the checks (from the app's ready())."""
    for check in (check_gevent_patched, check_settings, check_channel_layers):
        checks.register(check, "geventchannels")


def startup_report(alias: str | None = None) -> tuple[list[str], list[str]]:
    """Run the checks of this package as a run mode does at start: ``(errors, warnings)``,
    one line each (``(geventchannels.E004) ... HINT: ...``); no errors means the process
    can serve. With ``alias``, that layer must be configured too."""
    from .asgi import channel_layers

    found: list[checks.CheckMessage] = []
    found += check_gevent_patched()
    found += check_settings()
    found += check_app_installed()
    configs = channel_layers.configs
    if alias is not None and alias not in configs:
        defined = ", ".join(map(repr, configs)) or "none"
        found.append(
            _error(
                "E003",
                f"no channel layer named {alias!r}: CHANNEL_LAYERS defines {defined}.",
                f"Add {alias!r} or use one of those.",
            )
        )
    for name, config in configs.items():
        found += layer_problems(name, config)
    silenced = _silenced()
    shown = [m for m in found if m.id not in silenced]
    return (
        [one_line(m) for m in shown if m.is_serious()],
        [one_line(m) for m in shown if not m.is_serious()],
    )


def unshared_layer_error(alias: str, why: str) -> str | None:
    """The error for a run mode that needs layer ``alias`` to reach other processes
    (``--noworker``, runworker), or None when it does."""
    from .asgi import channel_layers

    layer_class = channel_layers.backend_class(alias)
    if layer_class.crosses_processes:
        return None
    return (
        f"{why}, but channel layer {alias!r} is {layer_class.__name__}, which lives inside "
        f"one process: configure geventchannels.layers.RedisChannelLayer for {alias!r}, or "
        "run the consumers in the server process (runserver, serve and the gunicorn worker "
        "do without --noworker)"
    )


def _silenced() -> set[str]:
    from django.conf import settings

    return set(getattr(settings, "SILENCED_SYSTEM_CHECKS", ()))


def one_line(message: checks.CheckMessage) -> str:
    text = f"({message.id}) {message.msg}"
    return f"{text} HINT: {message.hint}" if message.hint else text
