"""A misconfigured project stops every run mode at start with one clear line per problem
and a non-zero exit status: no traceback, no server left running without its port."""

from __future__ import annotations

import json

import pytest

from .conftest import free_port
from .runmodes.process import BIN, ServerProcess, gunicorn, manage

MISSPELLED_BACKEND = {"RM_BACKEND": "geventchannels.layers.InMemoryChanelLayer"}
BACKEND_HINT = "Did you mean geventchannels.layers.InMemoryChannelLayer?"


def run_modes(port: int) -> dict[str, list[str]]:
    return {
        "runserver": manage("runserver", str(port)),
        "runserver --noreload": manage("runserver", "--noreload", str(port)),
        "serve": [str(BIN / "geventchannels"), "serve", "rmproject.wsgi", "-b", str(port)],
        "runworker": manage("runworker"),
        "gunicorn": gunicorn(port),
    }


def assert_stops_with(command: list[str], env: dict, *expected: str) -> str:
    with ServerProcess(command, None, env) as server:
        code = server.exit_code(40)
        output = server.output
    assert code != 0, output
    for text in expected:
        assert text in output, output
    assert "Traceback" not in output, output
    return output


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "mode", ["runserver", "runserver --noreload", "serve", "runworker", "gunicorn"]
)
def test_a_misspelled_backend_stops_every_run_mode_with_the_closest_name(mode):
    port = free_port()
    output = assert_stops_with(run_modes(port)[mode], MISSPELLED_BACKEND, BACKEND_HINT)
    line = next(line for line in output.splitlines() if BACKEND_HINT in line)
    assert "(geventchannels.E004)" in line
    if mode == "gunicorn":
        assert output.count("Booting worker") <= 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["runserver", "serve", "gunicorn"])
def test_a_wrong_config_key_and_a_misspelled_setting_name_the_fix(mode):
    env = {
        "RM_LAYER_CONFIG": json.dumps({"capacityy": 10}),
        "RM_GEVENTCHANNELS": json.dumps({"HTTP_TIMOUT": 5}),
    }
    assert_stops_with(
        run_modes(free_port())[mode],
        env,
        "(geventchannels.E005) CHANNEL_LAYERS['default']['CONFIG'] has a key 'capacityy'",
        "Did you mean 'capacity'?",
        "(geventchannels.E002) GEVENTCHANNELS has an unknown key 'HTTP_TIMOUT': did you mean "
        "'HTTP_TIMEOUT'?",
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["runserver", "serve"])
def test_a_bad_setting_value_names_what_it_takes(mode):
    env = {"RM_GEVENTCHANNELS": json.dumps({"WORKER_CONCURRENCY": -3})}
    assert_stops_with(
        run_modes(free_port())[mode],
        env,
        "GEVENTCHANNELS['WORKER_CONCURRENCY'] must be a whole number of at least 1, not -3",
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("address", ["127.0.0.1:99999", "65536"])
def test_runserver_refuses_a_port_out_of_range_like_serve(address):
    message = f"port {address.rpartition(':')[2]} is out of range: use 1 to 65535"
    assert_stops_with(manage("runserver", address), {}, message)
    serve = [str(BIN / "geventchannels"), "serve", "rmproject.wsgi", "-b", address]
    assert_stops_with(serve, {}, message)


@pytest.mark.timeout(60)
def test_a_bad_command_line_value_is_refused_by_the_parser():
    serve = [str(BIN / "geventchannels"), "serve", "rmproject.wsgi", "--http-timeout", "-1"]
    assert_stops_with(serve, {}, "'-1' is not a number of seconds greater than 0")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["runserver", "runserver --noreload", "serve", "gunicorn"])
def test_every_serving_run_mode_names_the_channels_its_pool_listens_on(mode):
    port = free_port()
    with ServerProcess(run_modes(port)[mode], port) as server:
        server.wait_output("consumers on: ")
        line = next(line for line in server.output.splitlines() if "consumers on: " in line)
        assert "websocket.connect" in line and "websocket.receive" in line, line
        assert server.stop() == 0


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_runworker_names_the_channels_its_pool_listens_on(redis_url):
    with ServerProcess(manage("runworker"), None, {"RM_REDIS_URL": redis_url}) as worker:
        worker.wait_output("consumers on: ")
        line = next(line for line in worker.output.splitlines() if "consumers on: " in line)
        assert "websocket.receive" in line, line
        assert worker.stop() == 0
