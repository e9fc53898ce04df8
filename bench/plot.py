"""Draw bench/results/ratios.png from summary.json: this project's advantage per workload.

Run by bench/run.py with the anchors' interpreter (matplotlib lives there, not in the product).
Usage: python plot.py summary.json ratios.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(summary_path: str, png_path: str) -> None:
    with open(summary_path) as f:
        summary = json.load(f)
    labels, series = [], {}
    for document in summary["workloads"]:
        ratios = {k: v for k, v in document["ratios"].items() if v}
        if not ratios:
            continue
        labels.append(document["workload"])
        for system, value in ratios.items():
            series.setdefault(system, {})[document["workload"]] = value
    if not labels:
        raise SystemExit("no ratios to plot")
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels)), 4.5))
    width = 0.8 / max(1, len(series))
    for i, (system, values) in enumerate(sorted(series.items())):
        xs = [j + i * width for j, label in enumerate(labels) if label in values]
        ys = [values[label] for label in labels if label in values]
        bars = ax.bar(xs, ys, width, label=system)
        ax.bar_label(bars, labels=[f"{y:.3g}×" for y in ys], fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(labels))])
    ax.set_xticklabels(labels)
    ax.set_ylabel("geventchannels ÷ system (higher is better for geventchannels)")
    ax.set_title("geventchannels vs the anchors, {}".format(summary["timestamp"]))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
