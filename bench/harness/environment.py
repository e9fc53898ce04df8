"""What the harness needs on the machine, installed on first use, and a description of it.

The anchors live in their own virtualenv (bench/.venv-anchors) so that Channels 4, daphne and
uvicorn never touch the project's environment. The load generator is Node (bench/loadgen), wrk
for plain HTTP, and a small C echo client (bench/loadgen/wsecho.c, built with the machine's C
compiler) for the workloads whose servers share the cores with it; all are installed here when
missing and we are root.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
LOADGEN = BENCH / "loadgen"
ANCHORS_VENV = BENCH / ".venv-anchors"
ANCHORS_REQUIREMENTS = BENCH / "requirements-anchors.txt"
MAIN_PYTHON = Path(sys.executable)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(*packages: str) -> None:
    say("installing {} with apt-get".format(" ".join(packages)))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def anchors_python() -> Path:
    """The anchors' interpreter, creating or refreshing bench/.venv-anchors when needed."""
    python = ANCHORS_VENV / "bin" / "python"
    wanted = hashlib.sha256(ANCHORS_REQUIREMENTS.read_bytes()).hexdigest()
    stamp = ANCHORS_VENV / ".requirements-sha256"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    say(f"preparing the anchors' virtualenv {ANCHORS_VENV} (takes a minute once)")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ANCHORS_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(ANCHORS_REQUIREMENTS)], check=True)
    stamp.write_text(wanted)
    return python


def node_loadgen() -> list[str]:
    """The command prefix of the Node load generator, installing its npm packages if needed."""
    node = shutil.which("node")
    if node is None:
        if not _can_apt():
            raise RuntimeError(
                "node is not on PATH: install Node.js 18+ (apt-get install nodejs npm)"
            )
        apt_install("nodejs", "npm")
        node = shutil.which("node")
    if not (LOADGEN / "node_modules" / "ws").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not on PATH: install it (apt-get install npm)")
        say(f"installing the load generator's npm packages in {LOADGEN}")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=LOADGEN,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return [node, str(LOADGEN / "loadgen.js")]


def native_echo(build_dir: Path) -> str:
    """The C echo client, compiled into ``build_dir`` (a fraction of a second)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        if not _can_apt():
            raise RuntimeError("no C compiler on PATH: install one (apt-get install gcc)")
        apt_install("gcc", "libc6-dev")
        compiler = shutil.which("gcc")
    binary = build_dir / "wsecho"
    build_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(compiler), "-O2", "-o", str(binary), str(LOADGEN / "wsecho.c")], check=True)
    return str(binary)


def wrk(install: bool) -> str | None:
    """The wrk binary; installed with apt when ``install`` and we are root, else None."""
    found = shutil.which("wrk")
    if found is None and install and _can_apt():
        apt_install("wrk")
        found = shutil.which("wrk")
    return found


def redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found is None and _can_apt():
        apt_install("redis-server")
        found = shutil.which("redis-server")
    return found


def raise_open_files(wanted: int = 65536) -> int:
    """Raise this process's (and so its children's) open-file limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted and os.geteuid() == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _versions(python: Path, names: list[str]) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        f"for n in {names!r}:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=30)
        return json.loads(done.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        return (done.stdout or done.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def machine(anchors: Path | None, wrk_path: str | None) -> dict:
    """Cores, CPU model, kernel, Python and the versions of everything measured."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "node": _first_line(["node", "--version"]),
        "wrk": _first_line([wrk_path, "--version"]) if wrk_path else None,
        "redis": _first_line(["redis-server", "--version"])
        if shutil.which("redis-server")
        else None,
        "project": _versions(
            MAIN_PYTHON,
            ["geventchannels", "django", "gevent", "greenlet", "gunicorn", "websockets", "redis"],
        ),
    }
    if anchors is not None:
        info["anchors"] = _versions(
            anchors,
            [
                "django",
                "gunicorn",
                "gevent",
                "channels",
                "channels-redis",
                "daphne",
                "uvicorn",
                "twisted",
                "uvloop",
                "httptools",
                "websockets",
            ],
        )
    return info
