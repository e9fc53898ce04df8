"""Real OS processes share one Redis.

- Two layer processes: group messages reach every member in both exactly once and in
  order (20 sockets of each process share one fan-out entry per message), and
  point-to-point sends cross between them.
- gunicorn -w 2 with 200 sockets: each socket's messages are consumed once, in order,
  by the process that holds it (local first); a task a socket starts is run by a
  separate runworker whose reply reaches the socket; group sends from either worker and
  from a third process reach the sockets of both.
- serve --noworker with a runworker: the sockets are served through Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gevent
import pytest
import redis

from geventchannels.layers import RedisChannelLayer

from .conftest import free_port
from .runmodes.process import BIN, HERE, ServerProcess, http_json, manage, ws_connect

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

MESSAGES = 300

# One peer process: members "<me>!s0".."<me>!s19" are process-local (drained via
# attach_local), "<me>.plain" is an ordinary channel read by a blocking receiver.
PEER = r"""
import json, sys
from gevent import monkey
monkey.patch_all()
import gevent
from gevent.queue import Queue
from geventchannels.layers import RedisChannelLayer

url, me, other = sys.argv[1:4]
SOCKETS = 20
layer = RedisChannelLayer(hosts=[url], capacity=1000)
inbox = Queue()
layer.attach_local(me + "!", lambda channel, message: inbox.put((channel, message)))
members = [f"{me}!s{n}" for n in range(SOCKETS)] + [me + ".plain"]
for member in members:
    layer.group_add("room", member)

def read_plain():
    while True:
        channel, message = layer.receive([me + ".plain"], block=True, timeout=5)
        if channel is not None:
            inbox.put((channel, message))

gevent.spawn(read_plain)
print("READY", flush=True)

seen = {member: [] for member in members}
direct = []
done = set()
with gevent.Timeout(40):
    while len(done) < len(members) or len(direct) < 2:
        channel, message = inbox.get()
        if "from" in message:
            direct.append([channel, message["from"]])
        elif message.get("done"):
            done.add(channel)
            if len(done) == len(members):
                layer.send(other + "!direct", {"from": me})
                layer.send(other + ".plain", {"from": me})
        else:
            seen[channel].append(message["n"])
