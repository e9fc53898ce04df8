"""geventchannels' own settings, each declared once: one ``GEVENTCHANNELS`` dict in Django
settings, and the same names as command-line options of the run modes.

A project sets only what it changes::

    GEVENTCHANNELS = {"WEBSOCKET_HANDSHAKE_TIMEOUT": 10, "WORKER_CONCURRENCY": 100}

Every setting below has its type, default, validation, help text and the run modes whose
command line offers it (``--websocket-handshake-timeout 10``; the Channels 1.x spelling is
kept as an alias where one existed). Read a value through :func:`get`; command-line values
arrive as ``overrides``. ``docs/settings.md`` is generated from this table
(``python -m geventchannels.conf``) and a test keeps it up to date.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The run modes whose command line can carry settings.
RUNSERVER: str = "runserver"
SERVE: str = "serve"
RUNWORKER: str = "runworker"
SERVING = frozenset({RUNSERVER, SERVE})
CONSUMING = frozenset({RUNSERVER, SERVE, RUNWORKER})


class SettingError(ValueError):
    """A GEVENTCHANNELS key or value that cannot be used; the message says what to write."""


# -- validators: each takes the raw value and returns the clean one or raises ValueError ----


def _whole(value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, str):
        value = value.strip().replace("_", "")
        if not value.isdigit():
            raise ValueError
    number = int(value)
    if number != value and not isinstance(value, str) or number < minimum:
        raise ValueError
    return number


def positive_int(value: Any) -> int:
    return _whole(value, 1)


positive_int.expects = "a whole number of at least 1"  # type: ignore[attr-defined]


def whole_or_off(value: Any) -> int:
    return _whole(value, 0)


whole_or_off.expects = "a whole number, or 0 to turn it off"  # type: ignore[attr-defined]


def _seconds(value: Any, zero_allowed: bool) -> float:
    if isinstance(value, bool):
        raise ValueError
    number = float(value)
    if not (number >= 0 if zero_allowed else number > 0) or number == float("inf"):
        raise ValueError
    return number


def seconds(value: Any) -> float:
    return _seconds(value, zero_allowed=False)


seconds.expects = "a number of seconds greater than 0"  # type: ignore[attr-defined]


def seconds_or_off(value: Any) -> float:
    return _seconds(value, zero_allowed=True)


seconds_or_off.expects = "a number of seconds, or 0 to turn it off"  # type: ignore[attr-defined]


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
        return False
    raise ValueError


boolean.expects = "True or False"  # type: ignore[attr-defined]


def host_patterns_or_none(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError
    return [pattern.strip().lower() for pattern in value if pattern.strip()]


host_patterns_or_none.expects = (  # type: ignore[attr-defined]
    "a list of host patterns as in ALLOWED_HOSTS, or None"
)


@dataclass(frozen=True)
class Setting:
    """One setting: its ``GEVENTCHANNELS`` key, default, validator and help; ``modes`` are the
    run modes whose command line offers it as ``--kebab-case-name``."""

    name: str
    section: str
    default: Any
    validate: Callable[[Any], Any]
    help: str
    modes: frozenset[str] = frozenset()
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.lower().replace("_", "-")

    @property
    def dest(self) -> str:
        return self.name.lower()

    @property
    def expects(self) -> str:
        return getattr(self.validate, "expects", "a valid value")

    def clean(self, value: Any, where: str) -> Any:
        """The validated value; ``where`` names its origin for the error message."""
        try:
            return self.validate(value)
        except (TypeError, ValueError, OverflowError):
            raise SettingError(f"{where} must be {self.expects}, not {value!r}") from None


SETTINGS: tuple[Setting, ...] = (
    # Consumer pool
    Setting(
        "WORKER_CONCURRENCY",
        "Consumer pool",
        50,
        positive_int,
        "Consumer greenlets in this process: how many consumers run at once.",
        CONSUMING,
    ),
    Setting(
        "ORDERED_DISPATCH",
        "Consumer pool",
        True,
        boolean,
        "Messages sharing a reply_channel are consumed one at a time, in the order they came.",
        CONSUMING,
    ),
    Setting(
        "CONSUME_LATER_LIMIT",
        "Consumer pool",
        100,
        positive_int,
        "Times one message may be put back by ConsumeLater before it is dropped (logged).",
        CONSUMING,
    ),
    Setting(
        "WORKER_FULL_WARNING",
        "Consumer pool",
        5.0,
        seconds_or_off,
        "Seconds every consumer greenlet may stay busy before a warning names the running "
        "consumers (repeated at most once per as many seconds); 0 turns it off.",
        CONSUMING,
    ),
    Setting(
        "CONSUMER_TIMEOUT",
        "Consumer pool",
        60.0,
        seconds_or_off,
        "Seconds a consumer may run; then it is stopped where it waits, logged with its stack, "
        "and its message fails (see worker.md); 0 turns it off.",
        CONSUMING,
    ),
    Setting(
        "BLOCKED_LOOP_WARNING",
        "Consumer pool",
        1.0,
        seconds_or_off,
        "Seconds the event loop may be blocked (a consumer that never yields) before a "
        "warning names the consumer and its stack; 0 turns it off.",
        CONSUMING,
    ),
    # HTTP
    Setting(
        "HTTP_TIMEOUT",
        "HTTP",
        120.0,
        seconds,
        "Seconds a routed http.request may wait for its response; then the client gets 503.",
        SERVING,
        aliases=("--http_timeout",),
    ),
    Setting(
        "PROXY_HEADERS",
        "HTTP",
        False,
        boolean,
        "Trust X-Forwarded-For, -Proto and -Port from the client: turn on only behind a "
        "proxy that sets them.",
        SERVING,
    ),
    Setting(
        "MAX_CONNECTIONS",
        "HTTP",
        20_000,
        positive_int,
        "Open sockets per process (under gunicorn, its --worker-connections). A new one "
        "above it takes the slot of the connection that has waited longest for a request "
        "head; when none waits, it gets 503 and is closed.",
        SERVING,
    ),
    Setting(
        "HTTP_HEAD_TIMEOUT",
        "HTTP",
        10.0,
        seconds,
        "Seconds a request head may take to arrive: from the accept for the first request, "
        "from its first byte for a keep-alive one. Then 408 and the connection is closed.",
        SERVING,
    ),
    Setting(
        "HTTP_KEEPALIVE_TIMEOUT",
        "HTTP",
        5.0,
        seconds,
        "Seconds an idle keep-alive connection may wait for its next request; then it is closed.",
        SERVING,
    ),
    Setting(
        "HTTP_MAX_HEAD_SIZE",
        "HTTP",
        65_536,
        positive_int,
        "Bytes of one request head (request line, headers, the empty line); a larger one "
        "gets 431. Also bounds a chunked body's trailer section.",
        SERVING,
    ),
    Setting(
        "HTTP_BODY_TIMEOUT",
        "HTTP",
        30.0,
        seconds,
        "Seconds a request body being read may go without a byte arriving; then the read "
        "fails, the client gets 408 if no response started, and the connection is closed.",
        SERVING,
    ),
    Setting(
        "HTTP_BODY_MIN_RATE",
        "HTTP",
        500,
        whole_or_off,
        "Bytes per second a request body must average once it has kept the server waiting "
        "HTTP_BODY_TIMEOUT seconds in all; slower ones end like a timeout. 0 turns it off.",
        SERVING,
    ),
    # WebSocket
    Setting(
        "WEBSOCKET_HANDSHAKE_TIMEOUT",
        "WebSocket",
        5.0,
        seconds,
        "Seconds the websocket.connect consumer may take to accept or reject; then 403 (503 "
        "if no consumer was free to take it).",
        SERVING,
        aliases=("--websocket_handshake_timeout",),
    ),
    Setting(
        "WEBSOCKET_MAX_MESSAGE_SIZE",
        "WebSocket",
        1_048_576,
        positive_int,
        "Bytes of payload in one incoming message (all its frames); larger ones close with "
        "1009. The default accepts exactly 1 MiB.",
        SERVING,
    ),
    Setting(
        "WEBSOCKET_MAX_FRAME_SIZE",
        "WebSocket",
        1_048_576,
        positive_int,
        "Bytes of payload in one incoming frame; larger frames close with 1009.",
        SERVING,
    ),
    Setting(
        "WEBSOCKET_OUTBOUND_QUEUE",
        "WebSocket",
        1024,
        positive_int,
        "Messages that may wait for a client that reads slowly; one more drops it (the "
        "consumer sees websocket.disconnect with 1008).",
        SERVING,
    ),
    Setting(
        "WEBSOCKET_OUTBOUND_BYTES",
        "WebSocket",
        4_194_304,
        positive_int,
        "Bytes of frames that may wait for one client that reads slowly (4 MiB); more drop "
        "it with 1008. Keep it above the largest message sent.",
        SERVING,
    ),
    Setting(
        "WEBSOCKET_OUTBOUND_TOTAL",
        "WebSocket",
        268_435_456,
        positive_int,
        "Bytes of frames waiting for all slow clients of the process together (256 MiB); "
        "above it the clients holding the most are dropped with 1008.",
        SERVING,
    ),
    Setting(
        "WEBSOCKET_PING_INTERVAL",
        "WebSocket",
        20.0,
        seconds_or_off,
        "Seconds of silence from a client before the server pings it; 0 turns pings off.",
        SERVING,
    ),
    Setting(
        "WEBSOCKET_PING_TIMEOUT",
        "WebSocket",
        20.0,
        seconds,
        "Seconds to wait for the pong before the connection is closed with 1011.",
        SERVING,
    ),
    Setting(
        "WEBSOCKET_COMPRESSION",
        "WebSocket",
        True,
        boolean,
        "Negotiate permessage-deflate (RFC 7692) with clients that offer it.",
        SERVING,
    ),
    Setting(
        "WEBSOCKET_ALLOWED_ORIGINS",
        "WebSocket",
        None,
        host_patterns_or_none,
        "Hosts a handshake's Origin may name, with ALLOWED_HOSTS' rules ('*' any, "
        "'.example.com' a domain and its subdomains, 'null' the null origin); None uses "
        "ALLOWED_HOSTS, or the same-origin rule when ALLOWED_HOSTS is '*'. A foreign Origin "
        "gets 403; no Origin at all is allowed.",
    ),
    Setting(
        "WEBSOCKET_CHECK_HOST",
        "WebSocket",
        True,
        boolean,
        "Answer 403 to a handshake whose Host is not in ALLOWED_HOSTS, as Django does for HTTP.",
        SERVING,
    ),
    # Groups
    Setting(
        "GROUP_LEASE_TIMEOUT",
        "Groups",
        15.0,
        seconds,
        "On Redis, seconds within which the group memberships and presence of a process "
        "that died are purged by the others: its lease lasts 2/3 of it and every process "
        "renews its own, and looks for expired ones, every 1/6 of it (see "
        "groups-and-presence.md). Use the same value in every process.",
    ),
    # Shutdown
    Setting(
        "GRACEFUL_TIMEOUT",
        "Shutdown",
        10.0,
        seconds_or_off,
        "Seconds in-flight requests and running consumers get to finish on stop (under "
        "gunicorn, its own --graceful-timeout applies instead).",
        CONSUMING,
    ),
    # Delayed messages
    Setting(
        "DELAY_SERVICE",
        "Delayed messages",
        True,
        boolean,
        "Deliver the messages sent to asgi.delay in every process that runs consumers; "
        "turn it off when dedicated manage.py rundelay processes do it (see delay.md).",
        CONSUMING,
    ),
)

BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}
DEFAULTS: dict[str, Any] = {setting.name: setting.default for setting in SETTINGS}


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name a misspelled ``name`` most likely meant, or None."""
    known = list(known)
    matches = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not matches:
        upper = {k.upper(): k for k in known}
        matches = difflib.get_close_matches(name.upper(), list(upper), n=1, cutoff=0.6)
        matches = [upper[m] for m in matches]
    return matches[0] if matches else None


