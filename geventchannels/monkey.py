"""Make the process cooperative: gevent's monkey patching plus database drivers.

Call :func:`patch` first thing, before Django, a database driver, redis or requests are
imported (in ``manage.py`` and ``wsgi.py``; the gunicorn worker and our commands do it
for you)::

    from geventchannels.monkey import patch
    patch()

Modules imported earlier keep the blocking originals: Django's per-connection storage
would be shared by all greenlets, psycopg 3 would wait in C and freeze the process.
:func:`patch` refuses to run that late with a RuntimeError that says what to move.
"""

from __future__ import annotations

import sys

#: Modules that capture blocking primitives (threading.local, select, socket) when they
#: are imported, with why it matters.
IMPORTED_TOO_EARLY = {
    "django.db": "its connections would be shared by all greenlets",
    "psycopg": "psycopg 3 picks its blocking C wait function at import",
    "psycopg2": "its connections would block the whole process",
    "redis": "its connection pools would use blocking locks",
    "urllib3": "its sockets and locks would block the whole process",
}

_patched = False


def is_patched() -> bool:
    """Whether gevent has patched this process's socket and threading modules."""
    if "gevent.monkey" not in sys.modules:
        return False
    from gevent import monkey

    return monkey.is_module_patched("socket") and monkey.is_module_patched("threading")


def patch() -> None:
    """Apply gevent's ``patch_all()`` and the database driver patches, once.

    Safe to call again (and when something else, like ``python -m gevent.monkey`` or
    gunicorn's gevent worker, already patched). Raises RuntimeError when blocking
    modules were imported, or threads started, before the patch.
    """
    global _patched
    if _patched:
        return
    if not is_patched():
        _refuse_if_too_late()
        from gevent import monkey

        monkey.patch_all()
    patch_psycopg2()
    _patched = True


def _refuse_if_too_late() -> None:
    early = [name for name in IMPORTED_TOO_EARLY if name in sys.modules]
    if early:
        modules = ", ".join(early)
        verb = "was" if len(early) == 1 else "were"
        why = "; ".join(f"{name}: {IMPORTED_TOO_EARLY[name]}" for name in early)
        raise RuntimeError(
            f"geventchannels.monkey.patch() ran after {modules} {verb} imported ({why}). "
            "Call patch() before anything else: at the top of manage.py and of your wsgi.py, "
            "or serve with `gunicorn -k geventchannels.gunicorn.Worker`."
        )
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        raise RuntimeError(
            f"geventchannels.monkey.patch() ran after threads were started ({names}); they would "
            "keep running as real threads. Call patch() before anything else: at the top of "
            "manage.py and of your wsgi.py, or serve with "
            "`gunicorn -k geventchannels.gunicorn.Worker`."
        )


def patch_psycopg2() -> bool:
    """Make psycopg2 wait through gevent instead of blocking, if psycopg2 is installed.

    psycopg2 talks to the server in C; its "wait callback" hook lets every query wait
    for the socket through gevent. psycopg 3 needs nothing: it uses the (patched) Python
    ``select`` when imported after :func:`patch`. Returns whether psycopg2 was patched.
    """
    from importlib.util import find_spec

    if "psycopg2" not in sys.modules and find_spec("psycopg2") is None:
        return False
    from psycopg2 import extensions

    if extensions.get_wait_callback() is not _wait_for_psycopg2:
        extensions.set_wait_callback(_wait_for_psycopg2)
    return True


def _wait_for_psycopg2(connection, timeout: float | None = None) -> None:
    from gevent.socket import wait_read, wait_write
    from psycopg2 import OperationalError, extensions

    while True:
        state = connection.poll()
        if state == extensions.POLL_OK:
            return
        if state == extensions.POLL_READ:
            wait_read(connection.fileno(), timeout=timeout)
        elif state == extensions.POLL_WRITE:
            wait_write(connection.fileno(), timeout=timeout)
        else:
            raise OperationalError(f"unexpected state from psycopg2's poll(): {state!r}")
