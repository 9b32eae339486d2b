#!/usr/bin/env python3
"""The decode step's non-attention work at full model shape, timed on the GPU.

Replays, in one CUDA graph, what engine/llama_model.cc runs per layer around attention (the fused
QKV matmul, the output projection with the residual add, the stacked gate/up matmul, SiLU * up,
the down projection with the residual add) over all the layers' own weights, then the lm_head, for
M tokens (the decode batch). Prints each op's median time against its bytes / the copy rate
measured in the same run: whether libtorch's matmuls at decode batch sizes read the weights at the
copy rate. Diagnosis only (docs/performance.md); not a result.

    python3 scripts/gpu/layer_ops_probe.py --shape llama3-8b --batches 1,8 [--out FILE.json]
"""
import argparse
import json

SHAPES = {
    "llama3-8b": dict(hidden=4096, heads=32, kv_heads=8, head_dim=128, inter=14336, vocab=128256, layers=32),
    "llama2-7b": dict(hidden=4096, heads=32, kv_heads=32, head_dim=128, inter=11008, vocab=32000, layers=32),
}


def graph_time_ms(fn, reps=20):
    """Median time of one replay of fn captured as a CUDA graph (warm: weights do not fit L2)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def copy_rate(dev):
    """As full_model_bench.py's limits (a 2 GiB copy, eager, median): the same reference end to end.
    A 1 GiB copy timed in a graph gave 2.44 TB/s on an H100 where this gives 3.0 and the gate/up
    product read its weights at 3.03 (bench/kernels/NOTES.md run 22)."""
    n = 2 << 30
    src = torch.empty(n, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    times = []
    for _ in range(7):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    del src, dst
    times.sort()
    return 2 * n / (times[len(times) // 2] * 1e-3)  # read + write


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    p.add_argument("--batches", default="1,8")
    p.add_argument("--out", default="")
    args = p.parse_args()
    global torch
    import torch  # here, so that --help runs where PyTorch is not installed
    s = SHAPES[args.shape]
    dev = torch.device("cuda")
    bf = dict(dtype=torch.bfloat16, device=dev)
    H, L = s["hidden"], s["layers"]
    q_out, kv_out = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
    torch.manual_seed(0)
    layers = []
    for _ in range(L):
        layers.append(dict(
            qkv=torch.randn(q_out + 2 * kv_out, H, **bf) * 0.02,
            o=torch.randn(H, q_out, **bf) * 0.02,
            gate_up=torch.randn(2 * s["inter"], H, **bf) * 0.02,
            down=torch.randn(H, s["inter"], **bf) * 0.02))
    lm_head = torch.randn(s["vocab"], H, **bf) * 0.02
    rate = copy_rate(dev)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shape": args.shape,
              "copy_bytes_per_s": rate, "batches": {}}
    print(f"{report['device']}, copy rate {rate / 1e12:.2f} TB/s")
    for m in [int(x) for x in args.batches.split(",")]:
        x = torch.randn(m, H, **bf)
        attn = torch.randn(m, q_out, **bf)
        inter = s["inter"]
        ops = {
            "qkv": (lambda: [torch.nn.functional.linear(x, w["qkv"]) for w in layers], "qkv"),
            "o_proj+residual": (lambda: [torch.addmm(x, attn, w["o"].t()) for w in layers], "o"),
            "gate_up": (lambda: [torch.nn.functional.linear(x, w["gate_up"]) for w in layers], "gate_up"),
            "silu*up": (None, None),
            "down+residual": (None, "down"),
        }
        gu = torch.randn(m, 2 * inter, **bf)
        act = torch.randn(m, inter, **bf)
        ops["silu*up"] = (lambda: [torch.nn.functional.silu(gu.narrow(1, 0, inter)).mul_(gu.narrow(1, inter, inter))
                                   for _ in layers], None)
        ops["down+residual"] = (lambda: [torch.addmm(x, act, w["down"].t()) for w in layers], "down")
        # Variants of the slowest product (o_proj at M = 1 read its weights at ~62% of the copy rate on
        # an H100, bench/kernels/NOTES.md run 22): the residual add as its own op, and no residual.
        ops["o_proj: mm, add_"] = (lambda: [torch.mm(attn, w["o"].t()).add_(x) for w in layers], "o")
        ops["o_proj: linear only"] = (lambda: [torch.nn.functional.linear(attn, w["o"]) for w in layers], "o")
        rows = {}
        total_ms, total_bytes = 0.0, 0
        for name, (fn, key) in ops.items():
            ms = graph_time_ms(fn)
            nbytes = sum(w[key].numel() * 2 for w in layers) if key else 0
            rows[name] = {"ms_all_layers": ms, "bytes": nbytes,
                          "limit_ms": nbytes / rate * 1e3, "over_limit": (ms / (nbytes / rate * 1e3)) if nbytes else None}
            if not name.startswith("o_proj:"):  # the variants are not part of the step
                total_ms += ms
                total_bytes += nbytes
        ms = graph_time_ms(lambda: torch.nn.functional.linear(x, lm_head).float())
        nb = lm_head.numel() * 2
        rows["lm_head"] = {"ms_all_layers": ms, "bytes": nb, "limit_ms": nb / rate * 1e3, "over_limit": ms / (nb / rate * 1e3)}
        total_ms += ms
        total_bytes += nb

        def whole():
            h = x
            for w in layers:
                qkv = torch.nn.functional.linear(h, w["qkv"])
                h = torch.addmm(h, qkv.narrow(1, 0, q_out), w["o"].t())
                g = torch.nn.functional.linear(h, w["gate_up"])
                a = torch.nn.functional.silu(g.narrow(1, 0, inter)).mul_(g.narrow(1, inter, inter))
                h = torch.addmm(h, a, w["down"].t())
            return torch.nn.functional.linear(h, lm_head).float()
        whole_ms = graph_time_ms(whole)
        rows["chained_step"] = {"ms_all_layers": whole_ms, "bytes": total_bytes, "limit_ms": total_bytes / rate * 1e3,
                                "over_limit": whole_ms / (total_bytes / rate * 1e3)}
        report["batches"][m] = rows
        print(f"\nM = {m}")
        for name, r in rows.items():
            over = f"{r['over_limit']:.2f}x" if r["over_limit"] else "-"
            print(f"  {name:18s} {r['ms_all_layers']:8.3f} ms  limit {r['limit_ms']:7.3f} ms  {over}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
