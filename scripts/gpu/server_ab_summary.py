#!/usr/bin/env python3
"""The summary of scripts/gpu/server_ab.sh: two trees' full_model_bench.py runs, alternated on one
GPU (base, new, base, new), as one markdown table per (mode, batch): each tree's TPOT and TTFT
medians over its runs, new / base, and the new tree's TPOT over its byte limit.

    python3 scripts/gpu/server_ab_summary.py DIR [BASE_COMMIT]

DIR holds base_1, new_1, base_2, new_2, ... (each a full_model_bench.py --out folder with its
full_<shape>_<context>.json). A run that wrote no JSON is named, not skipped silently.
"""
import glob
import json
import os
import statistics
import sys


def runs_of(folder, tree):
    """{(shape, context, mode, batch): [decode row, ...]} over the tree's run folders, and the
    folders without a result."""
    rows, missing = {}, []
    for run in sorted(glob.glob(os.path.join(folder, tree + "_*"))):
        if not os.path.isdir(run):
            continue  # the run's log beside its folder (server_ab.sh: <tree>_<i>.log)
        files = glob.glob(os.path.join(run, "full_*.json"))
        if not files:
            missing.append(os.path.basename(run))
            continue
        for path in files:
            with open(path) as f:
                result = json.load(f)
            for r in result.get("decode", []):
                key = (result.get("shape"), result.get("context"), r.get("mode"), r.get("batch"))
                rows.setdefault(key, []).append(r)
    return rows, missing


def median_of(rows, field):
    values = [r[field] for r in rows if r.get(field) is not None]
    return statistics.median(values) if values else None


def fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def summary(folder, base_commit=""):
    base, base_missing = runs_of(folder, "base")
    new, new_missing = runs_of(folder, "new")
    lines = [f"TPOT and TTFT ms, medians of the alternated runs (base {base_commit[:7] or '?'})", "",
             "| shape | context | mode | batch | base TPOT | new TPOT | new / base | new × limit "
             "| base TTFT | new TTFT | runs |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key in sorted(set(base) | set(new), key=lambda k: tuple(str(x) for x in k)):
        b, n = base.get(key, []), new.get(key, [])
        tb, tn = median_of(b, "tpot_ms"), median_of(n, "tpot_ms")
        ratio = tn / tb if tb and tn else None
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {fmt(tb)} | {fmt(tn)} | {fmt(ratio)} | "
                     f"{fmt(median_of(n, 'tpot_over_limit'))} | {fmt(median_of(b, 'ttft_ms'), 1)} | "
                     f"{fmt(median_of(n, 'ttft_ms'), 1)} | {len(b)} + {len(n)} |")
    for name in base_missing + new_missing:
        lines.append(f"no result in {name} (see its log)")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    print(summary(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else ""))
