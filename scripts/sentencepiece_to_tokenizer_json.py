#!/usr/bin/env python3
"""Writes the Hugging Face tokenizer.json (+ tokenizer_config.json) of a sentencepiece BPE model.

The form HF transformers' LlamaConverter gives Llama-2 / Mistral checkpoints: a BPE with byte
fallback whose merges come from the pieces' scores (a pair merges at the rank of the piece it makes),
the "legacy" Prepend("▁") + Replace(" ", "▁") normalizer, no pre-tokenizer (or Digits when the model
splits digits), and the Replace / ByteFallback / Fuse / Strip decoder; <unk>, <s>, </s> are special.
Uses Debian's python3-sentencepiece only.

    python3 scripts/sentencepiece_to_tokenizer_json.py models/small/tokenizer.model models/small \
        [--chat_template FILE]
"""
import argparse
import json
import os

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2


def convert(model_path):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    proto = model_pb2.ModelProto()
    with open(model_path, "rb") as f:
        proto.ParseFromString(f.read())
    if proto.trainer_spec.model_type != model_pb2.TrainerSpec.BPE:
        raise SystemExit("only BPE sentencepiece models are supported")
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())}
    # HF's SentencePieceExtractor: every split of a piece into two pieces is a merge, ranked by the
    # score of the piece it makes (higher first), ties by the pieces' ids.
    merges = []
    for piece, score in scores.items():
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                local.append((left, right, score))
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2], reverse=True)
    specials = [i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)]
    added = [{"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i in specials]
    pre_tokenizer = None
    if proto.trainer_spec.split_digits:
        pre_tokenizer = {"type": "Digits", "individual_digits": True}
    bos = sp.bos_id()
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": sp.id_to_piece(bos), "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": sp.id_to_piece(bos), "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": sp.id_to_piece(bos), "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {sp.id_to_piece(bos): {"id": sp.id_to_piece(bos), "ids": [bos],
                                                                    "tokens": [sp.id_to_piece(bos)]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": sp.id_to_piece(sp.unk_id()),
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": proto.trainer_spec.byte_fallback, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b, _ in merges]},
    }
    config = {"bos_token": sp.id_to_piece(bos), "eos_token": sp.id_to_piece(sp.eos_id()),
              "unk_token": sp.id_to_piece(sp.unk_id()), "add_bos_token": True, "add_eos_token": False,
              "clean_up_tokenization_spaces": False, "legacy": True, "tokenizer_class": "LlamaTokenizerFast"}
    return tokenizer, config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("out_dir")
    parser.add_argument("--chat_template", help="a file whose text becomes tokenizer_config.json's chat_template")
    args = parser.parse_args()
    tokenizer, config = convert(args.model)
    if args.chat_template:
        with open(args.chat_template, encoding="utf-8") as f:
            config["chat_template"] = f.read()
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(args.out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
