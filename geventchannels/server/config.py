"""The server's settings (declared in geventchannels.conf), read once when the server is built.

Every limit the connection code checks on its hot path is a plain attribute here, so
reading one costs an attribute lookup, not a settings lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import conf


@dataclass
class ServerConfig:
    http_timeout: float = conf.DEFAULTS["HTTP_TIMEOUT"]
    proxy_headers: bool = conf.DEFAULTS["PROXY_HEADERS"]
    max_connections: int = conf.DEFAULTS["MAX_CONNECTIONS"]
    http_head_timeout: float = conf.DEFAULTS["HTTP_HEAD_TIMEOUT"]
    http_keepalive_timeout: float = conf.DEFAULTS["HTTP_KEEPALIVE_TIMEOUT"]
    http_max_head_size: int = conf.DEFAULTS["HTTP_MAX_HEAD_SIZE"]
    http_body_timeout: float = conf.DEFAULTS["HTTP_BODY_TIMEOUT"]
    http_body_min_rate: int = conf.DEFAULTS["HTTP_BODY_MIN_RATE"]
    websocket_handshake_timeout: float = conf.DEFAULTS["WEBSOCKET_HANDSHAKE_TIMEOUT"]
    websocket_max_message_size: int = conf.DEFAULTS["WEBSOCKET_MAX_MESSAGE_SIZE"]
    websocket_max_frame_size: int = conf.DEFAULTS["WEBSOCKET_MAX_FRAME_SIZE"]
    websocket_outbound_queue: int = conf.DEFAULTS["WEBSOCKET_OUTBOUND_QUEUE"]
    websocket_ping_interval: float = conf.DEFAULTS["WEBSOCKET_PING_INTERVAL"]
    websocket_ping_timeout: float = conf.DEFAULTS["WEBSOCKET_PING_TIMEOUT"]
    websocket_outbound_bytes: int = conf.DEFAULTS["WEBSOCKET_OUTBOUND_BYTES"]
    websocket_outbound_total: int = conf.DEFAULTS["WEBSOCKET_OUTBOUND_TOTAL"]
    websocket_compression: bool = conf.DEFAULTS["WEBSOCKET_COMPRESSION"]
    websocket_allowed_origins: list[str] | None = conf.DEFAULTS["WEBSOCKET_ALLOWED_ORIGINS"]
    websocket_check_host: bool = conf.DEFAULTS["WEBSOCKET_CHECK_HOST"]
    graceful_timeout: float = conf.DEFAULTS["GRACEFUL_TIMEOUT"]
    #: Django's DATA_UPLOAD_MAX_MEMORY_SIZE: the largest body a routed request may carry.
    max_body_size: int | None = 2621440
    #: Django's FORCE_SCRIPT_NAME, sent as ``root_path``.
    root_path: str = ""
    #: Django's CHANNELS_WS_PROTOCOLS: subprotocols offered when the consumer names none.
    ws_protocols: list[str] = field(default_factory=list)
    #: Django's ALLOWED_HOSTS (with DEBUG and none, the local hosts Django allows then).
    allowed_hosts: list[str] = field(default_factory=lambda: ["*"])
    #: Django's USE_X_FORWARDED_HOST: the host checked is X-Forwarded-Host when present.
    use_x_forwarded_host: bool = False

    @classmethod
    def from_settings(cls, overrides: dict[str, Any] | None = None) -> ServerConfig:
        """Read the GEVENTCHANNELS settings (``overrides`` win, e.g. command-line options;
        keys are the setting names, upper or lower case) and the Django settings the
        server honours."""
        overrides = {k.upper(): v for k, v in (overrides or {}).items()}
        unknown = [key for key in overrides if key not in conf.BY_NAME]
        if unknown:
            raise KeyError(conf.unknown_key_message(unknown[0]))
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name.upper() in conf.BY_NAME:
                values[name] = conf.get(name.upper(), overrides)
        from django.conf import settings

        if settings.configured:
            from ..security.websockets import allowed_hosts

            values["max_body_size"] = getattr(settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", 2621440)
            values["root_path"] = getattr(settings, "FORCE_SCRIPT_NAME", None) or ""
            values["ws_protocols"] = list(getattr(settings, "CHANNELS_WS_PROTOCOLS", None) or [])
            values["allowed_hosts"] = allowed_hosts()
            values["use_x_forwarded_host"] = bool(getattr(settings, "USE_X_FORWARDED_HOST", False))
        return cls(**values)
