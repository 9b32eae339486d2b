#!/usr/bin/env python3
"""Trains the small long-context Llama model shipped in models/small (issue 7), resumably.

Runs on the GPU machine (PyTorch 2.11, transformers 5.17, sentencepiece 0.2, no network) and, with
--smoke, on a CPU with Debian's torch 1.13 (so: no torch-2-only API outside guarded paths).

  1. corpus: text files found on the machine (site-packages sources/docs, license texts), tokenized with
     the committed models/small/tokenizer.model (sentencepiece python package; listed on the GPU
     machine in .library KINDS.md, and Debian's python3-sentencepiece here), plus a pool of synthetic
     long-context retrieval documents (scripts/gpu/longctx_tasks.py);
  2. model: a self-contained Llama (RMSNorm, RoPE, SwiGLU, GQA) whose parameter names are HF
     LlamaForCausalLM's, so export is a plain safetensors write;
  3. training: AdamW + warmup/cosine, bf16 autocast on CUDA, sequence-length curriculum, a checkpoint
     every --save_every steps and at the --max_minutes budget, so calls of < 10 minutes chain;
  4. export: config.json + sharded bf16 safetensors (each shard < 16 MiB so it can come back through the
     device tool's $OUT) + tokenizer.model; reloads with HF transformers when available and prints the
     max |logit difference| against this module.

Usage (see models/small/README.md for the exact GPU commands):
  python3 train_small_model.py --ckpt DIR [--max_minutes 8.5] [--export OUT_DIR]
  python3 train_small_model.py --smoke --ckpt /tmp/ck --export /tmp/model   # CPU, tiny, 20 steps
"""
import argparse
import bisect
import glob
import json
import math
import multiprocessing as mp
import os
import random
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import longctx_tasks  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_TOKENIZER = os.path.join(REPO, "models", "small", "tokenizer.model")
BOS, EOS = 1, 2

