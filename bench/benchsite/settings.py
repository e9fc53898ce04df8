"""One Django site for every system measured, so only the server and the stack differ.

BENCH_STACK picks the stack: ``django`` (plain WSGI), ``geventchannels`` or ``channels4``.
BENCH_LAYER is ``memory`` or ``redis`` (with BENCH_REDIS_URL); BENCH_DB is the SQLite file.
"""

import os

STACK = os.environ.get("BENCH_STACK", "django")
LAYER = os.environ.get("BENCH_LAYER", "memory")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchsite.urls"
WSGI_APPLICATION = "benchsite.wsgi.application"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DB", "/tmp/geventchannels-bench.sqlite3"),
    }
}
USE_TZ = True
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

if STACK == "geventchannels":
    INSTALLED_APPS.append("geventchannels")
    if LAYER == "redis":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "geventchannels.layers.RedisChannelLayer",
                # The delay workload's messages fall due thousands a second on one channel.
                "CONFIG": {"hosts": [REDIS_URL], "channel_capacity": {"bench.delayed": 20_000}},
                "ROUTING": "benchsite.gc_routing.channel_routing",
            }
        }
    else:
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "geventchannels.layers.InMemoryChannelLayer",
                "ROUTING": "benchsite.gc_routing.channel_routing",
            }
        }
elif STACK == "channels4":
    INSTALLED_APPS.append("channels")
    ASGI_APPLICATION = "benchsite.asgi.application"
    if LAYER == "redis":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [REDIS_URL]},
            }
        }
    else:
        CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
