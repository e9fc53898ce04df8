"""Start a Python program with gevent patched in before anything else is imported.

``python -m geventchannels.management.bootstrap manage.py runserver 8000`` (or
``... bootstrap -m django runserver``) applies :func:`geventchannels.monkey.patch` and then
runs the program as Python would have. ``runserver`` uses it for its autoreload child and
``runserver --noreload`` / ``runworker`` re-execute themselves through it when they find the
process unpatched: by the time a management command runs, Django and the settings are
already imported, which is too late to patch.

This module imports only the standard library at the top so that nothing is loaded
before the patch.
"""

from __future__ import annotations

import os
import sys

MODULE = "geventchannels.management.bootstrap"


def patched_arguments(arguments: list[str]) -> list[str]:
    """Rewrite a command line ``[python, *interpreter options, program...]`` (as Django's
    ``autoreload.get_child_arguments()`` builds it) to run the program through this
    module."""
    arguments = [str(argument) for argument in arguments]
    start = 1
    while start < len(arguments) and arguments[start].startswith("-") and arguments[start] != "-m":
        start += 1
    if start >= len(arguments):
        raise ValueError(f"no program to run in {arguments!r}")
    if arguments[start] == "-m" and arguments[start + 1 : start + 2] == [MODULE]:
        return arguments
    return [*arguments[:start], "-m", MODULE, *arguments[start:]]


def current_arguments() -> list[str]:
    """This process's own command line, ready to be run again through this module."""
    from django.utils.autoreload import get_child_arguments

    arguments = get_child_arguments()
    if str(arguments[0]) != sys.executable:
        raise RuntimeError(
            f"cannot restart {arguments[0]} with gevent patched: start it as `python manage.py ...` or "
            "`python -m geventchannels.management.bootstrap manage.py ...`"
        )
    return patched_arguments(arguments)


def reexec_patched() -> None:
    """Replace this process with the same command run through this module (never returns)."""
    arguments = current_arguments()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, arguments)


def run(arguments: list[str]) -> None:
    """Patch, then run ``arguments`` (``script args...`` or ``-m module args...``) as
    ``__main__``, the way the interpreter would."""
    if not arguments or arguments[0] in ("-h", "--help"):
        sys.stderr.write(
            f"usage: python -m {MODULE} (script.py | -m module) [arguments...]\n"
            "Runs the program with geventchannels' gevent patches applied first.\n"
        )
        raise SystemExit(2)
    from geventchannels.monkey import patch

    patch()
    import runpy

    if arguments[0] == "-m":
        if len(arguments) < 2:
            raise SystemExit(f"{MODULE}: -m needs a module name")
        sys.argv = [arguments[1], *arguments[2:]]
        runpy.run_module(arguments[1], run_name="__main__", alter_sys=True)
    else:
        script = os.path.abspath(arguments[0])
        sys.argv = list(arguments)
        sys.path[0] = os.path.dirname(script)
        runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    run(sys.argv[1:])