# ----------------------------------------------------------------------------------------------
# Model: names match transformers' LlamaForCausalLM so state_dict() is the HF checkpoint.
# ----------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # Same op order as HF: normalise in fp32, cast back, then scale.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_cos_sin(seq_len, head_dim, theta, device):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    t = torch.arange(seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)  # HF's non-interleaved (rotate_half) layout
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def causal_attention(q, k, v):
    """q: [B,H,T,D], k/v: [B,H,T,D] (kv already repeated). Flash SDPA on torch 2, plain math on 1.13."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h, self.kv, self.d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        hid = c["hidden_size"]
        self.q_proj = nn.Linear(hid, self.h * self.d, bias=False)
        self.k_proj = nn.Linear(hid, self.kv * self.d, bias=False)
        self.v_proj = nn.Linear(hid, self.kv * self.d, bias=False)
        self.o_proj = nn.Linear(self.h * self.d, hid, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.d).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # GQA: each kv head serves h/kv consecutive query heads (HF's repeat_kv).
        rep = self.h // self.kv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        y = causal_attention(q, k, v)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.h * self.d))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], c["hidden_size"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Backbone(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        if c["tie_word_embeddings"]:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(self._init)

    def _init(self, m):
        std = self.c["initializer_range"]
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)

    def forward(self, ids):
        cos, sin = rope_cos_sin(ids.shape[1], self.c["head_dim"], self.c["rope_theta"], ids.device)
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.model.norm(x))


def model_config(args):
    """HF LlamaForCausalLM config fields; the same dict drives this module and config.json."""
    if args.smoke:
        dims = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2)
    else:
        dims = dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=6,
                    num_key_value_heads=2)
    dims["head_dim"] = dims["hidden_size"] // dims["num_attention_heads"]
    return dict(dims, vocab_size=args.vocab_size, rms_norm_eps=1e-5, rope_theta=args.rope_theta,
                max_position_embeddings=32768, tie_word_embeddings=True, initializer_range=0.02)


# ----------------------------------------------------------------------------------------------
# Data: natural text token stream + pool of synthetic retrieval documents.
# ----------------------------------------------------------------------------------------------

# The corpus walk and the held-out rule live in longctx_tasks (pure Python) so that the evaluation
# harness (bench/eval_long_context/make_tasks.py) applies exactly the same split without torch.
TEXT_SUFFIXES, corpus_files, is_heldout, read_text = (longctx_tasks.TEXT_SUFFIXES, longctx_tasks.corpus_files,
                                                      longctx_tasks.is_heldout, longctx_tasks.read_text)


_SP = None


def _worker_init(tokenizer_path):
    global _SP
    import sentencepiece as spm  # imported here: only the data workers need it
    _SP = spm.SentencePieceProcessor(model_file=tokenizer_path)


def _encode_file(path):
    text = read_text(path)
    if not text:
        return None
    return np.array([BOS] + _SP.encode(text) + [EOS], dtype=np.uint16)


def _synthetic_doc(job):
    seed, approx_chars = job
    rng = random.Random(seed)
    text = longctx_tasks.make_document(rng, approx_chars, _FILLER, _FUNCTIONS)
    return np.array([BOS] + _SP.encode(text) + [EOS], dtype=np.uint16)


_FILLER, _FUNCTIONS = [], []


def build_data(args, data_dir, workers):
    """Tokenizes the corpus and builds the synthetic pool once per machine; cached under data_dir."""
    os.makedirs(data_dir, exist_ok=True)
    done = os.path.join(data_dir, "done.json")
    if os.path.exists(done):
        return
    t0 = time.time()
    files = corpus_files()
    rng = random.Random(args.seed)
    rng.shuffle(files)  # so the byte cap samples across packages rather than the first alphabetically
    train, heldout, total = [], [], 0
    for p in files:
        if total > args.max_corpus_mb * 1e6:
            break
        (heldout if is_heldout(p) else train).append(p)
        total += os.path.getsize(p)
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_worker_init, initargs=(args.tokenizer,)) as pool:
        for name, paths in (("train", train), ("heldout", heldout)):
            arrays = [a for a in pool.imap(_encode_file, paths, chunksize=16) if a is not None]
            stream = np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)
            stream.tofile(os.path.join(data_dir, f"{name}.bin"))
            print(f"data: {name}: {len(paths)} files, {len(stream) / 1e6:.1f}M tokens", flush=True)
    with open(os.path.join(data_dir, "heldout_files.json"), "w") as f:
        json.dump(heldout, f, indent=0)

    # Filler paragraphs and functions for the synthetic tasks come from training files only.
    global _FILLER, _FUNCTIONS
    _FILLER, _FUNCTIONS = [], []
    for p in train[:4000]:
        text = read_text(p) or ""
        _FILLER += [c for c in text.split("\n\n") if 40 < len(c) < 2000]
        if p.endswith(".py"):
            _FUNCTIONS += longctx_tasks.extract_functions(text)
    print(f"data: synthetic sources: {len(_FILLER)} paragraphs, {len(_FUNCTIONS)} functions", flush=True)
    # Documents sized log-uniformly from ~256 tokens to the longest curriculum length (~3.3 chars/token).
    jobs, tokens = [], 0
    while tokens < args.synthetic_mtokens * 1e6:
        length = int(math.exp(rng.uniform(math.log(256), math.log(args.max_seq_len * 0.95))))
        jobs.append((rng.randrange(1 << 62), int(length * 3.0)))
        tokens += length
    with ctx.Pool(workers, initializer=_worker_init, initargs=(args.tokenizer,)) as pool:
        docs = list(pool.imap(_synthetic_doc, jobs, chunksize=4))
    docs = [d[: args.max_seq_len] for d in docs]
    docs.sort(key=len)
    np.concatenate(docs).tofile(os.path.join(data_dir, "synthetic.bin"))
    np.array([len(d) for d in docs], dtype=np.int64).tofile(os.path.join(data_dir, "synthetic_lens.bin"))
    print(f"data: synthetic: {len(docs)} docs, {sum(map(len, docs)) / 1e6:.1f}M tokens; "
          f"data built in {time.time() - t0:.0f}s", flush=True)
    with open(done, "w") as f:
        json.dump({"files": len(files), "seconds": time.time() - t0}, f)


class Batches:
    """Deterministic per step (seeded by step), so a resumed run sees the same data it would have."""

    def __init__(self, data_dir, seed, synthetic_frac):
        self.text = np.fromfile(os.path.join(data_dir, "train.bin"), dtype=np.uint16)
        self.syn = np.fromfile(os.path.join(data_dir, "synthetic.bin"), dtype=np.uint16)
        self.syn_lens = np.fromfile(os.path.join(data_dir, "synthetic_lens.bin"), dtype=np.int64)
        self.syn_offsets = np.concatenate([[0], np.cumsum(self.syn_lens)])
        self.seed, self.synthetic_frac = seed, synthetic_frac

    def sequence(self, rng, seq_len):
        """One row of seq_len + 1 tokens: natural text, or natural text followed by a synthetic doc
        placed at the end so its queries sit far from the facts they ask about."""
        row = np.empty(seq_len + 1, dtype=np.int64)
        start = seq_len + 1  # tokens of natural text before the synthetic doc (all of it if none)
        if rng.random() < self.synthetic_frac and len(self.syn_lens):
            hi = bisect.bisect_right(self.syn_lens, seq_len + 1)  # docs that fit (lengths are sorted)
            lo = bisect.bisect_left(self.syn_lens, (seq_len + 1) // 4)
            if hi > 0:
                i = int(rng.integers(min(lo, hi - 1), hi))
                doc = self.syn[self.syn_offsets[i]: self.syn_offsets[i + 1]]
                start = seq_len + 1 - len(doc)
                row[start:] = doc
        if start > 0:
            off = int(rng.integers(0, len(self.text) - start))
            row[:start] = self.text[off: off + start]
        return row

    def get(self, step, batch, seq_len):
        rng = np.random.default_rng([self.seed, step])
        rows = np.stack([self.sequence(rng, seq_len) for _ in range(batch)])
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]


# ----------------------------------------------------------------------------------------------
# Schedule, checkpoints, export.
# ----------------------------------------------------------------------------------------------


def seq_len_at(step, args):
    """Curriculum: 1/8, 1/4, 1/2 then full --max_seq_len over the run's fractions below."""
    frac = step / max(1, args.total_steps)
    for edge, div in ((0.15, 8), (0.35, 4), (0.6, 2)):
        if frac < edge:
            return max(args.min_seq_len, args.max_seq_len // div)
    return args.max_seq_len


def lr_at(step, args, warm_from):
    """Linear warmup (again after a resume without optimizer state), then cosine to 10%."""
    warm = min(1.0, (step - warm_from + 1) / args.warmup_steps)
    progress = min(1.0, step / max(1, args.total_steps))
    return args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bf16: move the raw bits through int16
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, tensors):
    """Plain safetensors writer (8-byte header length, JSON header, raw little-endian data), so no
    safetensors package is needed where the smoke test runs."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = tensor_bytes(t)
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        if info["dtype"] == "BF16":
            t = torch.from_numpy(np.frombuffer(data[a:b], dtype=np.int16).copy()).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(data[a:b], dtype={"F32": np.float32, "F16": np.float16}[info["dtype"]]).copy())
        out[name] = t.reshape(info["shape"])
    return out


def save_sharded(model, out_dir, prefix, max_shard_bytes):
    """bf16 weights in shards below max_shard_bytes (the device tool returns files of <= 16 MiB),
    plus an HF-style index; tied lm_head.weight is left out as HF does."""
    sd = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()
          if not (k == "lm_head.weight" and model.c["tie_word_embeddings"])}
    shards, cur, size = [], {}, 0
    for k, v in sd.items():
        nbytes = v.numel() * 2
        if cur and size + nbytes > max_shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += nbytes
    shards.append(cur)
    if len(shards) == 1:  # the common single-file layout; no index needed
        write_safetensors(os.path.join(out_dir, f"{prefix}.safetensors"), shards[0])
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"{prefix}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(out_dir, name), shard)
        weight_map.update({k: name for k in shard})
    total = sum(v.numel() * 2 for v in sd.values())
    with open(os.path.join(out_dir, f"{prefix}.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)


def load_sharded(model, in_dir, prefix):
    single = os.path.join(in_dir, f"{prefix}.safetensors")
    if os.path.exists(single):
        names = [single]
    else:
        with open(os.path.join(in_dir, f"{prefix}.safetensors.index.json")) as f:
            names = [os.path.join(in_dir, n) for n in sorted(set(json.load(f)["weight_map"].values()))]
    sd = {}
    for name in names:
        sd.update(read_safetensors(name))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)


def save_checkpoint(model, opt, step, args, warm_from):
    """Two forms: state.pt (fp32 + AdamW, exact resume on the same disk) and portable/ (bf16 shards
    + trainer.json, < 16 MiB files, to carry through $OUT to a fresh machine)."""
    os.makedirs(args.ckpt, exist_ok=True)
    tmp = os.path.join(args.ckpt, "state.pt.tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "warm_from": warm_from}, tmp)
    os.replace(tmp, os.path.join(args.ckpt, "state.pt"))  # atomic: a killed call leaves the old one
    port = os.path.join(args.ckpt, "portable")
    os.makedirs(port, exist_ok=True)
    save_sharded(model, port, "weights", 15 * 2**20)
    with open(os.path.join(port, "trainer.json"), "w") as f:
        json.dump({"step": step, "config": model.c, "total_steps": args.total_steps}, f, indent=1)
    print(f"ckpt: saved step {step} to {args.ckpt}", flush=True)


def load_checkpoint(model, opt, args):
    """Returns (step, warm_from). Prefers the exact state; falls back to portable bf16 weights with a
    fresh optimizer (then the LR warms up again from that step)."""
    state = os.path.join(args.ckpt, "state.pt")
    port = os.path.join(args.ckpt, "portable", "trainer.json")
    if os.path.exists(state):
        s = torch.load(state, map_location="cpu")
        model.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        print(f"ckpt: resumed exactly at step {s['step']}", flush=True)
        return s["step"], s["warm_from"]
    if os.path.exists(port):
        with open(port) as f:
            step = json.load(f)["step"]
        load_sharded(model, os.path.dirname(port), "weights")
        print(f"ckpt: resumed from portable bf16 weights at step {step} (optimizer re-warmed)", flush=True)
        return step, step
    return 0, 0


def export(model, args, tokenizer_path):
    """HF checkpoint dir: config.json, bf16 sharded safetensors (< 16 MiB each), tokenizer.model."""
    import shutil
    out = args.export
    os.makedirs(out, exist_ok=True)
    c = model.c
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
              "attention_dropout": 0.0, "mlp_bias": False, "hidden_act": "silu", "bos_token_id": BOS,
              "eos_token_id": EOS, "pad_token_id": None, "dtype": "bfloat16", "use_cache": True,
              "rope_theta": c["rope_theta"], "rope_scaling": None}
    config.update({k: c[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                     "num_attention_heads", "num_key_value_heads", "head_dim",
                                     "vocab_size", "rms_norm_eps", "max_position_embeddings",
                                     "tie_word_embeddings", "initializer_range")})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_sharded(model, out, "model", 15 * 2**20)
    shutil.copyfile(tokenizer_path, os.path.join(out, "tokenizer.model"))
    total = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    print(f"export: wrote {out} ({total / 1e6:.1f} MB)", flush=True)
    verify_export(model, out)


def verify_export(model, out):
    """Reloads the export two ways and compares logits on a random batch with this module's."""
    ids = torch.randint(3, model.c["vocab_size"], (2, 64))
    model = model.float().cpu().eval()
    with torch.no_grad():
        ref = model(ids)
        mine = LlamaForCausalLM(model.c)
        load_sharded(mine, out, "model")
        diff = (mine.float().eval()(ids) - ref).abs().max().item()
    print(f"export: reload via own reader (bf16 weights) max |logit diff| = {diff:.4g}", flush=True)
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        print("export: transformers not installed here; HF load check skipped", flush=True)
        return
    import transformers
    # transformers 5 renamed torch_dtype to dtype.
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    hf = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager", **{dtype_kw: torch.float32})
    hf.eval()
    with torch.no_grad():
        bf16_model = LlamaForCausalLM(model.c)
        load_sharded(bf16_model, out, "model")  # same bf16-rounded weights HF sees
        ours = bf16_model.float().eval()(ids)
        theirs = hf(ids).logits.float()
    diff = (ours - theirs).abs().max().item()
    print(f"export: HF transformers load OK; max |logit diff| HF vs training module = {diff:.4g}", flush=True)
    assert diff < 1e-3, "HF logits differ from the training module"


