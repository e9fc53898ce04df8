"""Smoke run of the ws_echo_auth benchmark workload (bench/run.py --quick): 10 sockets of
logged-in users, each answered with its own user's name (a wrong name fails the run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(100)
def test_quick_ws_echo_auth_answers_every_socket_with_its_user(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--quick",
            "--only",
            "ws_echo_auth",
            "--systems",
            "geventchannels",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    metrics = json.loads((tmp_path / "ws_echo_auth.json").read_text())["systems"]["geventchannels"]
    assert "error" not in metrics, metrics
    assert metrics["rt_s"] > 0 and metrics["errors"] == 0 and metrics["opened"] == 10, metrics
