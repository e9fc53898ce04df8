import os
import time

from django.http import HttpResponse, JsonResponse
from django.urls import path


def hello(request):
    return HttpResponse(f"hello from {os.getpid()}")


def slow(request):
    """Takes about a second: the in-flight request of the graceful stop tests. It tells
    every connected WebSocket when it starts, so a test knows it is in flight."""
    from geventchannels import Group

    Group("everyone").send({"text": "slow-started"})
    time.sleep(float(request.GET.get("seconds", "1")))
    return HttpResponse("slow done")


def upload(request):
    """Reads the body as it arrives and says how many bytes came (graceful stop tests)."""
    size = 0
    while chunk := request.read(65536):
        size += len(chunk)
    return HttpResponse(f"received {size}")


def patched(request):
    """Whether this process was gevent-patched, and whether before Django was imported."""
    import sys

    from gevent import monkey

    return JsonResponse(
        {
            "socket": monkey.is_module_patched("socket"),
            "threading": monkey.is_module_patched("threading"),
            "pid": os.getpid(),
            "argv": sys.argv,
        }
    )


urlpatterns = [
    path("hello/", hello),
    path("slow/", slow),
    path("upload/", upload),
    path("patched/", patched),
]