def unknown_key_message(key: Any) -> str:
    guess = closest(str(key), BY_NAME)
    advice = f"did you mean {guess!r}?" if guess else "the settings are listed in docs/settings.md"
    return f"GEVENTCHANNELS has an unknown key {key!r}: {advice}"


def project_settings() -> Mapping[str, Any]:
    """The project's ``GEVENTCHANNELS`` dict (empty when unset or Django is unconfigured)."""
    from django.conf import settings

    if not settings.configured:
        return {}
    project = getattr(settings, "GEVENTCHANNELS", None)
    if project is None:
        return {}
    if not isinstance(project, Mapping):
        raise SettingError(
            f"settings.GEVENTCHANNELS must be a dict of setting names to values, not "
            f"{type(project).__name__}"
        )
    return project


def problems() -> list[str]:
    """Every problem in the project's GEVENTCHANNELS, one message each (the system checks
    report them)."""
    try:
        project = project_settings()
    except SettingError as error:
        return [str(error)]
    messages = []
    for key, value in project.items():
        setting = BY_NAME.get(key)
        if setting is None:
            messages.append(unknown_key_message(key))
            continue
        try:
            setting.clean(value, f"GEVENTCHANNELS[{key!r}]")
        except SettingError as error:
            messages.append(str(error))
    return messages


