#!/usr/bin/env python3
"""Writes a randomly initialised Llama checkpoint of a given shape (safetensors, bf16) for speed runs.

Random weights are fine for timing (docs/performance.md): attention cost depends on shapes, not values.
Usage: make_random_checkpoint.py OUT_DIR [--layers 32] [--shape llama2-7b|llama3-8b] [--max_pos 131072]
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

SHAPES = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                      vocab_size=32000, rope_theta=10000.0),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                      vocab_size=128256, rope_theta=500000.0),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--shape", default="llama2-7b", choices=SHAPES)
    p.add_argument("--max_pos", type=int, default=131072)
    a = p.parse_args()
    s = SHAPES[a.shape]
    h, f, nh, nkv = s["hidden_size"], s["intermediate_size"], s["num_attention_heads"], s["num_key_value_heads"]
    d = h // nh
    os.makedirs(a.out, exist_ok=True)
    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", num_hidden_layers=a.layers,
                  max_position_embeddings=a.max_pos, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                  tie_word_embeddings=False, torch_dtype="bfloat16", **s)
    json.dump(config, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    g = torch.Generator(device="cuda").manual_seed(0)

    def rnd(*shape, std=0.02):
        return (torch.randn(*shape, generator=g, device="cuda") * std).to(torch.bfloat16).cpu()

    tensors = {"model.embed_tokens.weight": rnd(s["vocab_size"], h), "model.norm.weight": torch.ones(h, dtype=torch.bfloat16),
               "lm_head.weight": rnd(s["vocab_size"], h)}
    for i in range(a.layers):
        pre = f"model.layers.{i}."
        tensors.update({
            pre + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
            pre + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
            pre + "self_attn.q_proj.weight": rnd(nh * d, h), pre + "self_attn.k_proj.weight": rnd(nkv * d, h),
            pre + "self_attn.v_proj.weight": rnd(nkv * d, h), pre + "self_attn.o_proj.weight": rnd(h, nh * d),
            pre + "mlp.gate_proj.weight": rnd(f, h), pre + "mlp.up_proj.weight": rnd(f, h),
            pre + "mlp.down_proj.weight": rnd(h, f),
        })
    save_file(tensors, os.path.join(a.out, "model.safetensors"))
    print(f"wrote {a.out}: {a.shape}, {a.layers} layers, "
          f"{sum(t.numel() for t in tensors.values()) / 1e9:.2f} B parameters")


if __name__ == "__main__":
    main()
