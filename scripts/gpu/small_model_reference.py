#!/usr/bin/env python3
"""Records Hugging Face transformers' greedy continuation for the shipped small model (GPU machine).

Loads MODEL_DIR (an export of train_small_model.py) with AutoModelForCausalLM in float32, eager
attention, on the CPU, and writes MODEL_DIR/reference.json in the format of
make_reference_checkpoints.py: the prompt is a short key-value table plus one lookup (so the greedy
continuation exercises retrieval, not just local text), the first `split` tokens are what the engine
ingests as the fixed context, and every greedy token comes with its log-softmax under HF.
tests/engine/hf_reference_test.cc checks that our engine reproduces both within 1e-3.

Usage: python3 scripts/gpu/small_model_reference.py MODEL_DIR
"""
import json
import os
import random
import sys

import sentencepiece as spm
import torch
import transformers
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import longctx_tasks  # noqa: E402
from make_reference_checkpoints import greedy_reference  # noqa: E402

NEW_TOKENS = 40


def main():
    out = sys.argv[1]
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "tokenizer.model"))
    context, queries = longctx_tasks.kv_retrieval(random.Random(20261123), 1500, num_queries=1)
    context_ids = [1] + sp.encode(context)
    prompt = context_ids + sp.encode(queries[0][0])
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    record = dict(name="small", transformers=transformers.__version__, torch=torch.__version__,
                  prompt_ids=prompt, split=len(context_ids), **greedy_reference(model, prompt, NEW_TOKENS))
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(record, f)
    print(f"reference: {len(prompt)} prompt tokens (context {len(context_ids)}), expected answer "
          f"{queries[0][1]!r}, greedy text {sp.decode(record['generated_ids'])!r}, "
          f"min top-2 margin {record['min_top2_margin']:.4g}")


if __name__ == "__main__":
    main()