def get(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The value of setting ``name``: an override if given and not None (a command-line
    option), else the project's ``GEVENTCHANNELS`` entry, else the default; always
    validated."""
    setting = BY_NAME.get(name)
    if setting is None:
        raise KeyError(unknown_key_message(name))
    if overrides and overrides.get(name) is not None:
        return setting.clean(overrides[name], f"the {setting.flag} option")
    project = project_settings()
    if name in project:
        return setting.clean(project[name], f"GEVENTCHANNELS[{name!r}]")
    return setting.default


# -- the command line --------------------------------------------------------------------


def _argument_type(setting: Setting) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return setting.validate(text)
        except (TypeError, ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {setting.expects}") from None

    parse.__name__ = setting.dest
    return parse


def add_arguments(parser: argparse.ArgumentParser, mode: str) -> None:
    """Add the options of every setting that run mode ``mode`` offers (default None: the
    setting then comes from GEVENTCHANNELS)."""
    group = parser.add_argument_group("geventchannels settings (override GEVENTCHANNELS)")
    for setting in SETTINGS:
        if mode not in setting.modes:
            continue
        flags = [setting.flag, *setting.aliases]
        help_text = f"{setting.help} Default: {shown(setting.default)}."
        if setting.validate is boolean:
            group.add_argument(
                *flags,
                dest=setting.dest,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            metavar = "SECONDS" if "seconds" in setting.expects else "N"
            group.add_argument(
                *flags,
                dest=setting.dest,
                default=None,
                metavar=metavar,
                type=_argument_type(setting),
                help=help_text,
            )


def overrides_from(options: Mapping[str, Any] | argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (``{"HTTP_TIMEOUT": 30.0}``), from parsed
    options."""
    values = vars(options) if isinstance(options, argparse.Namespace) else options
    return {
        setting.name: values[setting.dest]
        for setting in SETTINGS
        if values.get(setting.dest) is not None
    }


# -- values in help texts and docs ------------------------------------------------------


def shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"{value:_}"
    return repr(value) if isinstance(value, str) else str(value)


if __name__ == "__main__":
    import sys

    from .settings_page import markdown

    sys.stdout.write(markdown())
