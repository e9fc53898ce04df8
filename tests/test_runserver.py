"""manage.py runserver: address forms, the patched autoreload child, static files,
WebSocket echo, the INSTALLED_APPS order, and clear errors for misconfiguration."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest
from django.core.management.base import CommandError

from geventchannels.management import bootstrap
from geventchannels.management.commands.runserver import Command
from geventchannels.runner import AddressError, bind, parse_bind

from .conftest import free_port
from .runmodes.process import (
    HERE,
    PYTHON,
    ServerProcess,
    check_graceful_stop,
    http_get,
    http_json,
    manage,
    ws_close_code,
    ws_connect,
    ws_echo,
)

# -- address forms ------------------------------------------------------------------


class ParsedAddress(Command):
    """runserver without running: handle() parses the address, run() records it."""

    def run(self, **options):
        self.parsed = (self.addr, self.port, self.use_ipv6, self._raw_ipv6)


def parse_runserver(*arguments: str):
    command = ParsedAddress()
    parser = command.create_parser("manage.py", "runserver")
    options = vars(parser.parse_args(list(arguments)))
    command.handle(**options)
    return command.parsed


@pytest.mark.parametrize(
    "arguments, expected",
    [
        ((), ("127.0.0.1", "8000", False, False)),
        (("8080",), ("127.0.0.1", "8080", False, False)),
        (("0.0.0.0:9000",), ("0.0.0.0", "9000", False, False)),
        (("0:9000",), ("0", "9000", False, False)),
        (("localhost:9001",), ("localhost", "9001", False, False)),
        (("[::1]:9002",), ("::1", "9002", True, True)),
        (("--ipv6",), ("::1", "8000", True, True)),
        (("-6", "9003"), ("::1", "9003", True, True)),
        (("--ipv6", "example.com:9004"), ("example.com", "9004", True, False)),
    ],
)
def test_runserver_accepts_djangos_address_forms(arguments, expected):
    assert parse_runserver(*arguments) == expected


@pytest.mark.parametrize("addrport", ["abc:", "127.0.0.1:", "1.2.3.4:port", ":8000"])
def test_runserver_rejects_bad_addresses_with_a_command_error(addrport):
    with pytest.raises(CommandError, match="not a valid port number"):
        parse_runserver(addrport)


def test_runserver_accepts_its_own_options():
    command = Command()
    parser = command.create_parser("manage.py", "runserver")
    options = parser.parse_args(
        [
            "--noreload",
            "--nothreading",
            "--noworker",
            "--insecure",
            "--nostatic",
            "--http_timeout",
            "7",
            "--websocket_handshake_timeout",
            "3",
            "8001",
        ]
    )
    assert (options.use_reloader, options.use_threading, options.run_worker) == (
        False,
        False,
        False,
    )
    assert (options.insecure_serving, options.use_static_handler) == (True, False)
    assert (options.http_timeout, options.websocket_handshake_timeout) == (7.0, 3.0)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8000", ("127.0.0.1", 8000)),
        (":8001", ("127.0.0.1", 8001)),
        ("0.0.0.0:8002", ("0.0.0.0", 8002)),
        ("*:8003", ("0.0.0.0", 8003)),
        ("localhost:8004", ("localhost", 8004)),
        ("[::1]:8005", ("::1", 8005)),
        ("[::]:8006", ("::", 8006)),
    ],
)
def test_bind_addresses_of_the_console_command(text, expected):
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["", "host", "1.2.3.4:", "[::1]", "a b:80", "70000"])
def test_bad_bind_addresses_say_what_to_write(text):
    with pytest.raises(AddressError, match="PORT|out of range"):
        parse_bind(text)


def test_a_port_in_use_is_reported_in_words():
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(AddressError, match="already in use"):
            bind("127.0.0.1", port)
    finally:
        taken.close()


def test_bind_listens_on_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        listener = bind("::1", 0)
    except AddressError:
        pytest.skip("no IPv6 loopback on this machine")
    with listener:
        assert listener.family == socket.AF_INET6


# -- the patched child's command line --------------------------------------------------


@pytest.mark.parametrize(
    "original, patched",
    [
        (
            ["py", "manage.py", "runserver"],
            ["py", "-m", bootstrap.MODULE, "manage.py", "runserver"],
        ),
        (
            ["py", "-Wd", "-Xdev", "manage.py", "runserver", "-6"],
            ["py", "-Wd", "-Xdev", "-m", bootstrap.MODULE, "manage.py", "runserver", "-6"],
        ),
        (
            ["py", "-m", "django", "runserver"],
            ["py", "-m", bootstrap.MODULE, "-m", "django", "runserver"],
        ),
        (["py", "-m", bootstrap.MODULE, "manage.py"], ["py", "-m", bootstrap.MODULE, "manage.py"]),
    ],
)
def test_child_arguments_run_the_program_through_the_bootstrap(original, patched):
    assert bootstrap.patched_arguments(original) == patched


def test_the_bootstrap_patches_before_the_program_imports_anything(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\n"
        "from gevent import monkey\n"
        "print(monkey.is_module_patched('socket'), 'django' in sys.modules, sys.argv[1:])\n"
    )
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", bootstrap.MODULE, str(script), "a", "--b"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True False ['a', '--b']"


# -- real processes --------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_runserver_with_autoreload_serves_http_websockets_and_static_files_patched():
    port = free_port()
    with ServerProcess(manage("runserver", f"127.0.0.1:{port}"), port, {"RM_DEBUG": "1"}) as server:
        server.wait_listening()
        status, body = http_get(port, "/hello/")
        assert status == 200 and body.startswith(b"hello from ")
        first = http_json(port, "/patched/")
        assert first["socket"] and first["threading"], first
        assert first["pid"] != server.pid  # served by the autoreload child
        assert http_get(port, "/static/hello.txt") == (200, b"static file content\n")
        ws = ws_connect(port)
        assert ws_echo(ws, "ping")["consumer_pid"] == first["pid"]
        assert "Starting geventchannels development server" in server.output

        # A changed Python file restarts the child; the new child is patched too. A change
        # made before the reloader's first look at the file goes unnoticed, so the file is
        # touched again while the old child keeps answering -- never once it is gone, or
        # the new child could see the change and restart once more.
        watched = HERE / "rmproject" / "urls.py"
        last_touch = [0.0]

        def new_child():
            try:
                info = http_json(port, "/patched/")
            except (OSError, AssertionError, ValueError):
                return None
            if info["pid"] != first["pid"]:
                return info
            if time.monotonic() - last_touch[0] > 1.0:
                last_touch[0] = time.monotonic()
                stamp = max(time.time(), watched.stat().st_mtime) + 1
                os.utime(watched, (stamp, stamp))
            return None

        second = server.wait_until(new_child, what="a restarted child")
        assert second["socket"] and second["threading"], second
        assert ws_close_code(ws) == 1012  # the old child told its sockets: service restart

        # SIGTERM to the supervising parent reaches the child, which stops gracefully.
        check_graceful_stop(server, port)


@pytest.mark.timeout(60)
def test_runserver_noreload_without_debug_serves_no_static_files_but_insecure_does():
    port = free_port()
    with ServerProcess(manage("runserver", str(port), "--noreload"), port) as server:
        server.wait_listening()
        assert http_get(port, "/static/hello.txt")[0] == 404
        assert http_json(port, "/patched/")["pid"] == server.pid  # re-executed in place
        assert server.stop() == 0
    port = free_port()
    # staticfiles listed before geventchannels: runserver is still ours (WebSockets work).
    # Started patched already (as `python -m gevent.monkey manage.py ...` would): no re-exec.
    command = [
        PYTHON,
        "-m",
        bootstrap.MODULE,
        "manage.py",
        "runserver",
        str(port),
        "--noreload",
        "--insecure",
    ]
    with ServerProcess(command, port, {"RM_STATICFILES_FIRST": "1"}) as server:
        server.wait_listening()
        assert http_get(port, "/static/hello.txt") == (200, b"static file content\n")
        ws = ws_connect(port)
        assert ws_echo(ws, "order")["consumer_pid"] == server.pid
        ws.close()
        assert server.stop() == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "arguments, env, message",
    [
        (("runserver", "not-a-port"), {}, "is not a valid port number"),
        (("runserver", "{port}"), {}, "already in use"),
        (
            ("runserver", "0"),
            {"RM_ROUTING": "rmproject.missing.channel_routing"},
            "(geventchannels.E006) cannot load CHANNEL_LAYERS['default']['ROUTING']",
        ),
        (("runserver", "0", "--noworker"), {}, "which lives inside one process"),
    ],
)
def test_misconfiguration_is_one_clear_message(arguments, env, message):
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        arguments = [a.format(port=port) for a in arguments]
        with ServerProcess(manage(*arguments), None, env) as server:
            assert server.exit_code(40) == 1
            assert message in server.output
            assert "Traceback" not in server.output
    finally:
        taken.close()
