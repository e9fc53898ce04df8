"""The ``geventchannels`` console command: serve a project's WSGI module without gunicorn.

::

    geventchannels serve proj.wsgi --bind 0.0.0.0:8000

patches gevent first, imports ``proj.wsgi`` (``module:attribute``, default attribute
``application``), serves HTTP, WebSockets and the consumers in this one process until
SIGTERM or SIGINT, then stops gracefully (a second signal stops at once). Nothing but the
standard library is imported before the patch.
"""

from __future__ import annotations

import sys


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="geventchannels",
        description="Serve a Django project with geventchannels: HTTP, WebSockets and "
        "consumers in one gevent process.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a WSGI module until SIGTERM / SIGINT",
        description="Serve a WSGI module until SIGTERM / SIGINT, then stop gracefully.",
    )
    serve.add_argument(
        "wsgi",
        metavar="MODULE[:ATTRIBUTE]",
        help="the project's WSGI module, e.g. proj.wsgi (attribute: application)",
    )
    serve.add_argument(
        "-b",
        "--bind",
        default="127.0.0.1:8000",
        metavar="ADDRESS",
        help="HOST:PORT, PORT or [IPV6]:PORT to listen on (default: %(default)s)",
    )
    serve.add_argument(
        "--settings", metavar="MODULE", help="Django settings module (sets DJANGO_SETTINGS_MODULE)"
    )
    serve.add_argument(
        "--pythonpath",
        action="append",
        default=[],
        metavar="DIR",
        help="directory to add to sys.path (repeatable; the current one is)",
    )
    serve.add_argument(
        "--layer",
        default="default",
        metavar="ALIAS",
        help="CHANNEL_LAYERS alias to serve (default: %(default)s)",
    )
    serve.add_argument(
        "--noworker",
        action="store_false",
        dest="run_worker",
        help="run no consumers here (runworker processes on Redis do)",
    )
    serve.add_argument("--quiet", action="store_true", help="no access log lines")
    serve.add_argument(
        "--certfile", metavar="FILE", help="serve HTTPS and wss:// with this PEM certificate chain"
    )
    serve.add_argument(
        "--keyfile", metavar="FILE", help="the certificate's private key (default: in --certfile)"
    )
    from . import conf

    conf.add_arguments(serve, conf.SERVE)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .monkey import patch

    patch()
    options = build_parser().parse_args(argv)
    try:
        return serve(options)
    except UsageError as error:
        for line in str(error).splitlines():
            sys.stderr.write(f"geventchannels: error: {line}\n")
        return 2


class UsageError(Exception):
    """A problem the user fixes on the command line or in settings; shown without traceback."""


def load_wsgi(target: str, pythonpath: list[str]):
    """Import ``module[:attribute]`` with the current directory and ``pythonpath`` on
    sys.path, and return the WSGI callable."""
    import importlib
    import os

    for directory in reversed([os.getcwd(), *pythonpath]):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    module_name, _, attribute = target.partition(":")
    attribute = attribute or "application"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        if error.name and not module_name.startswith(error.name):
            raise
        raise UsageError(
            f"cannot import WSGI module {module_name!r} ({error}): run from the project directory or pass "
            "--pythonpath"
        ) from error
    application = getattr(module, attribute, None)
    if not callable(application):
        raise UsageError(
            f"{module_name!r} has no WSGI application named {attribute!r}; name it as MODULE:ATTRIBUTE"
        )
    return application


def require_configuration(options) -> None:
    """The start-up checks, one line per error; --noworker needs a layer that other
    processes reach."""
    from .checks import NOWORKER, expect_serving, startup_report, unshared_layer_error

    expect_serving()
    errors, warnings = startup_report(options.layer)
    for warning in warnings:
        sys.stderr.write(f"geventchannels: warning: {warning}\n")
    if errors:
        raise UsageError("\n".join(errors))
    if not options.run_worker:
        error = unshared_layer_error(options.layer, NOWORKER)
        if error:
            raise UsageError(error)


def serve(options) -> int:
    import os

    if options.settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = options.settings
    from .runner import AddressError, Runner, bind, parse_bind, show_server_logs, tls_context

    try:
        host, port = parse_bind(options.bind)
    except AddressError as error:
        raise UsageError(str(error)) from error
    application = load_wsgi(options.wsgi, options.pythonpath)
    import django
    from django.apps import apps
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from . import conf

    if not settings.configured:
        raise UsageError(
            "Django settings are not configured: pass --settings or set DJANGO_SETTINGS_MODULE"
        )
    if not apps.ready:
        django.setup(set_prefix=False)
    require_configuration(options)
    if not options.quiet:
        show_server_logs()
    if options.keyfile and not options.certfile:
        raise UsageError("--keyfile needs --certfile")
    try:
        ssl_context = tls_context(options.certfile, options.keyfile) if options.certfile else None
        listener = bind(host, port)
    except ValueError as error:  # AddressError, TLSFilesError
        raise UsageError(str(error)) from error
    overrides = conf.overrides_from(options)
    try:
        runner = Runner(
            application,
            listener,
            overrides=overrides,
            run_worker=options.run_worker,
            worker_concurrency=overrides.get("WORKER_CONCURRENCY"),
            layer_alias=options.layer,
            ssl_context=ssl_context,
        )
    except (ImproperlyConfigured, ValueError, TypeError) as error:
        listener.close()
        raise UsageError(str(error)) from error
    bound_host, bound_port = runner.address[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    consumers = "consumers run here" if options.run_worker else "no consumers here"
    print(
        f"geventchannels serving {options.wsgi} at "
        f"{'https' if ssl_context else 'http'}://{shown}:{bound_port}/ "
        f"(pid {os.getpid()}, channel layer {options.layer!r}: "
        f"{type(runner.app.layer).__name__}, {consumers})",
        flush=True,
    )
    graceful = runner.serve_until_stopped()
    print(
        "geventchannels stopped%s." % ("" if graceful else " (graceful stop cut short)"), flush=True
    )
    return 0 if graceful else 1
