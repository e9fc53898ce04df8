#!/usr/bin/env python3
"""Benchmark geventchannels against the anchors in one run (`make bench`, `make bench-quick`).

Each workload starts each system's server fresh, loads it from the Node load generator or
wrk on 127.0.0.1, prints a table, and writes bench/results/<workload>.json; the run ends with
summary.json, tables.md, ratios.png and the results block of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import environment, procs, report, systems
from harness.profiling import profiler
from harness.workloads import FULL, QUICK, WORKLOADS, Context

BENCH = environment.BENCH
QUICK_SYSTEMS = [systems.PROJECT, "bare"]
REDIS_WORKLOADS = {"broadcast_redis", "ws_echo_redis", "task_redis", "delay"}
#: Workloads that load their servers with the C echo client (bench/loadgen/wsecho.c).
NATIVE_ECHO_WORKLOADS = {"ws_echo_redis"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    names = [w.name for w in WORKLOADS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, this project and the bare ceiling only (a smoke run)",
    )
    parser.add_argument("--only", help="comma-separated workloads, of: " + ", ".join(names))
    parser.add_argument(
        "--systems", help="comma-separated systems, of: " + ", ".join(systems.SYSTEMS)
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=BENCH / "results",
        help="where the JSON, tables and plot go (default bench/results)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin servers to CPU 0 and the load generator to CPU 1",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record geventchannels with py-spy during http, ws_echo and broadcast",
    )
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help="do not rewrite the results block of docs/benchmarks.md",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: redo tables.md, the plot and the docs block from "
        "the summary.json already in --out",
    )
    args = parser.parse_args(argv)
    args.workloads = _pick(args.only, names, "workload")
    default_systems = QUICK_SYSTEMS if args.quick else list(systems.SYSTEMS)
    args.system_names = _pick(args.systems, default_systems, "system", list(systems.SYSTEMS))
    return args


def _pick(
    text: str | None, default: list[str], what: str, known: list[str] | None = None
) -> list[str]:
    if not text:
        return list(default)
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in (known or default)]
    if unknown:
        raise SystemExit(
            "unknown {} {}; choose from {}".format(
                what, ", ".join(unknown), ", ".join(known or default)
            )
        )
    return chosen


def _stop_on_signal(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.report_only:
        return rewrite_report(args)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    scratch = Path(tempfile.mkdtemp(prefix="geventchannels-bench-"))
    keep_logs = True
    try:
        code = run(args, scratch)
        keep_logs = code != 0
        return code
    except KeyboardInterrupt as stop:
        environment.say(f"interrupted ({stop or 'Ctrl-C'}): stopping every server and client")
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(scratch / "db", ignore_errors=True)
        if not keep_logs:
            shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, scratch: Path) -> int:
    say = environment.say
    needs_anchors = any(systems.SYSTEMS[name].anchor for name in args.system_names)
    anchors = environment.anchors_python() if needs_anchors or args.profile else None
    files_limit = environment.raise_open_files()
    pin = not args.no_pin and (procs.CORES > 1)
    logs = scratch / "logs"
    args.out.mkdir(parents=True, exist_ok=True)
    database = scratch / "db" / "bench.sqlite3"
    database.parent.mkdir(parents=True)
    subprocess.run(
        [str(environment.MAIN_PYTHON), str(BENCH / "benchsite" / "prepare_db.py")],
        check=True,
        cwd=BENCH,
        env={"PYTHONPATH": str(BENCH), "BENCH_DB": str(database), "PATH": "/usr/bin:/bin"},
    )
    wrk_path = environment.wrk(install=not args.quick)
    ctx = Context(
        sizes=QUICK if args.quick else FULL,
        logs=logs,
        database=database,
        anchors=anchors,
        node=environment.node_loadgen(),
        wrk=wrk_path,
        native_echo=environment.native_echo(scratch / "bin")
        if NATIVE_ECHO_WORKLOADS & set(args.workloads)
        else None,
        server_cpus="0" if pin else None,
        client_cpus="1" if pin else None,
        redis_binary=environment.redis_server() if REDIS_WORKLOADS & set(args.workloads) else None,
    )
    if args.profile:
        ctx.profile = profiler(anchors.parent / "py-spy", args.out, logs)
    runner = _project_runner() if systems.PROJECT in args.system_names else None
    settings = {
        "quick": args.quick,
        "server_cpus": ctx.server_cpus,
        "client_cpus": ctx.client_cpus,
        "open_files": files_limit,
        "project_runner": runner,
        "loadgen": "node + "
        + ("wrk" if wrk_path else "node http")
        + (" + wsecho (C)" if ctx.native_echo else ""),
    }
    machine = environment.machine(anchors, wrk_path)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    say(
        "machine: {cores} cores, {cpu}, Python {python}, load average {loadavg_start}".format(
            **machine
        )
    )
    if os.getloadavg()[0] > 0.5 * procs.CORES:
        say(
            f"warning: the machine is busy (load average {os.getloadavg()[0]:.1f}): numbers will be low and noisy"
        )
    say(f"logs of this run: {logs}")
    documents = []
    by_name = {w.name: w for w in WORKLOADS}
    for name in args.workloads:
        workload = by_name[name]
        results = {}
        for system in args.system_names:
            if workload.systems_key not in systems.SYSTEMS[system].workloads:
                continue
            say(f"[{name}] {system} ...")
            metrics = _run_one(workload, ctx, system)
            # A workload may measure a system in several configurations: extra rows.
            extra_rows = metrics.pop("rows", {})
            results[system] = metrics
            results.update(extra_rows)
        if not results:
            continue
        params = ctx.sizes[workload.systems_key]
        documents.append(report.write_workload(args.out, workload, params, results, machine, stamp))
        print(
            f"\n== {workload.title} ({report.params_line(params)})\n{report.text_table(workload, results)}",
            flush=True,
        )
    if not documents:
        say("nothing ran: no chosen system supports the chosen workloads")
        return 1
    machine["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    tables = report.write_summary(args.out, documents, machine, stamp, settings, by_name)
    plot_error = report.plot(_plotter(anchors), args.out, BENCH / "plot.py")
    say("results: {}{}".format(args.out, f" (no plot: {plot_error})" if plot_error else ""))
    if not args.quick and not args.no_docs and args.out == BENCH / "results":
        report.update_docs(environment.ROOT / "docs" / "benchmarks.md", tables)
    failed = [d["workload"] for d in documents if any("error" in m for m in d["systems"].values())]
    if failed:
        say("some runs failed (see the tables and {}): {}".format(logs, ", ".join(failed)))
        return 3
    return 0


def rewrite_report(args: argparse.Namespace) -> int:
    summary = json.loads((args.out / "summary.json").read_text())
    by_name = {w.name: w for w in WORKLOADS}
    tables = report.write_tables(
        args.out,
        summary["workloads"],
        summary["machine"],
        summary["timestamp"],
        summary["settings"],
        by_name,
    )
    plot_error = report.plot(_plotter(None), args.out, BENCH / "plot.py")
    if plot_error:
        environment.say(f"no plot: {plot_error}")
    if not args.no_docs and args.out == BENCH / "results" and not summary["settings"].get("quick"):
        report.update_docs(environment.ROOT / "docs" / "benchmarks.md", tables)
    print(tables.read_text())
    return 0


def _plotter(anchors: Path | None) -> Path:
    """matplotlib lives in the anchors' virtualenv; use it when it exists."""
    existing = environment.ANCHORS_VENV / "bin" / "python"
    return anchors or (existing if existing.exists() else environment.MAIN_PYTHON)


def _project_runner() -> str:
    try:
        return systems.project_runner()
    except RuntimeError as error:
        return f"unavailable ({error})"


def _run_one(workload, ctx: Context, system: str) -> dict:
    try:
        return workload.run(ctx, system)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # one system failing must not stop the others
        environment.say(f"  {system} failed: {error}")
        return {"error": f"{type(error).__name__}: {error}"}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
