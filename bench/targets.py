#!/usr/bin/env python3
"""The squeezed-attention kernels' and the service's performance targets against measured JSON.

Prints one markdown table: each target, what was measured (with the row it came from), the
target, and met / MISSED / not measured. Reads only result files, so it runs anywhere:
  --kernels  the kernels bench merged with its dense baselines (bench/kernels/kernels_bench, then
             bench/kernels/sdpa_baseline.py --sparse ... --out FILE), any number: a configuration
             in a later file replaces that configuration's rows from earlier ones
  --full     full-size end-to-end runs (scripts/gpu/full_model_bench.py), any number
  --accuracy the long-context evaluation (scripts/gpu/eval_long_context.sh)
Defaults: the H200 files under bench/results/, and for the end-to-end rows the H100 runs of record
after them (each figure names its GPU: the two differ, docs/performance.md). The targets and the authors' published figures are
the ones docs/performance.md "Against the targets" quotes; a row missing from the files is "not
measured", never a pass.

    python3 bench/targets.py
    python3 bench/targets.py --kernels gpu-out/kernels_bench_h200.json --full gpu-out/full_*.json
"""
import argparse
import glob
import json
import os
import sys

from step_bytes import SHAPES, decode_step_bytes

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# The authors' published Triton pipeline (their kernels + their modeling_llama.py's wrapper), 90%
# pruned, Llama-2 MHA 32 x 128, 1K query tokens, on the H200: microseconds per layer.
AUTHORS_PREFILL_US = {131072: 1890.0, 524288: 6700.0}


def load(path):
    with open(path) as f:
        return json.load(f)


def best_dense_us(row):
    dense = [row[k] for k in ("flash_us", "cudnn_us") if row.get(k)]
    return min(dense) if dense else None


def kernel_rows(rows, **match):
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def fastest(rows, lookups):
    """The fastest row among these lookups (the kernels' best configuration), or None."""
    candidates = [r for r in rows if r.get("lookup") in lookups and r.get("total_us")]
    return min(candidates, key=lambda r: r["total_us"]) if candidates else None


def gpu_of(run):
    """The GPU a full_model_bench.py run names ("H100", "H200"), or None."""
    return next((g for g in ("H100", "H200") if g in run.get("device", "")), None)


def runs_of_record(paths):
    """The runs of record among full_model_bench.py files: full_<shape>_<context>_<device>.json holds a
    configuration's latest run on that GPU; suffixed names are earlier variants."""
    return [p for p in paths if len(os.path.basename(p).split("_")) == 4]


