"""compat.install(): the Channels 1.x module names, what it refuses, the .pth hook, and a
Channels 1.x project (tests/channels1_project) running its own tests and served by
``manage.py runserver``."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import websocket

from geventchannels import compat

from .conftest import free_port
from .runmodes.process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
PROJECT = Path(__file__).resolve().parent / "channels1_project"

#: The public names of Channels 1.1.8's modules (a list of names, not its code).
CHANNELS1_NAMES = {
    "channels": "Channel Group DEFAULT_CHANNEL_LAYER channel_layers include route route_class",
    "channels.routing": "Include Route RouteClass Router connect_consumer include null_consumer "
    "route route_class",
    "channels.sessions": "channel_and_http_session channel_session enforce_ordering "
    "http_session session_for_reply_channel",
    "channels.auth": "channel_and_http_session_user_from_http channel_session_user "
    "channel_session_user_from_http http_session_user transfer_user",
    "channels.generic": "BaseConsumer",
    "channels.generic.base": "BaseConsumer",
    "channels.generic.websockets": "JsonWebsocketConsumer WebsocketConsumer "
    "WebsocketDemultiplexer WebsocketMultiplexer",
    "channels.binding": "Binding",
    "channels.binding.base": "Binding BindingMetaclass CREATE DELETE UPDATE",
    "channels.binding.websockets": "WebsocketBinding WebsocketBindingWithMembers",
    "channels.test": "ChannelLiveServerTestCase ChannelTestCase Client HttpClient "
    "TransactionChannelTestCase WSClient apply_routes",
    "channels.test.http": "HttpClient",
    "channels.test.websocket": "WSClient",
    "channels.test.liveserver": "ChannelLiveServerTestCase",
    "channels.exceptions": "ChannelSocketException ConsumeLater DenyConnection RequestAborted "
    "RequestTimeout ResponseLater SendNotAvailableOnDemultiplexer WebsocketCloseException",
    "channels.signals": "consumer_finished consumer_started worker_process_ready worker_ready",
    "channels.security.websockets": "AllowedHostsOnlyOriginValidator BaseOriginValidator "
    "allowed_hosts_only",
    "channels.message": "Message PendingMessageStore pending_message_store",
    "channels.channel": "Channel Group",
    "channels.asgi": "ChannelLayerManager ChannelLayerWrapper InvalidChannelLayerError "
    "channel_layers get_channel_layer",
}

#: Names that are not there on purpose; each is listed, with why, in docs/compat.md.
DOCUMENTED_MISSING = {
    "channels.binding.base": {"BindingMetaclass"},
    "channels.message": {"PendingMessageStore", "pending_message_store"},
    "channels.asgi": {"InvalidChannelLayerError"},
}


@pytest.fixture
def aliases():
    compat.install()
    try:
        yield
    finally:
        compat.uninstall()


def test_aliases_are_the_geventchannels_modules_themselves(aliases):
    import channels
    import channels.generic.websockets
    import channels.routing
    from channels.exceptions import DenyConnection

    import geventchannels
    import geventchannels.exceptions
    import geventchannels.generic.websockets
    import geventchannels.routing

    assert channels is geventchannels
    assert channels.routing is geventchannels.routing
    assert channels.generic.websockets is geventchannels.generic.websockets
    assert DenyConnection is geventchannels.exceptions.DenyConnection
    # The module keeps its own name and spec (its file, for the autoreloader).
    assert channels.routing.__name__ == "geventchannels.routing"
    assert channels.routing.__spec__.origin.endswith("geventchannels/routing.py")


def test_every_aliased_module_exists():
    for target in compat.ALIASES.values():
        importlib.import_module(target)


@pytest.mark.parametrize("module", sorted(CHANNELS1_NAMES))
def test_the_names_of_channels_1x_are_there(aliases, module):
    found = importlib.import_module(module)
    missing = {name for name in CHANNELS1_NAMES[module].split() if not hasattr(found, name)}
    assert missing <= DOCUMENTED_MISSING.get(module, set()), missing


def test_documented_differences_are_in_the_docs():
    text = (ROOT / "docs" / "compat.md").read_text()
    for names in DOCUMENTED_MISSING.values():
        for name in names:
            assert name in text, name


def test_a_module_geventchannels_does_not_provide_is_refused(aliases):
    with pytest.raises(ModuleNotFoundError, match="channels.worker.*compat.ALIASES"):
        importlib.import_module("channels.worker")
    assert "channels.worker" not in sys.modules


def test_uninstall_removes_the_names(aliases):
    import channels  # noqa: F401

    compat.uninstall()
    assert "channels" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("channels")
    compat.install()
    compat.install()  # twice is harmless
    assert sys.meta_path.count(compat._finder) == 1


# -- in processes of their own -------------------------------------------------------------


def python(code: str, *, path: list[Path] = (), env: dict | None = None, cwd: Path = ROOT):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "C1_"))}
    environ.pop(compat.ENVIRONMENT_VARIABLE, None)
    environ["PYTHONPATH"] = os.pathsep.join([*map(str, path), str(ROOT)])
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def real_channels(tmp_path):
    """A folder with a package named channels, as an installed Channels would be."""
    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "__init__.py").write_text("REAL = True\n")
    return tmp_path


@pytest.mark.parametrize(
    "before, refusal, advice",
    [
        ("import channels", "the real Channels package is already imported", "first thing in"),
        ("", "a package named 'channels' is installed", "pip uninstall channels"),
    ],
)
def test_refuses_when_the_real_channels_could_be_used(real_channels, before, refusal, advice):
    run = python(
        f"{before}\nimport geventchannels.compat as c\n"
        "try:\n    c.install()\nexcept c.CompatError as e:\n    print('refused:', e)\n",
        path=[real_channels],
    )
    assert f"refused: {refusal}" in run.stdout, run.stderr
    assert advice in run.stdout


def test_installing_loads_neither_django_nor_gevent():
    run = python(
        "import sys, geventchannels.compat as c\n"
        "c.install()\n"
        "print(sorted(m for m in ('django', 'gevent') if m in sys.modules))\n"
    )
    assert run.stdout.strip() == "[]", run.stderr


def test_pth_hook_acts_only_with_the_environment_variable(tmp_path):
    (tmp_path / "geventchannels-compat.pth").write_text(
        "import geventchannels.compat; geventchannels.compat.install_from_environment()\n"
    )
    code = (
        "import site\n"
        f"site.addsitedir({str(tmp_path)!r})\n"
        "try:\n    import channels.routing\n    print('aliased', channels.__name__)\n"
        "except ModuleNotFoundError:\n    print('not aliased')\n"
    )
    assert python(code, env={compat.ENVIRONMENT_VARIABLE: "1"}).stdout.strip() == (
        "aliased geventchannels"
    )
    assert python(code).stdout.strip() == "not aliased"
    assert python(code, env={compat.ENVIRONMENT_VARIABLE: "0"}).stdout.strip() == "not aliased"


def manage(*arguments: str, env: dict | None = None, timeout: float = 120):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "C1_"))}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=PROJECT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_channels_in_installed_apps_is_geventchannels_app():
    run = manage(
        "shell",
        "-c",
        "from django.apps import apps\n"
        "from django.core.management import get_commands, load_command_class\n"
        "config = apps.get_app_config('geventchannels')\n"
        "command = load_command_class(get_commands()['runserver'], 'runserver')\n"
        "print('result', config.name, type(config).__module__, type(command).__module__)\n",
    )
    result = [line for line in run.stdout.splitlines() if line.startswith("result ")]
    assert result == [
        "result geventchannels geventchannels.apps geventchannels.management.commands.runserver"
    ], run.stdout + run.stderr


@pytest.mark.timeout(150)
def test_the_channels1_project_passes_its_own_tests():
    run = manage("test", "-v", "2")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Ran 9 tests" in output and "\nOK" in output, output


# -- served by manage.py runserver, with a real WebSocket client ------------------------------


def receive_json(ws: websocket.WebSocket):
    return json.loads(ws.recv())


@pytest.mark.redis
@pytest.mark.timeout(150)
def test_the_channels1_project_is_served_by_runserver(tmp_path, redis_server):
    env = {"C1_DATABASE": str(tmp_path / "db.sqlite3"), "C1_REDIS_PORT": str(redis_server.port)}
    redis_server.flushall()
    for arguments in (
        ("migrate", "--run-syncdb", "-v", "0"),
        (
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            "User.objects.create_user('ann', password='secret')",
        ),
    ):
        run = manage(*arguments, env=env)
        assert run.returncode == 0, run.stdout + run.stderr

    port = free_port()
    command = [sys.executable, str(PROJECT / "manage.py"), "runserver", "--noreload", str(port)]
    with ServerProcess(command, port, env=env) as server:
        server.wait_listening()
        base = f"http://127.0.0.1:{port}"
        ws_base = f"ws://127.0.0.1:{port}"
        origin = base

        # Log in through the site's own view (a POST with the CSRF token).
        with httpx.Client(base_url=base, timeout=10) as http:
            token = http.get("/login/").text
            answer = http.post(
                "/login/",
                data={"username": "ann", "password": "secret", "csrfmiddlewaretoken": token},
            )
            assert answer.text == "logged in", (answer.status_code, server.output)
            cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())

        # Function consumers with channel_session_user_from_http behind include().
        chat = websocket.create_connection(
            ws_base + "/chat/lobby/", header=[f"Cookie: {cookie}"], origin=origin, timeout=10
        )
        assert receive_json(chat) == {"joined": "ann"}
        chat.send("hello")
        assert receive_json(chat) == {"user": "ann", "text": "hello"}

        # allowed_hosts_only refuses another origin with 403.
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(ws_base + "/chat/lobby/", origin="http://evil.example")
        assert refused.value.status_code == 403

        # The generic consumer, with the HTTP user.
        echo = websocket.create_connection(
            ws_base + "/echo/", header=[f"Cookie: {cookie}"], origin=origin, timeout=10
        )
        echo.send(json.dumps({"n": 1}))
        assert receive_json(echo) == {"echo": {"n": 1}, "user": "ann"}

        # The binding: a note added over HTTP reaches the room's socket.
        notes = websocket.create_connection(
            ws_base + "/notes/lobby/", header=[f"Cookie: {cookie}"], origin=origin, timeout=10
        )
        assert httpx.post(base + "/notes/lobby/", data={"text": "from http"}).status_code == 201
        message = receive_json(notes)
        assert message["stream"] == "notes"
        assert (message["payload"]["action"], message["payload"]["data"]["text"]) == (
            "create",
            "from http",
        )
        for ws in (chat, echo, notes):
            ws.close()
        assert "Traceback" not in server.output, server.output
