"""The settings table: defaults, validation, command-line options, the generated reference."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from django.test import override_settings

from geventchannels import conf
from geventchannels.cli import build_parser
from geventchannels.management.commands.runserver import Command as Runserver
from geventchannels.management.commands.runworker import Command as Runworker
from geventchannels.server import ServerConfig
from geventchannels.settings_page import markdown

DOCS = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_docs_settings_page_is_generated_from_the_table():
    assert DOCS.read_text() == markdown(), (
        "docs/settings.md is out of date: run `python -m geventchannels.conf > docs/settings.md`"
    )


def test_every_setting_has_a_valid_default_help_and_a_section():
    for setting in conf.SETTINGS:
        assert setting.clean(setting.default, setting.name) == setting.default
        assert setting.help.endswith("."), setting.name
        assert setting.name.isupper() and setting.section


def test_defaults_come_from_the_table_when_the_project_sets_nothing():
    with override_settings(GEVENTCHANNELS=None):
        assert conf.get("WORKER_CONCURRENCY") == 50
        assert conf.get("WEBSOCKET_MAX_MESSAGE_SIZE") == 1_048_576


@override_settings(GEVENTCHANNELS={"HTTP_TIMEOUT": "30", "PROXY_HEADERS": True})
def test_project_values_are_validated_and_overrides_win():
    assert conf.get("HTTP_TIMEOUT") == 30.0
    assert conf.get("HTTP_TIMEOUT", {"HTTP_TIMEOUT": 5}) == 5.0
    assert conf.get("HTTP_TIMEOUT", {"HTTP_TIMEOUT": None}) == 30.0
    assert conf.get("PROXY_HEADERS") is True


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("WORKER_CONCURRENCY", 0, "a whole number of at least 1"),
        ("WORKER_CONCURRENCY", 2.5, "a whole number of at least 1"),
        ("WORKER_CONCURRENCY", True, "a whole number of at least 1"),
        ("HTTP_TIMEOUT", -1, "a number of seconds greater than 0"),
        ("HTTP_TIMEOUT", "soon", "a number of seconds greater than 0"),
        ("WEBSOCKET_PING_INTERVAL", float("nan"), "or 0 to turn it off"),
        ("ORDERED_DISPATCH", "maybe", "True or False"),
    ],
)
def test_a_bad_value_names_the_setting_and_what_it_takes(name, value, expected):
    with override_settings(GEVENTCHANNELS={name: value}):
        with pytest.raises(conf.SettingError, match=expected) as raised:
            conf.get(name)
    assert f"GEVENTCHANNELS[{name!r}]" in str(raised.value)


def test_an_unknown_key_suggests_the_closest_known_one():
    with override_settings(GEVENTCHANNELS={"HTTP_TIMOUT": 5, "WORKER_CONCURRENCY": 0}):
        problems = conf.problems()
    assert problems == [
        "GEVENTCHANNELS has an unknown key 'HTTP_TIMOUT': did you mean 'HTTP_TIMEOUT'?",
        "GEVENTCHANNELS['WORKER_CONCURRENCY'] must be a whole number of at least 1, not 0",
    ]
    with override_settings(GEVENTCHANNELS={"http_timeout": 5}):
        assert "did you mean 'HTTP_TIMEOUT'?" in conf.problems()[0]
    with override_settings(GEVENTCHANNELS={"COLOUR": "blue"}):
        assert "docs/settings.md" in conf.problems()[0]
    with override_settings(GEVENTCHANNELS=["HTTP_TIMEOUT"]):
        assert "must be a dict" in conf.problems()[0]


def test_get_refuses_a_name_that_is_not_a_setting():
    with pytest.raises(KeyError, match="did you mean 'GRACEFUL_TIMEOUT'"):
        conf.get("GRACEFULL_TIMEOUT")


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _serve_parser() -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["serve"]


def test_every_run_mode_offers_its_settings_in_one_spelling():
    parsers = {
        conf.SERVE: _serve_parser(),
        conf.RUNSERVER: Runserver().create_parser("manage.py", "runserver"),
        conf.RUNWORKER: Runworker().create_parser("manage.py", "runworker"),
    }
    for mode, parser in parsers.items():
        offered = _options(parser)
        for setting in conf.SETTINGS:
            assert (setting.flag in offered) == (mode in setting.modes), (mode, setting.name)
        underscored = {f for f in offered if "_" in f}
        allowed = {alias for s in conf.SETTINGS if mode in s.modes for alias in s.aliases}
        assert underscored <= allowed, f"{mode} has options outside the one spelling: {underscored}"


def test_channels1_spellings_stay_as_aliases_of_runserver():
    parser = Runserver().create_parser("manage.py", "runserver")
    options = parser.parse_args(["--http_timeout", "30", "--websocket_handshake_timeout", "4"])
    assert conf.overrides_from(vars(options)) == {
        "HTTP_TIMEOUT": 30.0,
        "WEBSOCKET_HANDSHAKE_TIMEOUT": 4.0,
    }


def test_command_line_values_are_validated_like_the_settings(capsys):
    parser = _serve_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["proj.wsgi", "--worker-concurrency", "0"])
    assert "'0' is not a whole number of at least 1" in capsys.readouterr().err
    options = parser.parse_args(["proj.wsgi", "--no-ordered-dispatch", "--graceful-timeout", "0"])
    assert conf.overrides_from(options) == {"ORDERED_DISPATCH": False, "GRACEFUL_TIMEOUT": 0.0}


def test_the_server_config_reads_the_table():
    with override_settings(GEVENTCHANNELS={"WEBSOCKET_OUTBOUND_QUEUE": 7}):
        config = ServerConfig.from_settings({"HTTP_TIMEOUT": 3})
    assert (config.websocket_outbound_queue, config.http_timeout) == (7, 3.0)
    assert config.websocket_max_message_size == 1_048_576


def test_the_consumer_pool_takes_command_line_overrides_for_every_setting():
    from geventchannels.asgi import channel_layers
    from geventchannels.worker import Worker

    worker = Worker(
        channel_layers["default"],
        overrides={"CONSUME_LATER_LIMIT": 3, "ORDERED_DISPATCH": False, "GRACEFUL_TIMEOUT": 0},
    )
    assert (worker.consume_later_limit, worker.ordered, worker.concurrency) == (3, False, 50)
    assert Worker(channel_layers["default"], concurrency=7).concurrency == 7
    with pytest.raises(conf.SettingError, match="--worker-concurrency option must be"):
        Worker(channel_layers["default"], overrides={"WORKER_CONCURRENCY": 0})
