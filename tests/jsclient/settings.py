"""The browser client's test site: the test project plus two pages and a multiplexed socket."""

from tests.project.settings import *  # noqa: F403

ROOT_URLCONF = "tests.jsclient.urls"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "geventchannels.layers.InMemoryChannelLayer",
        "ROUTING": "tests.jsclient.routing.channel_routing",
    }
}
# A stop (the restart test) waits for idle keep-alive connections, which Chromium keeps
# open after loading the page, until this timeout: 1 s instead of 5.
GEVENTCHANNELS = {"HTTP_KEEPALIVE_TIMEOUT": 1}
