#!/usr/bin/python3
"""Plots latency percentiles against load from squeezeload JSON results.

Each input is a squeezeload --json_out file: one level (flat object) or a sweep ({"results": [...]}).
Levels are ordered by load (request rate for open loop, else concurrency). Writes one PNG with a panel
per metric (TTFT, TPOT, ITL, E2EL), p50/p90/p99 lines, and output throughput on a twin axis of the
first panel. Needs Debian's python3-matplotlib: run with /usr/bin/python3.

    /usr/bin/python3 client/squeezeload/plot.py sweep.json [more.json ...] -o latency_vs_load.png
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

METRICS = ("ttft", "tpot", "itl", "e2el")
PERCENTILES = ("p50", "p90", "p99")


def load_levels(paths):
    levels = []
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        levels.extend(doc["results"] if "results" in doc else [doc])
    open_loop = all(isinstance(level.get("request_rate"), (int, float)) for level in levels)
    key = "request_rate" if open_loop else "max_concurrency"
    return sorted(levels, key=lambda level: level[key]), key


def plot(levels, load_key, out_path):
    loads = [level[load_key] for level in levels]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.8))
    for ax, metric in zip(axes, METRICS):
        for p in PERCENTILES:
            ax.plot(loads, [level[f"{p}_{metric}_ms"] for level in levels], marker="o", label=p)
        ax.set_title(metric.upper())
        ax.set_xlabel("request rate (req/s)" if load_key == "request_rate" else "concurrency")
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
        if load_key == "max_concurrency" and min(loads) > 0 and max(loads) / min(loads) >= 8:
            ax.set_xscale("log", base=2)
    axes[0].legend(loc="upper left")
    throughput = axes[0].twinx()
    throughput.plot(loads, [level["output_throughput"] for level in levels], "k--", alpha=0.5)
    throughput.set_ylabel("output tok/s (dashed)")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", help="squeezeload JSON files")
    parser.add_argument("-o", "--output", default="latency_vs_load.png")
    args = parser.parse_args()
    levels, load_key = load_levels(args.results)
    plot(levels, load_key, args.output)
    print(f"wrote {args.output} ({len(levels)} load levels)")


if __name__ == "__main__":
    main()