def run_label(run, batch):
    gpu = gpu_of(run)
    return "%s %dK b%d%s" % (run["shape"], run["context"] // 1024, batch, " " + gpu if gpu else "")


def row_name(r):
    return "%s %s %dK x%d b%d %s" % (r["model"], r["mode"], r["context"] // 1024, r["query_len"], r["batch"],
                                      r["lookup"])


class Table:
    def __init__(self):
        self.lines = []
        self.missed = 0

    def add(self, target, measured, verdict, source):
        if verdict == "MISSED":
            self.missed += 1
        self.lines.append("| %s | %s | %s | %s |" % (target, measured, verdict, source))

    def text(self):
        head = ["| target | measured | verdict | from |", "|---|---|---|---|"]
        return "\n".join(head + self.lines)


def verdict(ok):
    return "met" if ok else "MISSED"


def kernel_results(paths):
    """The rows of several kernels-bench files; a configuration (model, mode, context, batch, query
    length) in a later file replaces all of that configuration's rows from earlier files, so that
    every comparison within a configuration comes from one run. Each row remembers its file."""
    by_config = {}
    for path in paths:
        fresh = {}
        for r in load(path)["results"]:
            r = dict(r, file=os.path.basename(path))
            fresh.setdefault((r["model"], r["mode"], r["context"], r["batch"], r["query_len"]), []).append(r)
        by_config.update(fresh)
    return [r for rows in by_config.values() for r in rows]


def kernel_targets(table, paths):
    paths = [p for p in paths if p and os.path.exists(p)]
    if not paths:
        for t in ("prefill 1K x 512K >= 4.5x best dense", "prefill >= 2x the authors' pipeline",
                  "decode Llama-2 MHA 512K >= 6.5x", "decode Llama-3 GQA 512K >= 5.5x", "two-level >= one-level"):
            table.add(t, "-", "not measured", "no kernels JSON")
        return
    rows = kernel_results(paths)
    name = " + ".join(os.path.basename(p) for p in paths)
    paper = ("paper", "paper-ws")  # the paper's lookup on either prefill kernel

    # Prefill, 1K query tokens over 512K at 90%, against the faster of SDPA cuDNN / flash.
    pre = kernel_rows(rows, model="llama2-7b", mode="prefill", query_len=1024, context=524288, batch=1)
    r = fastest([x for x in pre if abs(x["sparsity"] - 0.9) < 1e-3], paper)
    if r and best_dense_us(r):
        x = best_dense_us(r) / r["total_us"]
        table.add("prefill 1K x 512K, 90% >= 4.5x best dense", "%.2fx (%.0f vs %.0f us)" % (x, r["total_us"],
                  best_dense_us(r)), verdict(x >= 4.5), "%s: %s" % (r["file"], row_name(r)))
    else:
        table.add("prefill 1K x 512K, 90% >= 4.5x best dense", "-", "not measured", name)

    # Prefill against the authors' pipeline at 128K and 512K.
    for context, authors_us in sorted(AUTHORS_PREFILL_US.items()):
        pre = kernel_rows(rows, model="llama2-7b", mode="prefill", query_len=1024, context=context, batch=1)
        r = fastest([x for x in pre if abs(x["sparsity"] - 0.9) < 1e-3], paper)
        label = "prefill 1K x %dK, 90%% >= 2x the authors' pipeline (%.2f ms)" % (context // 1024, authors_us / 1e3)
        if r:
            x = authors_us / r["total_us"]
            table.add(label, "%.2fx (%.2f ms)" % (x, r["total_us"] / 1e3), verdict(x >= 2.0),
                      "%s: %s" % (r["file"], row_name(r)))
        else:
            table.add(label, "-", "not measured", name)

    # Decode at 512K, batch 1, 90%: the default one-level index or the two-level one.
    for model, need in (("llama2-7b", 6.5), ("llama3-8b", 5.5)):
        dec = kernel_rows(rows, model=model, mode="decode", context=524288, batch=1)
        r = fastest([x for x in dec if abs(x["sparsity"] - 0.9) < 1e-3], ("paper", "paper-two-level"))
        label = "decode %s 512K b1, 90%% >= %.1fx best dense" % (model, need)
        if r and best_dense_us(r):
            x = best_dense_us(r) / r["total_us"]
            table.add(label, "%.2fx (%.1f vs %.1f us)" % (x, r["total_us"], best_dense_us(r)), verdict(x >= need),
                      "%s: %s" % (r["file"], row_name(r)))
        else:
            table.add(label, "-", "not measured", name)

    # Two-level index at least as fast as one level: every decode config timed both ways.
    pairs, slower = 0, []
    for one in kernel_rows(rows, mode="decode", lookup="paper"):
        if abs(one["sparsity"] - 0.9) > 1e-3:
            continue
        two = [x for x in kernel_rows(rows, mode="decode", lookup="paper-two-level", model=one["model"],
                                      context=one["context"], batch=one["batch"])
               if abs(x["sparsity"] - 0.9) < 1e-3]
        if not two:
            continue
        pairs += 1
        if two[0]["total_us"] > one["total_us"]:
            slower.append("%s %dK b%d %.1f vs %.1f us" % (one["model"], one["context"] // 1024, one["batch"],
                                                        two[0]["total_us"], one["total_us"]))
    if pairs:
        measured = "faster or equal in %d of %d configs" % (pairs - len(slower), pairs)
        if slower:
            measured += "; slower: " + ", ".join(slower)
        table.add("two-level index >= one-level (decode, 90%)", measured, verdict(not slower), name)
    else:
        table.add("two-level index >= one-level (decode, 90%)", "-", "not measured", name)


def tpot_targets(table, paths):
    """TPOT of the defaults (the accurate lookup) against the paper's lookup, 64K and 512K, b1/b8: a
    ratio within one run, so any GPU's run counts (the first file given per shape, context and batch;
    the label names its GPU)."""
    found = {}
    for path in paths:
        d = load(path)
        by = {(r["mode"], r["batch"]): r for r in d.get("decode", [])}
        gpu = gpu_of(d)
        for batch in (1, 8):
            if ("default", batch) in by and ("paper-0.9", batch) in by:
                key = (d["shape"] + (", " + gpu if gpu else ""), d["context"], batch)
                found.setdefault(key, (by[("default", batch)]["tpot_ms"] / by[("paper-0.9", batch)]["tpot_ms"],
                                       os.path.basename(path), by[("default", batch)]["tpot_ms"],
                                       by[("paper-0.9", batch)]["tpot_ms"]))
    for context in (65536, 524288):
        for batch in (1, 8):
            hits = [(k, v) for k, v in found.items() if k[1] == context and k[2] == batch]
            label = "TPOT default <= 1.1x paper, %dK b%d" % (context // 1024, batch)
            if not hits:
                table.add(label, "-", "not measured", "no full-size JSON at %d tokens" % context)
                continue
            for (shape, _, _), (ratio, source, default_ms, paper_ms) in sorted(hits):
                table.add(label + " (%s)" % shape, "%.2fx (%.2f vs %.2f ms)" % (ratio, default_ms, paper_ms),
                          verdict(ratio <= 1.1), source)


def tpot_limit_ms(d, r):
    """A decode row's TPOT limit by the accounting of step_bytes.py, from the row's figures (runs
    measured before it charged each stream the whole shared context); a row without them keeps its
    own. A row without centroid_comparisons is charged none: a lower limit, never a kinder one."""
    copy = d.get("limits", {}).get("copy_bytes_per_s")
    if not copy or d.get("shape") not in SHAPES or "kv_fraction_loaded" not in r or "new_tokens" not in r:
        return r["tpot_limit_ms"]
    step = decode_step_bytes(SHAPES[d["shape"]], d["context"], r["batch"], r["kv_fraction_loaded"],
                             r.get("centroid_comparisons", 0.0), r["new_tokens"])
    return 1e3 * step / copy


def limit_targets(table, paths):
    """TPOT against its byte limit (docs/performance.md "Against the targets"): dense <= 1.25x, the
    squeezed default <= 1.3x, over every shape, context and batch of the runs given (a file named
    full_<shape>_<context>_<device>.json holds a run's figures; suffixed names are earlier variants
    and are read only when given explicitly)."""
    plain = runs_of_record(paths)
    for mode, bound, what in (("dense", 1.25, "dense"), ("default", 1.3, "squeezed default")):
        label = "%s TPOT <= %gx its byte limit" % (what, bound)
        runs = []
        for path in plain:
            d = load(path)
            for r in d.get("decode", []):
                if r.get("mode") != mode or not r.get("tpot_limit_ms"):
                    continue
                if mode == "default" and r.get("served_mode") != "SQUEEZED":
                    continue  # auto mode served dense below its break-even context
                runs.append((run_label(d, r["batch"]), r["tpot_ms"] / tpot_limit_ms(d, r), os.path.basename(path)))
        if not runs:
            table.add(label, "-", "not measured", "no full-size JSON")
            continue
        # Each figure names its file: a configuration's plain-named file is its latest run on that
        # GPU, which may be several sessions old (docs/performance.md dates each run).
        missed = sorted((x for x in runs if x[1] > bound), key=lambda x: -x[1])
        measured = "met in %d of %d runs" % (len(runs) - len(missed), len(runs))
        if missed:
            measured += "; over: " + ", ".join("%s %.2fx (%s)" % m for m in missed)
        table.add(label, measured, verdict(not missed), ", ".join(sorted({x[2] for x in runs})))


def default_vs_dense_target(table, paths):
    """The default never slower than dense (docs/performance.md "Against the targets"): in each run of
    record holding both, where the default served the squeezed lookup, its TPOT over dense's at the
    same batch (a ratio within one run, so any GPU's run counts; labelled with its GPU)."""
    label = "default TPOT <= dense TPOT (same run)"
    runs = []
    for path in runs_of_record(paths):
        d = load(path)
        by = {(r["mode"], r["batch"]): r for r in d.get("decode", [])}
        for (mode, batch), r in sorted(by.items()):
            if mode != "default" or r.get("served_mode") != "SQUEEZED" or ("dense", batch) not in by:
                continue
            runs.append((run_label(d, batch), r["tpot_ms"] / by[("dense", batch)]["tpot_ms"], os.path.basename(path)))
    if not runs:
        table.add(label, "-", "not measured", "no full-size JSON with both")
        return
    slower = sorted((x for x in runs if x[1] > 1.0), key=lambda x: -x[1])
    measured = "met in %d of %d runs" % (len(runs) - len(slower), len(runs))
    if slower:
        measured += "; slower: " + ", ".join("%s %.2fx (%s)" % x for x in slower)
    table.add(label, measured, verdict(not slower), ", ".join(sorted({x[2] for x in runs})))


def accuracy_targets(table, path):
    label = "kv_retrieval at 90%% within 1 pt of dense, %dK (GPU)"
    if not path or not os.path.exists(path):
        for n in (8, 16):
            table.add(label % n, "-", "not measured", "no accuracy JSON")
        return
    d = load(path)
    configs = {c["name"]: c for c in d["configs"]}
    # The served defaults at 90%: one level, the estimate and read-ahead as the server sets them.
    default90 = [n for n, c in configs.items() if c["mode"] == "squeezed" and not c["hierarchical"] and
                 abs(c["sparsity"] - 0.9) < 1e-3 and c.get("pruned") == "server default" and
                 c.get("read_ahead", "server default") == "server default"]
    for tokens in (8192, 16384):
        acc = {r["config"]: r["accuracy"] for r in d["results"] if r["task"] == "kv_retrieval" and
               r.get("context_tokens_target") == tokens}
        if "dense" not in acc or not default90 or default90[0] not in acc:
            table.add(label % (tokens // 1024), "-", "not measured", os.path.basename(path))
            continue
        gap = 100 * (acc["dense"] - acc[default90[0]])
        table.add(label % (tokens // 1024), "%.1f vs %.1f (dense)" % (100 * acc[default90[0]], 100 * acc["dense"]),
                  verdict(gap <= 1.0), "%s: %s on %s" % (os.path.basename(path), default90[0], d.get("device", "?")))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernels", nargs="*", default=None,
                    help="kernels-bench files, later ones replacing earlier configurations (default: "
                         "bench/results/kernels_bench_h200.json, then kernels_bench_h200_run*.json in name order)")
    ap.add_argument("--full", nargs="*", default=None,
                    help="full_model_bench.py JSON files (default: bench/results/full_*_h200.json, then "
                         "full_*_h100.json: each figure names its GPU and file)")
    ap.add_argument("--accuracy", default=os.path.join(RESULTS, "longctx_8192_16384_h100_run21_shared_dense.json"))
    args = ap.parse_args(argv)
    full = args.full if args.full is not None else sorted(glob.glob(os.path.join(RESULTS, "full_*_h200.json")))
    kernels = args.kernels if args.kernels is not None else (
        [os.path.join(RESULTS, "kernels_bench_h200.json")] +
        sorted(glob.glob(os.path.join(RESULTS, "kernels_bench_h200_run*.json"))))
    table = Table()
    kernel_targets(table, kernels)
    records = full if args.full is not None else full + sorted(glob.glob(os.path.join(RESULTS, "full_*_h100.json")))
    tpot_targets(table, records)
    limit_targets(table, records)
    default_vs_dense_target(table, records)
    accuracy_targets(table, args.accuracy)
    print(table.text())
    print("\n%d target(s) missed" % table.missed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
