"""Consumers of the session and auth tests, in the test's own process (live_server) and in
the server processes of the multi-process tests.

- ``/whoami/``: the socket takes the browser's login on connect; every frame answers with
  ``message.user``'s name, what connect wrote in the channel session, a frame counter kept
  in the channel session, and the pid of the process that ran the consumer.
- ``/ordered/``: every message runs under ``@enforce_ordering``; each frame's text is
  recorded in the order the consumers ran (in ``ORDERED_RUNS`` here, and in the Redis list
  ``ordered:<reply channel>`` when ``GC_TEST_ORDER_REDIS`` names a Redis server, with
  the pids of the processes that ran them in the set ``ordered-pids``). The
  consumer pauses a little at random so that concurrent greenlets and processes would
  overtake each other without the decorator. A frame "last" is answered with "done".
"""

import json
import os
import random

import gevent

from geventchannels.auth import channel_session_user, channel_session_user_from_http
from geventchannels.routing import route
from geventchannels.sessions import enforce_ordering

#: reply channel -> the texts of its frames, in the order their consumers ran.
ORDERED_RUNS: dict[str, list[str]] = {}
_ORDER_REDIS = os.environ.get("GC_TEST_ORDER_REDIS")
_redis = None


@channel_session_user_from_http
def whoami_connect(message):
    message.channel_session["connected_as"] = message.user.username
    message.reply_channel.send({"accept": True})


@channel_session_user
def whoami_receive(message):
    session = message.channel_session
    session["frames"] = session.get("frames", 0) + 1
    reply = {
        "user": message.user.username,
        "authenticated": message.user.is_authenticated,
        "connected_as": session.get("connected_as"),
        "frames": session["frames"],
        "pid": os.getpid(),
    }
    message.reply_channel.send({"text": json.dumps(reply)})


@channel_session_user
def whoami_disconnect(message):
    pass


@enforce_ordering
def ordered_connect(message):
    message.reply_channel.send({"accept": True})


@enforce_ordering
def ordered_receive(message):
    gevent.sleep(random.random() * 0.002)
    reply = message.reply_channel.name
    text = message["text"]
    ORDERED_RUNS.setdefault(reply, []).append(text)
    if _ORDER_REDIS:
        _record_in_redis(reply, text)
    if text == "last":
        message.reply_channel.send({"text": "done"})


@enforce_ordering
def ordered_disconnect(message):
    pass


def _record_in_redis(reply: str, text: str) -> None:
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(_ORDER_REDIS)
    _redis.rpush("ordered:" + reply, text)
    _redis.sadd("ordered-pids", os.getpid())


channel_routing = [
    route("websocket.connect", whoami_connect, path=r"^/whoami/$"),
    route("websocket.receive", whoami_receive, path=r"^/whoami/$"),
    route("websocket.disconnect", whoami_disconnect, path=r"^/whoami/$"),
    route("websocket.connect", ordered_connect, path=r"^/ordered/$"),
    route("websocket.receive", ordered_receive, path=r"^/ordered/$"),
    route("websocket.disconnect", ordered_disconnect, path=r"^/ordered/$"),
]
