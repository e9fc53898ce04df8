"""ASGI entry for the Channels 4 anchors (daphne, uvicorn)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from benchsite import channels4_consumers as consumers  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                path("poll/", consumers.Park.as_asgi()),
                path("poll-count/", consumers.PollCount.as_asgi()),
                path("fire/", consumers.Fire.as_asgi()),
                re_path(r"", django_application),
            ]
        ),
        "websocket": URLRouter(
            [
                path("echo/", consumers.Echo.as_asgi()),
                path("echo-auth/", AuthMiddlewareStack(consumers.EchoUser.as_asgi())),
                path("broadcast/", consumers.Member.as_asgi()),
                path("send/", consumers.Sender.as_asgi()),
                path("idle/", consumers.Idle.as_asgi()),
            ]
        ),
    }
)