print(json.dumps({"seen": seen, "direct": sorted(direct)}), flush=True)
layer.close()
"""


def _start_peer(url: str, me: str, other: str) -> subprocess.Popen:
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-c", PEER, url, me, other],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )


def test_group_and_direct_messages_cross_two_processes(redis_url):
    peers = {
        "mpa": _start_peer(redis_url, "mpa", "mpb"),
        "mpb": _start_peer(redis_url, "mpb", "mpa"),
    }
    layer = RedisChannelLayer(hosts=[redis_url])
    try:
        with gevent.Timeout(20, AssertionError("peers did not start")):
            for process in peers.values():
                line = process.stdout.readline()
                assert line.strip() == "READY", line + process.stderr.read()
        assert len(layer.group_channels("room")) == 2 * 21
        for n in range(MESSAGES):
            layer.send_group("room", {"n": n})
        layer.send_group("room", {"done": True})

        for me, process in peers.items():
            out, err = process.communicate(timeout=40)
            assert process.returncode == 0, err
            result = json.loads(out.strip().splitlines()[-1])
            other = "mpb" if me == "mpa" else "mpa"
            for member, numbers in result["seen"].items():
                assert numbers == list(range(MESSAGES)), f"{member} lost, duplicated or reordered"
            assert result["direct"] == [[me + "!direct", other], [me + ".plain", other]]
    finally:
        for process in peers.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        layer.close()


# -- servers that hold sockets ----------------------------------------------------------

ROUTING = "tests.localfirst.routing"
SOCKETS = 200
PER_SOCKET = 20


def _env(redis_url: str, routing: str) -> dict:
    return {
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
        "RM_REDIS_URL": redis_url,
        "RM_ROUTING": f"{ROUTING}.{routing}",
    }


def _runworker(redis_url: str, routing: str) -> ServerProcess:
    return ServerProcess(manage("runworker"), None, _env(redis_url, routing))


def _open(port: int, count: int) -> list:
    sockets = [gevent.spawn(ws_connect, port, "/lf/", 20) for _ in range(count)]
    gevent.joinall(sockets, timeout=30, raise_error=True)
    return [greenlet.value for greenlet in sockets]


def _echo_all(sockets: list, per_socket: int) -> list[list[dict]]:
    """Every socket sends ``per_socket`` numbered messages at once, then reads the replies."""

    def one(ws) -> list[dict]:
        for n in range(per_socket):
            ws.send(f"m{n}")
        return [json.loads(ws.recv()) for _ in range(per_socket)]

    talks = [gevent.spawn(one, ws) for ws in sockets]
    gevent.joinall(talks, timeout=60, raise_error=True)
    return [talk.value for talk in talks]


def _in_order_once(replies: list[dict], per_socket: int) -> None:
    assert [r["text"] for r in replies] == [f"m{n}" for n in range(per_socket)]
    assert [r["order"] for r in replies] == list(range(1, per_socket + 1))


@pytest.fixture(scope="module")
def two_workers(redis_server):
    """gunicorn -w 2 serving sockets (no task consumer) and a runworker for the tasks."""
    redis_server.flushall()
    port = free_port()
    command = [
        str(BIN / "gunicorn"),
        "-k",
        "geventchannels.gunicorn.Worker",
        "-w",
        "2",
        "--reuse-port",
        "-b",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        "--graceful-timeout",
        "5",
        "rmproject.wsgi",
    ]
    server = ServerProcess(command, port, _env(redis_server.url, "server_routing"))
    tasks = _runworker(redis_server.url, "worker_routing")
    try:
        seen: set[int] = set()

        def both_serve() -> bool:
            try:
                seen.add(http_json(port, "/patched/")["pid"])  # a new connection each time
            except (OSError, AssertionError, ValueError):
                pass  # still booting
            return len(seen) == 2

        server.wait_until(both_serve, what="both workers serving")
        tasks.wait_output("consumer greenlets")
        yield port, tasks
    finally:
        server.kill()
        tasks.kill()


@pytest.mark.timeout(120)
def test_two_workers_consume_their_own_sockets_messages_in_order_once(two_workers):
    port, _tasks = two_workers
    sockets = _open(port, SOCKETS)
    try:
        by_pid: dict[int, int] = {}
        for replies in _echo_all(sockets, PER_SOCKET):
            _in_order_once(replies, PER_SOCKET)
            pids = {reply["pid"] for reply in replies}
            assert len(pids) == 1, "a socket's messages ran in two processes"
            pid = pids.pop()
            by_pid[pid] = by_pid.get(pid, 0) + 1
        assert len(by_pid) == 2, f"the sockets did not reach both workers: {by_pid}"
    finally:
        for ws in sockets:
            ws.close()


@pytest.mark.timeout(120)
def test_a_consumer_in_another_process_replies_to_a_socket(two_workers):
    port, tasks = two_workers
    sockets = _open(port, 10)
    try:
        for n, ws in enumerate(sockets):
            ws.send(f"task:t{n}")
        for n, ws in enumerate(sockets):
            answer = json.loads(ws.recv())
            assert answer == {"task": f"t{n}", "pid": tasks.pid}
    finally:
        for ws in sockets:
            ws.close()


@pytest.mark.timeout(120)
def test_group_sends_from_any_process_reach_the_sockets_of_every_process(two_workers, redis_server):
    port, _tasks = two_workers
    sockets = _open(port, 40)
    layer = RedisChannelLayer(hosts=[redis_server.url])
    try:
        pids = {}
        for ws in sockets:
            ws.send("where")
            pids.setdefault(json.loads(ws.recv())["pid"], ws)
        assert len(pids) == 2, "the sockets did not reach both workers"
        first, second = pids.values()
        first.send("broadcast:from the first worker")
        second.send("broadcast:from the second worker")
        layer.send_group("everyone", {"text": "broadcast:from a third process"})
        expected = {
            "broadcast:from the first worker",
            "broadcast:from the second worker",
            "broadcast:from a third process",
        }
        for ws in sockets:
            assert {ws.recv() for _ in range(3)} == expected
    finally:
        layer.close()
        for ws in sockets:
            ws.close()


@pytest.mark.timeout(120)
def test_a_server_without_consumers_serves_sockets_through_a_runworker(redis_server):
    # A database of its own: the processes of the two_workers fixture may still run.
    url = redis_server.url.rsplit("/", 1)[0] + "/1"
    redis.Redis.from_url(url).flushdb()
    port = free_port()
    env = _env(url, "server_routing")
    server = ServerProcess(
        [
            str(BIN / "geventchannels"),
            "serve",
            "rmproject.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--noworker",
        ],
        port,
        env,
    )
    worker = _runworker(url, "server_routing")
    try:
        server.wait_listening()
        worker.wait_output("consumer greenlets")
        sockets = _open(port, 20)
        for replies in _echo_all(sockets, 10):
            _in_order_once(replies, 10)
            assert {reply["pid"] for reply in replies} == {worker.pid}
        for ws in sockets:
            ws.close()
    finally:
        server.kill()
        worker.kill()
