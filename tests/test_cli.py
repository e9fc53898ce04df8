"""The ``geventchannels serve`` console command and ``manage.py runworker``."""

from __future__ import annotations

import signal

import pytest

from geventchannels.cli import build_parser
from geventchannels.management import bootstrap

from .conftest import free_port
from .runmodes.process import (
    BIN,
    PYTHON,
    ServerProcess,
    http_json,
    manage,
    ws_connect,
    ws_echo,
)


def test_serve_options_parse():
    options = build_parser().parse_args(
        [
            "serve",
            "proj.wsgi:app",
            "-b",
            "[::1]:9000",
            "--settings",
            "proj.settings",
            "--worker-concurrency",
            "20",
            "--noworker",
            "--http-timeout",
            "30",
            "--websocket-handshake-timeout",
            "4",
            "--graceful-timeout",
            "2",
        ]
    )
    assert (options.wsgi, options.bind, options.settings) == (
        "proj.wsgi:app",
        "[::1]:9000",
        "proj.settings",
    )
    assert (options.worker_concurrency, options.run_worker) == (20, False)
    assert (
        options.http_timeout,
        options.websocket_handshake_timeout,
        options.graceful_timeout,
    ) == (30, 4, 2)


@pytest.mark.timeout(60)
def test_python_m_geventchannels_serve_answers_patched_and_stops_on_sigint():
    port = free_port()
    command = [
        PYTHON,
        "-m",
        "geventchannels",
        "serve",
        "rmproject.wsgi",
        "--bind",
        str(port),
        "--settings",
        "rmproject.settings",
        "--worker-concurrency",
        "4",
    ]
    with ServerProcess(command, port) as server:
        server.wait_listening()
        info = http_json(port, "/patched/")
        assert info["socket"] and info["threading"] and info["pid"] == server.pid
        ws = ws_connect(port)
        assert ws_echo(ws, "cli")["consumer_pid"] == server.pid
        ws.close()
        assert f"geventchannels serving rmproject.wsgi at http://127.0.0.1:{port}/" in server.output
        assert server.stop(signal.SIGINT) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "arguments, message",
    [
        (["serve", "rmproject.wsgi", "--bind", "localhost"], "is not an address to listen on"),
        (["serve", "rmproject.nowhere"], "cannot import WSGI module 'rmproject.nowhere'"),
        (["serve", "rmproject.wsgi:nothing"], "has no WSGI application named 'nothing'"),
        (["serve", "rmproject.wsgi", "--noworker", "-b", "0"], "which lives inside one process"),
    ],
)
def test_serve_errors_are_one_line_for_the_user(arguments, message):
    with ServerProcess([str(BIN / "geventchannels"), *arguments]) as server:
        assert server.exit_code(40) == 2
        assert message in server.output
        assert "Traceback" not in server.output


@pytest.mark.redis
@pytest.mark.timeout(90)
def test_runworker_consumes_from_redis_for_a_server_without_consumers(redis_url):
    from geventchannels.layers.redis import RedisChannelLayer

    env = {"RM_REDIS_URL": redis_url}
    port = free_port()
    serve = [
        str(BIN / "geventchannels"),
        "serve",
        "rmproject.wsgi",
        "--bind",
        str(port),
        "--noworker",
    ]
    # Through the bootstrap: manage.py's own re-exec is covered by the runserver tests.
    runworker = [
        PYTHON,
        "-m",
        bootstrap.MODULE,
        "manage.py",
        "runworker",
        "--exclude-channels",
        "rm.other",
        "--worker-concurrency",
        "5",
    ]
    with ServerProcess(serve, port, env) as server, ServerProcess(runworker, None, env) as worker:
        server.wait_listening()
        worker.wait_output("Running 5 consumer greenlets")
        ws = ws_connect(port)
        assert ws_echo(ws, "via redis")["consumer_pid"] == worker.pid
        ws.close()

        layer = RedisChannelLayer(hosts=[redis_url])
        try:
            layer.send("rm.other", {"reply_to": "rm.replies", "value": 1})
            layer.send("rm.task", {"reply_to": "rm.replies", "value": 21})
            channel, reply = layer.receive(["rm.replies"], block=True, timeout=20)
            assert (channel, reply) == ("rm.replies", {"pid": worker.pid, "value": 42})
            # The excluded channel was never consumed.
            assert layer.receive(["rm.other"]) == (
                "rm.other",
                {"reply_to": "rm.replies", "value": 1},
            )
        finally:
            layer.close()
        assert worker.stop() == 0
        assert server.stop() == 0


@pytest.mark.timeout(60)
def test_runworker_refuses_the_in_memory_layer():
    with ServerProcess(manage("runworker")) as worker:
        assert worker.exit_code(40) == 1
        assert "lives inside one process" in worker.output
        assert "Traceback" not in worker.output


def test_the_console_script_is_installed():
    assert (BIN / "geventchannels").exists(), "reinstall the package: pip install -e ."
