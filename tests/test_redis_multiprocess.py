"""Two real OS processes share one Redis: group messages reach every member in both
processes exactly once and in order (20 sockets of each process share one fan-out entry
per message), and point-to-point sends cross between them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gevent
import pytest

from geventchannels.layers import RedisChannelLayer

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
