"""Settings of the run-mode test project; environment variables pick the variant:

- ``RM_DEBUG=1``: DEBUG on (static files served by runserver).
- ``RM_REDIS_URL=redis://...``: RedisChannelLayer instead of the in-memory one.
- ``RM_STATICFILES_FIRST=1``: django.contrib.staticfiles listed before geventchannels.
- ``RM_ROUTING``: the ROUTING path (to test a missing routing module).
- ``RM_BACKEND``, ``RM_LAYER_CONFIG`` (JSON), ``RM_GEVENTCHANNELS`` (JSON, merged): to test
  misconfigurations.
"""

import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "runmodes-tests-only"
DEBUG = os.environ.get("RM_DEBUG") == "1"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "rmproject.urls"
WSGI_APPLICATION = "rmproject.wsgi.application"

_apps = ["django.contrib.staticfiles", "geventchannels"]
if os.environ.get("RM_STATICFILES_FIRST") != "1":
    _apps.reverse()
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", *_apps]

MIDDLEWARE = []
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]

_routing = os.environ.get("RM_ROUTING", "rmproject.routing.channel_routing")
if os.environ.get("RM_REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "geventchannels.layers.RedisChannelLayer",
            "ROUTING": _routing,
            "CONFIG": {"hosts": [os.environ["RM_REDIS_URL"]]},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "geventchannels.layers.InMemoryChannelLayer",
            "ROUTING": _routing,
        }
    }

if os.environ.get("RM_BACKEND"):
    CHANNEL_LAYERS["default"]["BACKEND"] = os.environ["RM_BACKEND"]
if os.environ.get("RM_LAYER_CONFIG"):
    CHANNEL_LAYERS["default"]["CONFIG"] = json.loads(os.environ["RM_LAYER_CONFIG"])

GEVENTCHANNELS = {
    "GRACEFUL_TIMEOUT": float(os.environ.get("RM_GRACEFUL_TIMEOUT", "5")),
    **json.loads(os.environ.get("RM_GEVENTCHANNELS", "{}")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