# ----------------------------------------------------------------------------------------------
# Training loop.
# ----------------------------------------------------------------------------------------------


def export_only(args):
    """Exports the finished portable checkpoint without building data or touching a GPU."""
    with open(os.path.join(args.ckpt, "portable", "trainer.json")) as f:
        saved = json.load(f)
    if saved["step"] < saved["total_steps"]:
        sys.exit(f"export_only: checkpoint at step {saved['step']} of {saved['total_steps']}: train it first")
    model = LlamaForCausalLM(saved["config"])
    load_sharded(model, os.path.join(args.ckpt, "portable"), "weights")
    export(model, args, args.tokenizer)


def train(args):
    if args.export_only:
        return export_only(args)
    t_start = time.time()
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    torch.manual_seed(args.seed)
    data_dir = args.data_dir or os.path.join(args.ckpt, "data")
    build_data(args, data_dir, workers=args.workers)
    batches = Batches(data_dir, args.seed, args.synthetic_frac)

    model = LlamaForCausalLM(model_config(args)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, config {model.c}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    step, warm_from = load_checkpoint(model, opt, args)
    fwd = torch.compile(model) if args.compile and hasattr(torch, "compile") else model
    use_bf16 = device == "cuda"

    log_t, log_tokens, losses = time.time(), 0, []
    first_step = step
    while step < args.total_steps:
        if args.stop_after_steps and step - first_step >= args.stop_after_steps:
            print(f"budget: --stop_after_steps {args.stop_after_steps} reached at step {step}", flush=True)
            break
        if (time.time() - t_start) / 60 > args.max_minutes:
            print(f"budget: {args.max_minutes} min reached at step {step}", flush=True)
            break
        seq = seq_len_at(step, args)
        rows = max(1, args.tokens_per_step // seq)
        micro = max(1, min(rows, args.micro_tokens // seq))
        lr = lr_at(step, args, warm_from)
        for g in opt.param_groups:
            g["lr"] = lr
        x_all, y_all = batches.get(step, rows, seq)
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for i in range(0, rows, micro):
            x, y = x_all[i:i + micro].to(device, non_blocking=True), y_all[i:i + micro].to(device, non_blocking=True)
            if use_bf16:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    logits = fwd(x)
            else:
                logits = fwd(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1)) * (len(x) / rows)
            loss.backward()
            step_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(step_loss)
        log_tokens += rows * seq
        if step % args.log_every == 0 or step == args.total_steps:
            dt = time.time() - log_t
            print(f"step {step}/{args.total_steps} seq {seq} loss {sum(losses) / len(losses):.4f} "
                  f"lr {lr:.2e} {log_tokens / dt / 1e3:.1f}k tok/s "
                  f"elapsed {(time.time() - t_start) / 60:.1f} min", flush=True)
            log_t, log_tokens, losses = time.time(), 0, []
        if step % args.save_every == 0:
            save_checkpoint(model, opt, step, args, warm_from)
    if step % args.save_every != 0:
        save_checkpoint(model, opt, step, args, warm_from)
    if step >= args.total_steps and args.export:
        export(model, args, args.tokenizer)
    elif args.export:
        print(f"export: skipped, training not finished ({step}/{args.total_steps})", flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint directory (resumed from if present)")
    p.add_argument("--data_dir", default=None, help="tokenized data cache (default CKPT/data)")
    p.add_argument("--export", default=None, help="write the HF checkpoint here once training is done")
    p.add_argument("--export_only", action="store_true",
                   help="write --export from CKPT/portable of a finished run (no data, no training)")
    p.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    p.add_argument("--smoke", action="store_true", help="tiny model, 20 steps, seq 256 (CPU is fine)")
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (torch 2 only)")
    p.add_argument("--max_minutes", type=float, default=8.5, help="stop (with a checkpoint) after this")
    p.add_argument("--total_steps", type=int, default=1400)
    p.add_argument("--stop_after_steps", type=int, default=0, help="end this call after N steps (tests resume)")
    p.add_argument("--save_every", type=int, default=200)
    p.add_argument("--log_every", type=int, default=20)
    p.add_argument("--tokens_per_step", type=int, default=131072)
    p.add_argument("--micro_tokens", type=int, default=65536, help="tokens per forward (grad accumulation)")
    p.add_argument("--min_seq_len", type=int, default=1024)
    p.add_argument("--max_seq_len", type=int, default=16384)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup_steps", type=int, default=60)
    p.add_argument("--rope_theta", type=float, default=1_000_000.0)
    p.add_argument("--vocab_size", type=int, default=8000)
    p.add_argument("--synthetic_frac", type=float, default=0.5)
    p.add_argument("--synthetic_mtokens", type=float, default=12.0, help="synthetic pool size, M tokens")
    p.add_argument("--max_corpus_mb", type=float, default=300.0, help="cap on natural text read, MB")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    if args.smoke:
        # Small enough for a 2-core CPU in about a minute, yet every stage (data, curriculum, resume,
        # export) runs for real.
        args.total_steps = min(args.total_steps, 20)
        args.save_every, args.log_every = 10, 2
        args.tokens_per_step = args.micro_tokens = 4 * 256
        args.min_seq_len, args.max_seq_len = 64, 256
        args.warmup_steps = 4
        args.synthetic_mtokens = 0.2
        args.max_corpus_mb = 5.0
    return args


if __name__ == "__main__":
    train(parse_args())
