"""Django system check: a process that serves with geventchannels must be gevent-patched.

Unpatched, every socket read, database query or Redis call blocks all greenlets of the
process: one slow consumer freezes every connection. Management commands that do not
serve (migrate, shell...) do not need the patch, so the check speaks only when this
process serves: our runserver / runworker, the gunicorn worker and the console command
call :func:`expect_serving` before they run the checks.
"""

from __future__ import annotations

from django.core import checks

_serving = False


def expect_serving(serving: bool = True) -> None:
    """Say that this process is about to serve (the check then requires the patch)."""
    global _serving
    _serving = serving


def is_serving() -> bool:
    return _serving


def check_gevent_patched(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    from .monkey import is_patched

    if not is_serving() or is_patched():
        return []
    return [
        checks.Error(
            "this process serves with geventchannels but is not gevent-patched: every "
            "blocking call (socket, database, Redis) would freeze all connections.",
            hint="Call geventchannels.monkey.patch() before anything else: at the top of "
            "manage.py and of your wsgi.py (before Django is imported), or serve with "
            "`gunicorn -k geventchannels.gunicorn.Worker`.",
            id="geventchannels.E001",
        )
    ]
