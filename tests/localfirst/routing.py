"""Consumers of the multi-process tests (tests/test_redis_multiprocess.py), served with the
run-mode project's settings (``RM_ROUTING=tests.localfirst.routing.<name>``).

``server_routing`` is what the socket servers run: an echo naming the process that ran
it, group sends, and tasks sent on to ``lf.task``, which only ``worker_routing`` (a
separate runworker) consumes, so that its answer comes from another process.
"""

import json
import os

from geventchannels import Channel, Group
from geventchannels.routing import route

GROUP = "everyone"
TASKS = "lf.task"


def ws_connect(message):
    message.reply_channel.send({"accept": True})
    Group(GROUP).add(message.reply_channel)


def ws_receive(message):
    text = message["text"]
    if text.startswith("broadcast:"):
        Group(GROUP).send({"text": text})
    elif text.startswith("task:"):
        Channel(TASKS).send({"reply_channel": message.reply_channel.name, "text": text[5:]})
    else:
        reply = {"text": text, "pid": os.getpid(), "order": message["order"]}
        message.reply_channel.send({"text": json.dumps(reply)})


def ws_disconnect(message):
    Group(GROUP).discard(message.reply_channel)


def task(message):
    answer = {"task": message["text"], "pid": os.getpid()}
    Channel(message["reply_channel"]).send({"text": json.dumps(answer)})


server_routing = [
    route("websocket.connect", ws_connect),
    route("websocket.receive", ws_receive),
    route("websocket.disconnect", ws_disconnect),
]
worker_routing = [route(TASKS, task)]
