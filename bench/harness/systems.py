"""The systems measured and how to start each one as a server on a free port.

Every system serves the same Django site (bench/benchsite); only the server and the stack
differ. A Server is a context manager: it starts the process in its own group, waits until
/hello/ answers, and kills the whole group on exit.
"""

from __future__ import annotations

import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from harness import environment, procs

PROJECT = "geventchannels"


@dataclass(frozen=True)
class System:
    name: str
    label: str
    anchor: bool
    workloads: frozenset = field(default_factory=frozenset)


SYSTEMS = {
    s.name: s
    for s in [
        System(
            PROJECT,
            "geventchannels (this project)",
            False,
            frozenset(
                {
                    "http",
                    "http_db",
                    "ws_echo",
                    "ws_echo_auth",
                    "ws_echo_deflate",
                    "broadcast",
                    "broadcast_redis",
                    "ws_echo_redis",
                    "task_redis",
                    "idle",
                    "longpoll",
                    "delay",
                }
            ),
        ),
        System("django-gevent", "Django, gunicorn -k gevent", True, frozenset({"http", "http_db"})),
        System(
            "daphne",
            "Channels 4, daphne",
            True,
            frozenset(
                {
                    "http",
                    "http_db",
                    "ws_echo",
                    "ws_echo_auth",
                    "broadcast",
                    "broadcast_redis",
                    "idle",
                    "longpoll",
                }
            ),
        ),
        System(
            "uvicorn",
            "Channels 4, uvicorn",
            True,
            frozenset(
                {
                    "http",
                    "http_db",
                    "ws_echo",
                    "ws_echo_auth",
                    "broadcast",
                    "broadcast_redis",
                    "ws_echo_redis",
                    "idle",
                }
            ),
        ),
        System(
            "bare",
            "bare gevent (ceiling)",
            False,
            frozenset({"http", "ws_echo", "broadcast", "idle", "longpoll"}),
        ),
    ]
}


#: What each worker of a multi-worker server logs once it serves.
READY_LINES = {PROJECT: "consumers on:", "uvicorn": "Application startup complete"}


def project_runner() -> str:
    """How geventchannels is served: its gunicorn worker if present, else its console command."""
    package = environment.ROOT / "geventchannels"
    if (package / "gunicorn.py").exists():
        return "gunicorn"
    if (package / "cli.py").exists():
        return "serve"
    raise RuntimeError(
        "geventchannels has neither gunicorn.py nor cli.py yet: nothing can serve it"
    )


def _command(system: str, port: int, anchors: Path | None, workers: int = 1) -> list[str]:
    """The command line of ``system`` on ``port``; ``workers`` > 1 uses the server's own
    multi-process mode (gunicorn ``-w`` with ``--reuse-port``, so the kernel spreads the
    connections; uvicorn ``--workers``)."""
    bind = f"127.0.0.1:{port}"
    main = str(environment.MAIN_PYTHON)
    if workers > 1 and system not in (PROJECT, "uvicorn"):
        raise ValueError(f"{system} has no multi-worker mode here")
    if system == PROJECT:
        if project_runner() == "gunicorn":
            return [
                main,
                "-m",
                "gunicorn",
                "-k",
                "geventchannels.gunicorn.Worker",
                "-w",
                str(workers),
                *(["--reuse-port"] if workers > 1 else []),
                "--worker-connections",
                "20000",
                "--backlog",
                "4096",
                "-b",
                bind,
                "benchsite.wsgi:application",
            ]
        script = environment.MAIN_PYTHON.parent / "geventchannels"
        return [str(script), "serve", "benchsite.wsgi", "--bind", bind]
    if system == "bare":
        return [main, str(environment.BENCH / "servers" / "bare.py"), "--port", str(port)]
    if anchors is None:
        raise RuntimeError(f"{system} needs the anchors' virtualenv")
    bin_dir = anchors.parent
    if system == "django-gevent":
        return [
            str(anchors),
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            "1",
            "--worker-connections",
            "20000",
            "--backlog",
            "4096",
            "-b",
            bind,
            "benchsite.wsgi:application",
        ]
    if system == "daphne":
        return [
            str(bin_dir / "daphne"),
            "-v",
            "0",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "benchsite.asgi:application",
        ]
    if system == "uvicorn":
        return [
            str(bin_dir / "uvicorn"),
            "benchsite.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "info" if workers > 1 else "warning",
            "--backlog",
            "4096",
            *(["--workers", str(workers)] if workers > 1 else []),
        ]
    raise ValueError(f"unknown system {system!r}")


def _stack(system: str) -> str:
    return {PROJECT: "geventchannels", "daphne": "channels4", "uvicorn": "channels4"}.get(
        system, "django"
    )


class Server:
    """One running server process of ``system``."""

    def __init__(
        self,
        system: str,
        logs: Path,
        anchors: Path | None,
        database: Path,
        cpus: str | None = None,
        layer: str = "memory",
        redis_url: str = "",
        workers: int = 1,
    ) -> None:
        self.system = system
        self.workers = workers
        self.port = procs.free_port()
        self.log = logs / f"{system}-{self.port}.log"
        self.command = procs.pinned(_command(system, self.port, anchors, workers), cpus)
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            # The geventchannels of this tree, whatever the virtualenv has installed.
            "PYTHONPATH": os.pathsep.join([str(environment.BENCH), str(environment.ROOT)]),
            "DJANGO_SETTINGS_MODULE": "benchsite.settings",
            "BENCH_STACK": _stack(system),
            "BENCH_LAYER": layer,
            "BENCH_REDIS_URL": redis_url,
            "BENCH_DB": str(database),
            "PYTHONUNBUFFERED": "1",
        }
        self.process = None

    def __enter__(self) -> Server:
        self.process = procs.start(self.command, self.log, env=self.env, cwd=environment.BENCH)
        try:
            self._wait_ready()
        except Exception as error:
            self.__exit__()
            raise RuntimeError(f"{error}\n{self.log_tail()}") from error
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process is not None:
            procs.stop(self.process)

    def _wait_ready(self, timeout: float = 60.0) -> None:
        procs.wait_for_port(self.port, self.process, timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url("/hello/"), timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError as error:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.system} did not answer /hello/ ({error}); see {self.log}"
                    ) from error
            time.sleep(0.1)
        if self.workers > 1:
            self._wait_workers(deadline)

    def _wait_workers(self, deadline: float) -> None:
        """Until every worker serves: otherwise the first one takes all the sockets."""
        ready_line = READY_LINES[self.system]
        while self.log.read_text(errors="replace").count(ready_line) < self.workers:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"not all {self.workers} {self.system} workers started")
            time.sleep(0.1)

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def serving_pid(self) -> int:
        """The process that holds the connections: the largest process of the server's tree."""
        return max(procs.tree(self.process.pid), key=lambda pid: _safe_rss(pid))

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _safe_rss(pid: int) -> int:
    try:
        return procs.rss_bytes(pid)
    except OSError:
        return 0
