"""A chat room on Redis for tests/test_groups_workers.py: every socket joins the group
"room" and the presence "room" (events on "room.events", which nothing here consumes: the
test reads them). There is no websocket.disconnect consumer: the server alone takes closed
sockets out. ``GP_REDIS_URL`` names the Redis, ``GP_GEVENTCHANNELS`` (JSON) adds settings.
"""

import json
import os

SECRET_KEY = "groups-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "groupsproject.urls"
WSGI_APPLICATION = "groupsproject.wsgi.application"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "geventchannels"]
MIDDLEWARE = []
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "geventchannels.layers.RedisChannelLayer",
        "ROUTING": "groupsproject.routing.channel_routing",
        "CONFIG": {
            "hosts": [os.environ["GP_REDIS_URL"]],
            "channel_capacity": {"room.events": 5000},
        },
    }
}
GEVENTCHANNELS = {"GRACEFUL_TIMEOUT": 5, **json.loads(os.environ.get("GP_GEVENTCHANNELS", "{}"))}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "geventchannels.worker": {"level": "INFO"},
        "geventchannels.groups": {"level": "INFO"},
    },
}
