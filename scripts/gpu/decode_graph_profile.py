#!/usr/bin/env python3
"""Where one replayed decode step's GPU time goes, kernel by kernel, from Nsight Compute's CSV
(scripts/gpu/profile_decode_graph.sh writes it: every node of the decode graphs of one batch size,
each timed alone with caches flushed). The nodes repeat once per replay; this takes the first
replay (the shortest period of the kernel-name sequence), groups its kernels by what they do, and
prints each group's time and share of the step, with the per-layer figure beside it. With --all
every profiled kernel counts (the query prefill steps, which do not repeat), divided by --rounds.

    python3 scripts/gpu/decode_graph_profile.py ncu_decode_graph.csv [--layers 32] [--json FILE]
                                                [--all [--rounds N]]
"""
import argparse
import csv
import json
import re
import sys

# (group, pattern on the kernel's name), first match wins. Ours are the kernels/ entry points;
# libtorch's are its matmuls (cuBLAS / CUTLASS) and elementwise kernels.
GROUPS = [
    ("attention: decode", r"decode_kernel"),
    ("attention: prefill", r"prefill_kernel|prefill_ws_kernel"),
    ("attention: merges", r"merge_parts|merge_pieces|merge_splits"),
    ("attention: selection", r"score_|select_|place_kernel|stream_kernel|compact|lse_|flags_kernel"),
    ("attention: read-ahead", r"read_ahead|advance_"),
    ("append kv", r"append"),
    ("norm / rope", r"rms_norm|rope"),
    ("matmul", r"gemm|gemv|cutlass|xmma|cublas|sm90_|sm80_|splitK|Kernel2"),
    ("sampling", r"greedy|argmax|reduce_greedy|Greedy"),
    ("elementwise / copies", r"elementwise|vectorized|unrolled|copy|cat|index|silu|mul|fill|reduce"),
]


def group_of(name):
    for group, pattern in GROUPS:
        if re.search(pattern, name):
            return group
    return "other"


TIME_SCALE = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}  # to us
BYTE_SCALE = {"byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}


def read_kernels(path):
    """(kernel name, duration in us, DRAM bytes read or None) per profiled node, in order. The
    bytes come from dram__bytes_read.sum where the profile collected it (they show whether a
    kernel's reads came from DRAM or from L2)."""
    by_id = {}
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # ncu prints its own lines before the CSV
    for rec in csv.DictReader(lines):
        metric = rec.get("Metric Name")
        if metric not in ("gpu__time_duration.sum", "dram__bytes_read.sum"):
            continue
        value = float(rec["Metric Value"].replace(",", ""))
        unit = rec.get("Metric Unit", "")
        row = by_id.setdefault(rec.get("ID", len(by_id)), [rec["Kernel Name"], None, None])
        if metric == "gpu__time_duration.sum":
            row[1] = value * TIME_SCALE.get(unit or "nsecond", 1e-3)
        else:
            row[2] = value * BYTE_SCALE.get(unit or "byte", 1.0)
    return [tuple(r) for r in by_id.values() if r[1] is not None]


def first_replay(rows):
    """The rows of one replay: the shortest period p of the kernel-name sequence (names[i] ==
    names[i + p] wherever both exist, over at least two kernels; the layers alone repeat too, but the
    step's first and last kernels break their period), or all rows when nothing repeats."""
    names = [r[0] for r in rows]
    for p in range(1, len(names) - 1):
        if all(names[i] == names[i + p] for i in range(len(names) - p)):
            return rows[:p]
    return rows


def summarize(rows, layers, rounds=0):
    """One replay's kernels by group; with `rounds`, every row divided into that many rounds."""
    step = first_replay(rows) if rounds == 0 else rows
    per = 1.0 / rounds if rounds else 1.0
    total = per * sum(us for _, us, _ in step)
    groups = {}
    for name, us, dram in step:
        g = groups.setdefault(group_of(name), {"kernels": 0, "us": 0.0, "dram_bytes": 0.0, "names": {}})
        g["kernels"] += 1
        g["us"] += per * us
        g["dram_bytes"] += per * (dram or 0.0)
        g["names"][name] = g["names"].get(name, 0.0) + per * us
    return {"kernels": len(step), "total_us": total, "layers": layers, "rounds": rounds, "groups": groups}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("csv")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--json", default="")
    p.add_argument("--all", action="store_true", help="every profiled kernel, not one replay")
    p.add_argument("--rounds", type=int, default=1, help="with --all: the figures per round of this many")
    a = p.parse_args()
    rows = read_kernels(a.csv)
    if not rows:
        sys.exit(f"{a.csv}: no gpu__time_duration.sum rows")
    s = summarize(rows, a.layers, max(1, a.rounds) if a.all else 0)
    what = f"all profiled kernels, per round of {s['rounds']}" if a.all else "one replay"
    print(f"{what}: {s['kernels']} kernels, {s['total_us'] / 1e3:.3f} ms (each kernel alone, caches flushed)")
    print(f"| group | kernels | ms | share | us per layer | DRAM MB read per layer | TB/s |")
    print(f"|---|---:|---:|---:|---:|---:|---:|")
    for group, g in sorted(s["groups"].items(), key=lambda kv: -kv[1]["us"]):
        mb = g["dram_bytes"] / a.layers / 1e6
        rate = g["dram_bytes"] / g["us"] / 1e6 if g["us"] else 0.0
        print(f"| {group} | {g['kernels']} | {g['us'] / 1e3:.3f} | {100 * g['us'] / s['total_us']:.1f}% | "
              f"{g['us'] / a.layers:.1f} | {mb:.1f} | {rate:.2f} |")
    print("\nlargest kernels:")
    names = {}
    for g in s["groups"].values():
        for n, us in g["names"].items():
            names[n] = names.get(n, 0.0) + us
    for n, us in sorted(names.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {us / 1e3:8.3f} ms  {n[:110]}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(s, f, indent=1)


if __name__ == "__main__":
    main()
