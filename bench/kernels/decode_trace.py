#!/usr/bin/env python3
"""Where the decode attention's time goes per CTA: a summary of `kernels_bench --trace FILE` (a
bench/kernels build with -DSQZ_DECODE_TRACE=ON; phases: kernels/decode_attention.h set_decode_trace).

For each traced step (one line of FILE): the kernel's span (first CTA entry to last exit), when the
CTAs passed the wait for the selection, and per phase the median and the slowest CTA's time in µs,
then the phase breakdown of the CTA that finished last (the step's critical path).

    python3 bench/kernels/decode_trace.py trace.jsonl [--lookup paper] [--batch 1]
"""
import argparse
import json
import statistics

PHASES = ["wait for the selection", "split (range known)", "first piece's rows",
          "partial + ticket", "merge", "later pieces + exit"]


def summarise(rec):
    ctas = rec["ctas"]
    ns = [[c[2 * e] for e in range(7)] for c in ctas]
    t0 = min(e[0] for e in ns)
    end = max(e[6] for e in ns)
    working = [e for e, c in zip(ns, ctas) if c[14] > 0]  # slot 7: pieces
    merges = sum(c[15] for c in ctas)
    head = (f"{rec['model']} {rec['context'] // 1024}K b{rec['batch']} {rec['sparsity']:g} {rec['lookup']} "
            f"rep {rec['rep']} ({rec.get('device', '?')}): {len(ctas)} CTAs, {len(working)} with rows, "
            f"{merges} merges; span {(end - t0) / 1e3:.1f} us")
    print(head)
    waits = sorted((e[1] - t0) / 1e3 for e in ns)
    print(f"  wait passed: first {waits[0]:.1f} us, median {statistics.median(waits):.1f}, last {waits[-1]:.1f}")
    print("  | phase | median us | slowest us |")
    for p, name in enumerate(PHASES):
        d = [(e[p + 1] - e[p]) / 1e3 for e in working] or [0.0]
        print(f"  | {name} | {statistics.median(d):.2f} | {max(d):.2f} |")
    last = max(working or ns, key=lambda e: e[6])
    steps = ", ".join(f"{name} {(last[p + 1] - last[p]) / 1e3:.2f}" for p, name in enumerate(PHASES))
    print(f"  last to finish: entry at +{(last[0] - t0) / 1e3:.1f} us; {steps}")
    # When the CTAs end, those with one piece against those that straddle heads (two or more): the
    # straddlers pay a second piece's start mid-stream (decode_attention.cu, "Work split").
    for label, group in (("one piece", [e for e, c in zip(ns, ctas) if c[14] == 1]),
                         ("2+ pieces", [e for e, c in zip(ns, ctas) if c[14] >= 2])):
        if not group:
            continue
        ends = sorted((e[6] - t0) / 1e3 for e in group)
        p95 = ends[min(len(ends) - 1, int(0.95 * len(ends)))]
        print(f"  ends, {len(ends)} CTAs with {label}: first {ends[0]:.1f} us, median {statistics.median(ends):.1f}, "
              f"95th percentile {p95:.1f}, last {ends[-1]:.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--lookup")
    ap.add_argument("--batch", type=int)
    a = ap.parse_args()
    with open(a.trace) as f:
        for line in f:
            rec = json.loads(line)
            if a.lookup and rec["lookup"] != a.lookup:
                continue
            if a.batch and rec["batch"] != a.batch:
                continue
            summarise(rec)


if __name__ == "__main__":
    main()
