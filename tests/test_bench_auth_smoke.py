"""Smoke run of the ws_echo_auth benchmark workload (bench/run.py --quick): 10 sockets of
logged-in users, each answered with its own user's name (a wrong name fails the run)."""

from __future__ import annotations

import json

import pytest

from .test_bench_smoke import run_quick_bench


@pytest.mark.slow
@pytest.mark.timeout(100)
def test_quick_ws_echo_auth_answers_every_socket_with_its_user(tmp_path):
    run_quick_bench(tmp_path, "ws_echo_auth", "geventchannels")
    metrics = json.loads((tmp_path / "ws_echo_auth.json").read_text())["systems"]["geventchannels"]
    assert "error" not in metrics, metrics
    assert metrics["rt_s"] > 0 and metrics["errors"] == 0 and metrics["opened"] == 10, metrics
