"""The bytes one decode step must read: the TPOT limit of scripts/gpu/full_model_bench.py (which
measures it) and bench/targets.py (which judges against it); docs/performance.md "The command".
No torch here, so that the targets table runs anywhere."""

HEAD_DIM = 128
SHAPES = {  # what a decode step reads besides the KV: every weight but the embedding table
    "llama2-7b": dict(layers=32, hidden=4096, inter=11008, heads=32, kv_heads=32, vocab=32000),
    "llama3-8b": dict(layers=32, hidden=4096, inter=14336, heads=32, kv_heads=8, vocab=128256),
}


def weight_bytes(s):
    per_layer = (s["hidden"] * (s["heads"] + 2 * s["kv_heads"]) * HEAD_DIM + s["hidden"] * s["heads"] * HEAD_DIM
                 + 3 * s["hidden"] * s["inter"] + 2 * s["hidden"])
    return 2 * (s["layers"] * per_layer + s["vocab"] * s["hidden"] + s["hidden"])


def kv_bytes_per_token(s):
    return 2 * s["layers"] * s["kv_heads"] * HEAD_DIM * 2


def decode_step_bytes(s, context, batch, kv_fraction, comparisons, new_tokens):
    """The weights once for the batch, each stream's own tokens (~64 + new_tokens / 2), and what the
    streams read of their one shared context (full_model_bench.py asks every question of one
    document): its KV at most once whatever the batch (dense: exactly once; before 2026-12-06 each
    stream was charged the whole context, a limit that batch-8 dense runs beat) and the centroids
    of its index once. Squeezed streams' selections may overlap, which is not subtracted (the
    union is not reported): for them this is the bytes the lookups ask for, not a floor."""
    own = 64 + new_tokens / 2
    context_kv = min(batch * kv_fraction, 1.0) * context
    centroids = comparisons * HEAD_DIM * 2 * s["kv_heads"] * s["layers"]
    return weight_bytes(s) + kv_bytes_per_token(s) * (context_kv + batch * own) + centroids
