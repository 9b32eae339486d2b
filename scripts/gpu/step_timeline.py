#!/usr/bin/env python3
"""Where one replayed decode step's time goes as it ran: the GPU's work from one replay of the decode
graph to the next (the kernels, and the copies and kernels outside the graph), each charged the
time it adds to the step, the time the GPU sat idle, and the host's CUDA calls in that period. From
the trace of scripts/gpu/cupti_trace.cc (scripts/gpu/profile_decode_graph.sh --timeline).

scripts/gpu/decode_graph_profile.py times each kernel alone with caches flushed: what a kernel
costs, not what the step pays for it, since under programmatic dependent launch a kernel starts
before the one before it ends (its duration then includes its wait) and the weight products read
ahead under the attention. Here the work keeps its real start and end: in the order they end, each
is charged the part of [start, end] after everything that ended before it (its exposed time). The
charges and the idle gaps add up to the period, one replay's start to the next's.

    python3 scripts/gpu/step_timeline.py TRACE.csv [--layers 32] [--json FILE]
"""
import argparse
import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decode_graph_profile import group_of  # noqa: E402

GPU_KINDS = ("kernel", "memcpy", "memset")


def read_trace(path):
    """[(kind, start ns, end ns, graph node, name)] by start."""
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"kind", "start_ns", "end_ns", "graph_node", "name"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: not a cupti_trace.cc CSV (kind,start_ns,end_ns,stream,graph_node,name)")
        for r in reader:
            rows.append((r["kind"], int(r["start_ns"]), int(r["end_ns"]), int(r["graph_node"]), r["name"]))
    return sorted(rows, key=lambda r: r[1])


def period(rows):
    """(t1, t2): the first graph kernel's start and the start of the same node's next run (the next
    replay), or None when the trace holds no second replay."""
    graph = [r for r in rows if r[0] == "kernel" and r[3] != 0]
    if not graph:
        return None
    first = graph[0]
    again = next((r for r in graph[1:] if r[3] == first[3]), None)
    return (first[1], again[1]) if again else None


def exposed_times(work, t0):
    """Each item's exposed time (ns), in the items' order, and the idle time from t0 to the last
    end: in the order of their ends, an item is charged max(0, end - max(start, latest end so far))."""
    charge = [0.0] * len(work)
    t, idle = t0, 0.0
    for i in sorted(range(len(work)), key=lambda i: work[i][2]):
        _, start, end, _, _ = work[i]
        if start > t:
            idle += start - t
            t = start
        charge[i] = max(0.0, end - t)
        t = max(t, end)
    return charge, idle, t


def group(kind, name, in_graph):
    if kind != "kernel":
        return f"{kind} (outside the graph)" if not in_graph else kind
    g = group_of(name)
    return g if in_graph else f"{g} (outside the graph)"


def summarize(rows, layers):
    span = period(rows)
    if span is None:
        raise ValueError("the trace holds no two replays of a decode graph (SQZ_TRACE_WINDOWS >= 2)")
    t1, t2 = span
    work = [r for r in rows if r[0] in GPU_KINDS and r[1] < t2 and r[2] > t1]
    work = [(k, max(s, t1), min(e, t2), n, name) for k, s, e, n, name in work]
    charge, idle, last = exposed_times(work, t1)
    idle += max(0, t2 - last)
    groups = {}
    for (kind, start, end, node, name), c in zip(work, charge):
        g = groups.setdefault(group(kind, name, node != 0), {"count": 0, "exposed_us": 0.0, "duration_us": 0.0})
        g["count"] += 1
        g["exposed_us"] += c / 1e3
        g["duration_us"] += (end - start) / 1e3
    api = {}
    for kind, start, end, _, name in rows:
        if kind == "api" and t1 <= start < t2:
            a = api.setdefault(name, {"count": 0, "us": 0.0})
            a["count"] += 1
            a["us"] += (min(end, t2) - start) / 1e3
    graph_end = max((e for k, s, e, n, _ in work if k == "kernel" and n != 0), default=t1)
    return {"period_us": (t2 - t1) / 1e3, "idle_us": idle / 1e3, "graph_us": (graph_end - t1) / 1e3,
            "layers": layers, "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1]["exposed_us"])),
            "api": dict(sorted(api.items(), key=lambda kv: -kv[1]["us"])[:12])}


def text(s):
    out = [f"One decode step, replay to replay: {s['period_us'] / 1e3:.3f} ms; the graph's kernels end at "
           f"{s['graph_us'] / 1e3:.3f} ms; the GPU idle {s['idle_us']:.1f} us",
           "| work | count | exposed ms | share | exposed us per layer | summed durations ms |",
           "|---|---:|---:|---:|---:|---:|"]
    p = s["period_us"] or 1.0
    for name, g in s["groups"].items():
        out.append(f"| {name} | {g['count']} | {g['exposed_us'] / 1e3:.3f} | {100 * g['exposed_us'] / p:.1f}% | "
                   f"{g['exposed_us'] / s['layers']:.1f} | {g['duration_us'] / 1e3:.3f} |")
    out.append(f"| idle | - | {s['idle_us'] / 1e3:.3f} | {100 * s['idle_us'] / p:.1f}% | - | - |")
    out += ["", "host CUDA calls in the period (count, us):"]
    out += [f"  {a['count']:5d} {a['us']:9.1f}  {name}" for name, a in s["api"].items()]
    return "\n".join(out)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    s = summarize(read_trace(a.trace), a.layers)
    print(text(s))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(s, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
