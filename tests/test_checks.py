"""The system checks: each id fires on the mistake it names, with a hint, and only then."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from geventchannels.checks import CHECKS, check_channel_layers, check_settings, startup_report

IN_MEMORY = "geventchannels.layers.InMemoryChannelLayer"
ROUTING = "tests.project.routing.channel_routing"


def _layers(**entry):
    return {"default": {"BACKEND": IN_MEMORY, "ROUTING": ROUTING, **entry}}


def _ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_the_test_project_passes_every_check():
    assert check_channel_layers() == []
    assert check_settings() == []
    assert startup_report("default") == ([], [])


@override_settings(GEVENTCHANNELS={"WORKER_CONCURENCY": 10})
def test_e002_unknown_setting():
    (message,) = check_settings()
    assert message.id == "geventchannels.E002"
    assert "did you mean 'WORKER_CONCURRENCY'?" in message.msg


@pytest.mark.parametrize(
    "layers, text",
    [
        ({"default": "geventchannels.layers.InMemoryChannelLayer"}, "must be a dict"),
        ({"default": {"BACKEND": IN_MEMORY}}, "has no ROUTING"),
        ({"default": {"ROUTING": ROUTING}}, "has no BACKEND"),
    ],
)
def test_e003_malformed_entry(layers, text):
    with override_settings(CHANNEL_LAYERS=layers):
        (message,) = check_channel_layers()
    assert (message.id, text in message.msg) == ("geventchannels.E003", True)


def test_e003_the_alias_a_run_mode_serves_must_exist():
    errors, _ = startup_report("fast")
    assert errors == [
        "(geventchannels.E003) no channel layer named 'fast': CHANNEL_LAYERS defines "
        "'default'. HINT: Add 'fast' or use one of those."
    ]


@pytest.mark.parametrize(
    "backend, hint",
    [
        ("geventchannels.layers.InMemoryChanelLayer", IN_MEMORY),
        ("geventchannels.layers.RedisChanelLayer", "geventchannels.layers.RedisChannelLayer"),
        ("asgi_redis.RedisChanelLayer", "asgi_redis.RedisChannelLayer"),
    ],
)
def test_e004_a_misspelled_backend_suggests_the_closest(backend, hint):
    with override_settings(CHANNEL_LAYERS=_layers(BACKEND=backend)):
        (message,) = check_channel_layers()
    assert message.id == "geventchannels.E004"
    assert message.hint == f"Did you mean {hint}?"


def test_channels1_backend_names_are_accepted():
    with override_settings(CHANNEL_LAYERS=_layers(BACKEND="asgiref.inmemory.ChannelLayer")):
        assert check_channel_layers() == []


def test_e005_a_config_key_the_backend_does_not_take():
    with override_settings(CHANNEL_LAYERS=_layers(CONFIG={"capacityy": 10})):
        (message,) = check_channel_layers()
    assert message.id == "geventchannels.E005"
    assert "'capacityy'" in message.msg and message.hint == "Did you mean 'capacity'?"
    with override_settings(CHANNEL_LAYERS=_layers(TEST_CONFIG=[1])):
        assert _ids(check_channel_layers()) == ["geventchannels.E005"]


def test_e006_a_routing_that_cannot_be_imported():
    with override_settings(CHANNEL_LAYERS=_layers(ROUTING="tests.project.nowhere.routes")):
        (message,) = check_channel_layers()
    assert message.id == "geventchannels.E006"
    assert "cannot load CHANNEL_LAYERS['default']['ROUTING']" in message.msg


def test_w001_a_route_on_a_misspelled_protocol_channel():
    from geventchannels.routing import route

    def consumer(message):
        pass

    routes = [route("websocket.recieve", consumer), route("http.requests", consumer)]
    with override_settings(CHANNEL_LAYERS=_layers(ROUTING=routes)):
        found = check_channel_layers()
    assert _ids(found) == ["geventchannels.W001", "geventchannels.W001"]
    assert [m.hint for m in found] == [
        "Did you mean 'http.request'?",
        "Did you mean 'websocket.receive'?",
    ]
    assert all(m.level == checks.WARNING for m in found)
    with override_settings(CHANNEL_LAYERS=_layers(ROUTING=[route("tasks.send", consumer)])):
        assert check_channel_layers() == []


def test_checks_run_with_manage_py_check():
    with override_settings(GEVENTCHANNELS={"HTTP_TIMOUT": 1}):
        with pytest.raises(SystemCheckError) as raised:
            call_command("check")
    assert "(geventchannels.E002)" in str(raised.value)


def test_every_check_id_is_documented():
    from geventchannels.settings_page import markdown

    page = markdown()
    for ident in CHECKS:
        assert f"`{ident}`" in page


@pytest.mark.timeout(60)
def test_e007_the_app_missing_from_installed_apps(tmp_path):
    """Django's own runserver would serve such a project without WebSockets: the project's
    first import of geventchannels logs E007, and ``check`` reports it."""
    (tmp_path / "noapp").mkdir()
    (tmp_path / "noapp" / "__init__.py").write_text("")
    (tmp_path / "noapp" / "settings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "x"
            INSTALLED_APPS = ["django.contrib.staticfiles"]
            ROOT_URLCONF = "noapp.urls"
            STATIC_URL = "/static/"
            CHANNEL_LAYERS = {{"default": {{"BACKEND": "{IN_MEMORY}", "ROUTING": []}}}}
            """
        )
    )
    (tmp_path / "noapp" / "urls.py").write_text(
        "from geventchannels import Channel\nurlpatterns = []\n"
    )
    script = (
        "import django; django.setup(); import noapp.urls; "
        "from django.core.management import call_command; call_command('check')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"DJANGO_SETTINGS_MODULE": "noapp.settings", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=50,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert output.count("geventchannels.E007") >= 2, output  # logged at import, then checked
    assert "Add 'geventchannels' to INSTALLED_APPS" in output
