"""Smoke run of the benchmark harness (bench/run.py --quick).

It drives the real Node load generator and wrk-or-Node HTTP load against this project and
the bare gevent ceiling at tiny sizes, and checks the JSON results it writes. The anchors'
virtualenv is not needed for this.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ["http", "ws_echo", "broadcast", "longpoll"]
MAIN_METRIC = {
    "http": "rps",
    "ws_echo": "rt_s",
    "broadcast": "deliveries_s",
    "longpoll": "answers_s",
}


def run_quick_bench(out: Path, workloads: str, systems: str) -> str:
    """``bench/run.py --quick`` for these workloads and systems, results in ``out``; its
    printed tables."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--quick",
            "--only",
            workloads,
            "--systems",
            systems,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(100)
def test_quick_bench_measures_project_and_ceiling(tmp_path):
    output = run_quick_bench(tmp_path, ",".join(WORKLOADS), "geventchannels,bare")

    for name in WORKLOADS:
        document = json.loads((tmp_path / f"{name}.json").read_text())
        assert set(document["systems"]) == {"geventchannels", "bare"}, name
        for system, metrics in document["systems"].items():
            assert "error" not in metrics, (name, system, metrics.get("error"))
            assert metrics[MAIN_METRIC[name]] > 0, (name, system, metrics)
        assert document["ratios"]["bare"] > 0
        assert document["machine"]["cores"] >= 1
    assert (
        json.loads((tmp_path / "broadcast.json").read_text())["systems"]["geventchannels"]["lost"]
        == 0
    )
    assert (
        json.loads((tmp_path / "longpoll.json").read_text())["systems"]["geventchannels"]["lost"]
        == 0
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [d["workload"] for d in summary["workloads"]] == WORKLOADS
    assert "geventchannels (this project)" in (tmp_path / "tables.md").read_text()
    assert "round trips/s" in output


def _echo(message):
    message.reply_channel.send({"text": message.content["text"]})


def _shorter(message):
    message.reply_channel.send({"text": message.content["text"][1:]})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("consumer", [_echo, _shorter], ids=["echo", "wrong-reply"])
def test_the_c_echo_client_loads_the_server_and_reports_like_the_node_one(tmp_path, consumer):
    """bench/loadgen/wsecho.c, built as the harness builds it, against the real server:
    round trips counted into a histogram the harness reads; a wrong reply is an error."""
    from geventchannels.routing import route

    from .livesrv import live_server

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from harness import environment
        from harness.loadgen import NativeEcho, latency_ms
    finally:
        sys.path.remove(str(ROOT / "bench"))
    binary = environment.native_echo(tmp_path / "bin")
    config = {"connections": 5, "warmup_s": 0.1, "duration_s": 0.5, "payload": 32}
    with live_server([route("websocket.receive", consumer)]) as server:
        config["url"] = server.ws_url + "/echo/"
        out = NativeEcho([binary], tmp_path, None).run("echo", config, timeout=30)

    assert out["opened"] == 5 and out["failed"] == 0
    assert out["count"] > 50 and 0.4 < out["seconds"] < 2
    assert sum(out["hist"].values()) == out["count"]
    assert latency_ms(out["hist"])["p50_ms"] > 0
    if consumer is _echo:
        assert (out["errors"], out["wrong_reply"]) == (0, None)
    else:
        assert out["errors"] >= out["count"]
        assert out["wrong_reply"] == "expected 32 bytes, got 31"
