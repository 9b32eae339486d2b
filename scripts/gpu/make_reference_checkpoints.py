#!/usr/bin/env python3
"""Makes the tiny HF reference checkpoints and their greedy continuations (run on the GPU machine).

For each architecture below: a randomly initialised model from HF transformers, saved with
save_pretrained (safetensors, in the dtype given), plus the shared tiny tokenizer; then the saved
checkpoint is reloaded in float32 (eager attention, CPU) and a greedy continuation of the reference
prompt is recorded with the log-softmax of the raw logits at every chosen token. The engine must
reproduce these tokens and log-probs (tests/engine/hf_reference_test.cc, tests through the server).

Usage: python3 scripts/gpu/make_reference_checkpoints.py OUT_DIR
Writes OUT_DIR/<name>/{config.json, model.safetensors[.index.json + shards], tokenizer.model, reference.json}.
"""
import json
import os
import shutil
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER = os.path.join(REPO, "models", "tokenizer", "tokenizer.model")
PROMPT = [1] + json.load(open(os.path.join(REPO, "models", "tokenizer", "reference_prompt_ids.json")))[:299]
SPLIT = 240          # prompt tokens ingested as the fixed context; the rest is the query
NEW_TOKENS = 40

COMMON = dict(vocab_size=1000, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
              max_position_embeddings=4096, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2,
              initializer_range=0.08)

CASES = [
    # name, model_type, extra config, save dtype, max shard size (None = one file)
    ("llama-mha", "llama",
     dict(num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0, tie_word_embeddings=False),
     torch.float32, None),
    ("llama-gqa-llama3rope-tied", "llama",
     dict(num_attention_heads=8, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
          rope_theta=500000.0,
          rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                            original_max_position_embeddings=64)),
     torch.bfloat16, None),
    ("qwen2-bias", "qwen2",
     dict(num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0, tie_word_embeddings=False,
          use_sliding_window=False),
     torch.float16, "200KB"),
    ("mistral-mqa", "mistral",
     dict(num_attention_heads=4, num_key_value_heads=1, rope_theta=10000.0, tie_word_embeddings=False,
          sliding_window=None, rope_scaling=dict(rope_type="linear", factor=2.0)),
     torch.float32, None),
]


def greedy_reference(model, prompt, new_tokens):
    """Greedy continuation of `prompt` under an HF causal LM: the tokens, the log-softmax of the raw
    logits at each chosen token, and the smallest top-2 logit margin (how close greedy came to a tie)."""
    ids = list(prompt)
    generated, logprobs, margins = [], [], []
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(torch.tensor([ids])).logits[0, -1].float()
            logp = torch.log_softmax(logits, -1)
            top2 = torch.topk(logits, 2).values
            token = int(torch.argmax(logits))
            generated.append(token)
            logprobs.append(float(logp[token]))
            margins.append(float(top2[0] - top2[1]))
            ids.append(token)
    return dict(generated_ids=generated, logprobs=logprobs, min_top2_margin=min(margins))


def make(out_root, name, model_type, extra, dtype, shard):
    torch.manual_seed(1234)
    config = AutoConfig.for_model(model_type, **COMMON, **extra)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    # Random init leaves norms at 1; perturb them so RMSNorm weights are actually exercised.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
            if n.endswith(".bias"):
                p.normal_(0.0, 0.1)
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    model.to(dtype).save_pretrained(out, safe_serialization=True, **({"max_shard_size": shard} if shard else {}))
    shutil.copy(TOKENIZER, os.path.join(out, "tokenizer.model"))
    for junk in ("generation_config.json",):
        if os.path.exists(os.path.join(out, junk)):
            os.remove(os.path.join(out, junk))

    # Reference from the saved checkpoint, in float32 on CPU.
    ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    record = dict(name=name, transformers=transformers.__version__, torch=torch.__version__,
                  prompt_ids=PROMPT, split=SPLIT, **greedy_reference(ref, PROMPT, NEW_TOKENS))
    json.dump(record, open(os.path.join(out, "reference.json"), "w"))
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{name}: {size/1e6:.2f} MB, min top-2 logit margin {record['min_top2_margin']:.4g}, "
          f"tokens {record['generated_ids'][:10]}...")


def main():
    out_root = sys.argv[1]
    for case in CASES:
        make(out_root, *case)


if __name__ == "__main__":
    main()
