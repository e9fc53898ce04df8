"""Results: ratios to this project, text and Markdown tables, JSON files, the docs block."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from harness.systems import PROJECT, SYSTEMS

DOCS_START = "<!-- bench-results:start -->"
DOCS_END = "<!-- bench-results:end -->"


def ratio(workload, project: dict | None, other: dict | None) -> float | None:
    """How many times better this project is than ``other`` on the workload's main metric."""
    if not project or not other:
        return None
    mine, theirs = project.get(workload.metric), other.get(workload.metric)
    if not isinstance(mine, int | float) or not isinstance(theirs, int | float):
        return None
    if workload.higher_is_better:
        return round(mine / theirs, 2) if theirs else None
    return round(theirs / mine, 2) if mine else None


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table_rows(workload, results: dict) -> tuple[list[str], list[list[str]]]:
    header = ["system", *[label for _, label in workload.columns], "geventchannels ×"]
    rows = []
    for name, metrics in results.items():
        label = metrics.get("label") or (SYSTEMS[name].label if name in SYSTEMS else name)
        if "error" in metrics:
            rows.append([label, "failed (see below)"] + [""] * (len(header) - 2))
            continue
        r = ratio(workload, results.get(PROJECT), metrics)
        rows.append(
            [
                label,
                *[_cell(metrics.get(key)) for key, _ in workload.columns],
                "1.00" if name == PROJECT and r else _cell(r),
            ]
        )
    return header, rows


def errors(results: dict) -> list[str]:
    """One line per failed system: what went wrong, for under the table."""
    return [
        "{}: {}".format(name, " / ".join(m["error"].strip().splitlines()[-3:])[:400])
        for name, m in results.items()
        if "error" in m
    ]


def text_table(workload, results: dict) -> str:
    header, rows = table_rows(workload, results)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines += ["  " + line for line in errors(results)]
    return "\n".join(lines)


def markdown_table(workload, results: dict) -> str:
    header, rows = table_rows(workload, results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    failures = errors(results)
    if failures:
        lines += [""] + ["- failed: " + line.replace("|", "/") for line in failures]
    return "\n".join(lines)


def params_line(params: dict) -> str:
    return ", ".join("{}={}".format(*item) for item in params.items())


def write_workload(
    out: Path, workload, params: dict, results: dict, machine: dict, stamp: str
) -> dict:
    document = {
        "workload": workload.name,
        "title": workload.title,
        "metric": workload.metric,
        "higher_is_better": workload.higher_is_better,
        "params": params,
        "timestamp": stamp,
        "machine": machine,
        "systems": results,
        "ratios": {
            name: ratio(workload, results.get(PROJECT), metrics)
            for name, metrics in results.items()
            if name != PROJECT
        },
    }
    _write_json(out / (f"{workload.name}.json"), document)
    return document


def _write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    temporary.replace(path)


def write_summary(
    out: Path,
    documents: list[dict],
    machine: dict,
    stamp: str,
    settings: dict,
    workloads_by_name: dict,
) -> Path:
    _write_json(
        out / "summary.json",
        {"timestamp": stamp, "machine": machine, "settings": settings, "workloads": documents},
    )
    return write_tables(out, documents, machine, stamp, settings, workloads_by_name)


def write_tables(
    out: Path,
    documents: list[dict],
    machine: dict,
    stamp: str,
    settings: dict,
    workloads_by_name: dict,
) -> Path:
    """tables.md: the machine, the settings and one Markdown table per workload."""
    parts = [
        f"Run of {stamp}.\n\n- Machine: {machine_line(machine)}\n"
        f"- Versions: {versions_line(machine)}\n- {settings_line(settings)}"
    ]
    for document in documents:
        workload = workloads_by_name[document["workload"]]
        table = markdown_table(workload, document["systems"])
        parts.append(f"### {document['title']}\n\n{params_line(document['params'])}\n\n{table}")
    tables = out / "tables.md"
    tables.write_text("\n\n".join(parts) + "\n")
    return tables


def machine_line(machine: dict) -> str:
    return (
        f"{machine['cores']} cores ({machine['cpu']}), {machine['memory_gb']} GB, "
        f"Linux {machine['kernel']}, Python {machine['python']}, Node {machine['node']}, "
        f"{_short(machine.get('wrk'), 'wrk')}, {_short(machine.get('redis'), 'redis')}; "
        f"load average (1/5/15 min) {machine.get('loadavg_start')} at start, "
        f"{machine.get('loadavg_end')} at end"
    )


def _short(version_line: str | None, name: str) -> str:
    """'wrk debian/4.1.0 [epoll] Copyright ...' -> 'wrk debian/4.1.0'; 'Redis server v=7.0.15 ...' -> 'redis 7.0.15'."""
    if not version_line:
        return f"no {name}"
    match = re.search(r"v=(\S+)", version_line)
    if match:
        return f"{name} {match.group(1)}"
    return version_line.split(" [")[0]


def versions_line(machine: dict) -> str:
    project = ", ".join(f"{k} {v}" for k, v in machine.get("project", {}).items())
    anchors = ", ".join(f"{k} {v}" for k, v in machine.get("anchors", {}).items())
    return f"project env: {project}" + (f"; anchors env: {anchors}" if anchors else "")


def settings_line(settings: dict) -> str:
    return (
        f"Server pinned to CPU {settings.get('server_cpus') or 'any'}, load generator to CPU "
        f"{settings.get('client_cpus') or 'any'}; geventchannels served by "
        f"{settings.get('project_runner')}; load from {settings.get('loadgen')}."
    )


def plot(python: Path, out: Path, script: Path) -> str | None:
    """Draw ratios.png with ``python`` (it needs matplotlib); the reason if it could not."""
    done = subprocess.run(
        [str(python), str(script), str(out / "summary.json"), str(out / "ratios.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "plot.py failed").strip().splitlines()
        return lines[-1]
    return None


def update_docs(docs: Path, tables: Path) -> None:
    """Replace the results block of docs/benchmarks.md with the new tables."""
    if not docs.exists():
        return
    text = docs.read_text()
    if DOCS_START not in text or DOCS_END not in text:
        return
    block = f"{DOCS_START}\n{tables.read_text().strip()}\n{DOCS_END}"
    text = re.sub(
        re.escape(DOCS_START) + ".*?" + re.escape(DOCS_END), lambda _: block, text, flags=re.S
    )
    docs.write_text(text)
