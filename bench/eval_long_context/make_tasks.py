#!/usr/bin/env python3
"""Writes the long-context evaluation tasks (issue 7, item 3) as JSONL: one fixed context per line with
many queries, for bench/eval_long_context/longctx_eval (README.md there).

Tasks (generators shared with training: scripts/gpu/longctx_tasks.py):
  kv_retrieval   a long `key = value` table, then `lookup KEY ->`        (answer: the value)
  passkey        held-out text with named pass keys planted at random depths (answer: the key)
  function_copy  real held-out Python functions, then one's signature      (answer: its body, verbatim)
  perplexity     held-out natural text: context = N tokens, query = the next --continuation tokens,
                 scored by teacher-forced log-probs (GenerateRequest.include_prompt_logprobs)

Natural text (passkey filler, perplexity) and functions come only from the HELD-OUT corpus shipped with
the evaluation, bench/eval_long_context/heldout/ (a frozen snapshot of this repository's own docs and
Python scripts: never part of the training corpus, which walked the training machine's site-packages,
stdlib and license texts; heldout/README.md). Nothing is read from the host, so the same command writes
the same tasks on any machine. Document seeds are strings ("eval/<seed>/<task>/<length>/<i>"),
disjoint from training's integer seeds.

Every context is sized with the tokenizer so that context (with BOS) + the longest query + its
max_new_tokens fits in the length L: a "32K" task uses at most 32768 positions. Queries carry
`prompt_ids`, the prompt's token ids exactly as they follow the context when context + prompt is
tokenized as one text (what training saw; tokenizing the prompt alone would add sentencepiece's dummy
prefix "▁"), and `max_new_tokens` = the answer's tokens + --margin_tokens.

Pure Python + sentencepiece (no torch): runs on the GPU machine's python3 and on Debian's.

  make_tasks.py --out tasks.jsonl [--lengths 4K,8K,16K,32K] [--contexts_per_task 2] [--queries 24]
                [--tasks kv_retrieval,passkey,function_copy,perplexity] [--seed 0]
                [--tokenizer models/small/tokenizer.model] [--continuation 256] [--max_answer_tokens 0]
                [--heldout bench/eval_long_context/heldout]
"""
import argparse
import hashlib
import json
import os
import random
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts", "gpu"))
import longctx_tasks  # noqa: E402

ALL_TASKS = ("kv_retrieval", "passkey", "function_copy", "perplexity")
DEFAULT_TOKENIZER = os.path.join(REPO, "models", "small", "tokenizer.model")
DEFAULT_HELDOUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "heldout")


def parse_length(text):
    text = text.strip().upper()
    if text.endswith("K"):
        return int(float(text[:-1]) * 1024)
    return int(text)


class Tok:
    """The tokenizer plus the two measurements the tasks need."""

    def __init__(self, path):
        import sentencepiece as spm  # Debian python3-sentencepiece here, pip's on the GPU machine
        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.path = path
        with open(path, "rb") as f:
            self.sha256 = hashlib.sha256(f.read()).hexdigest()

    def count(self, text):
        return len(self.sp.encode(text))

    def continuation_ids(self, context_ids, context, text):
        """Ids of `text` as it follows `context` when both are tokenized as one string; None when the
        boundary merges tokens (the context's tokens would change)."""
        full = self.sp.encode(context + text)
        n = len(context_ids)
        if full[:n] != context_ids:
            return None
        return full[n:]


# ------------------------------------------------------------------------------------------------
# Held-out sources
# ------------------------------------------------------------------------------------------------

class HeldOut:
    """The held-out corpus: every *.txt document of `directory` (heldout/README.md excluded), sorted by
    name; documents named *.py.txt are Python sources and also give functions for function_copy."""

    def __init__(self, directory, min_files=4):
        names = sorted(n for n in os.listdir(directory) if n.endswith(".txt"))
        self.texts = {}
        for name in names:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                text = f.read()
            if text.strip():
                self.texts[name] = text
        self.paths = sorted(self.texts)
        if len(self.paths) < min_files:
            sys.exit(f"make_tasks: only {len(self.paths)} held-out documents in {directory}; need {min_files}")
        self.filler = []
        self.functions = []
        for p in self.paths:
            t = self.texts[p]
            self.filler += [c for c in t.split("\n\n") if 40 < len(c) < 2000]
            if p.endswith(".py.txt"):
                self.functions += longctx_tasks.extract_functions(t)
        print(f"make_tasks: {len(self.paths)} held-out documents in {directory}: {len(self.filler)} paragraphs, "
              f"{len(self.functions)} functions", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# Retrieval tasks: generator output sized to the length budget
# ------------------------------------------------------------------------------------------------

def unambiguous_copy(context, prompt):
    """function_copy: the queried signature is on exactly one line of the context (another function of
    the same signature, e.g. `def __init__(self):`, would make the expected body ambiguous)."""
    signature = prompt.rstrip("\n").split("\n")[-1]
    return ("\n" + context).count("\n" + signature + "\n") == 1


def usable_pairs(tok, context, pairs, max_answer_tokens):
    """Drops ambiguous function-copy queries and (with max_answer_tokens) over-long answers."""
    out = []
    for prompt, answer in pairs:
        if prompt.startswith("\n# copy of the function above\n") and not unambiguous_copy(context, prompt):
            continue
        if max_answer_tokens and tok.count(answer) > max_answer_tokens:
            continue
        out.append((prompt, answer))
    return out


def make_queries(tok, context, pairs, margin):
    """(prompt, answer) pairs -> query dicts with prompt_ids (exact, one tokenization with the context:
    the slow part) and max_new_tokens."""
    context_ids = tok.sp.encode(context)
    out = []
    for prompt, answer in pairs:
        ids = tok.continuation_ids(context_ids, context, prompt)
        if ids is None:
            continue
        answer_tokens = tok.count(answer)
        out.append({"prompt": prompt, "answer": answer, "prompt_ids": ids, "answer_tokens": answer_tokens,
                    "max_new_tokens": answer_tokens + margin})
    return 1 + len(context_ids), out  # + BOS


def sized_retrieval(tok, generate, length, margin, seed_text, max_answer_tokens=0):
    """Calls generate(rng, approx_chars) -> (context, pairs) with a fresh rng of the same seed, scaling
    approx_chars until context + the longest query fits `length` and fills at least 95% of it (sized
    with token counts of the prompts alone, +2 for boundary effects; then checked with the exact
    prompt_ids). Documents grow by whole paragraphs or functions, so at short lengths no size may land
    in that band: the fullest document that fits (at least half the budget) is taken then. A seed whose
    document cannot fit at all (e.g. its first filler paragraph alone is too long for a short length) is
    replaced by "<seed>/retryN"."""
    for retry in range(8):
        seed = seed_text if retry == 0 else f"{seed_text}/retry{retry}"
        chars = length * 3.0
        slack = 2
        fallback = None  # (n_ctx, chars) of the fullest document under budget
        for _ in range(16):
            context, pairs = generate(random.Random(seed), int(chars))
            pairs = usable_pairs(tok, context, pairs, max_answer_tokens)
            if not pairs:
                chars *= 0.9
                continue
            n_ctx = 1 + tok.count(context)
            need = max(tok.count(p) + tok.count(a) + margin for p, a in pairs) + slack
            budget = length - need
            if budget <= 0:
                break
            if 0.5 * budget <= n_ctx <= budget and (fallback is None or n_ctx > fallback[0]):
                fallback = (n_ctx, int(chars))
            if 0.95 * budget <= n_ctx <= budget:
                found = fitted(tok, context, pairs, margin, length)
                if found:
                    return found + (seed,)
                slack += 8  # the estimate was short: aim lower
            chars *= max(0.5, min(1.6, 0.975 * budget / n_ctx))
        if fallback is not None:
            context, pairs = generate(random.Random(seed), fallback[1])
            found = fitted(tok, context, usable_pairs(tok, context, pairs, max_answer_tokens), margin, length)
            if found:
                return found + (seed,)
    raise RuntimeError(f"{seed_text}: could not fit a context in {length} tokens")


def fitted(tok, context, pairs, margin, length):
    """(n_ctx, context, queries) when context + every exact query fits `length`, else None."""
    if not pairs:
        return None
    n_ctx, queries = make_queries(tok, context, pairs, margin)
    if queries and n_ctx + max(len(q["prompt_ids"]) + q["max_new_tokens"] for q in queries) <= length:
        return n_ctx, context, queries
    return None


# ------------------------------------------------------------------------------------------------
# Perplexity: held-out text, the continuation inside one document
# ------------------------------------------------------------------------------------------------

def line_starts(text):
    starts = [0]
    i = text.find("\n")
    while i != -1:
        if i + 1 < len(text):
            starts.append(i + 1)
        i = text.find("\n", i + 1)
    return starts


def perplexity_context(tok, held, rng, length, continuation, seed_text):
    """Context = held-out documents ending with the beginning of a target document, cut at a line
    start; query = the next `continuation` tokens of that document (whole lines' tokens)."""
    # Targets: documents long enough to hold the continuation well inside them (~3 chars per token).
    targets = [p for p in held.paths if len(held.texts[p]) > 12 * continuation]
    if not targets:
        targets = sorted(held.paths, key=lambda p: len(held.texts[p]))[-4:]
    for _ in range(20):
        target = held.texts[rng.choice(targets)]
        starts = line_starts(target)
        # A cut in the second half of the document that leaves >= continuation tokens after it.
        candidates = [s for s in starts if s >= len(target) // 3]
        rng.shuffle(candidates)
        cut = next((s for s in candidates[:30] if tok.count(target[s:s + 16 * continuation]) >= continuation + 8),
                   None)
        if cut is None:
            continue
        # Other held-out documents in front, then the target up to the cut.
        budget = length - continuation - 8
        parts, chars = [target[:cut]], cut
        others = [p for p in held.paths if held.texts[p] is not target]
        while chars < budget * 6 and others:
            t = held.texts[rng.choice(others)]
            parts.insert(0, t if t.endswith("\n") else t + "\n")
            parts.insert(1, "\n")
            chars += len(t) + 1
        text = "".join(parts)
        # Left-truncate at a line start so that BOS + context fits the budget (binary search).
        starts = line_starts(text)
        lo, hi = 0, len(starts) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if 1 + tok.count(text[starts[mid]:]) <= budget:
                hi = mid
            else:
                lo = mid + 1
        context = text[starts[lo]:]
        context_ids = tok.sp.encode(context)
        if 1 + len(context_ids) > budget:
            continue
        ids = tok.continuation_ids(context_ids, context, target[cut:cut + 16 * continuation])
        if ids is None or len(ids) < continuation:
            continue
        ids = ids[:continuation]
        query = {"prompt": tok.sp.decode(ids), "answer": "", "prompt_ids": ids, "answer_tokens": 0,
                 "max_new_tokens": 1}
        return 1 + len(context_ids), context, [query]
    raise RuntimeError(f"{seed_text}: no perplexity context found")


# ------------------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSONL file to write ('-' = stdout)")
    p.add_argument("--lengths", default="4K,8K,16K,32K", help="context lengths in tokens (K = 1024)")
    p.add_argument("--contexts_per_task", type=int, default=2, help="fixed contexts per task and length")
    p.add_argument("--queries", type=int, default=24, help="queries per retrieval context (passkey: at most 16)")
    p.add_argument("--tasks", default=",".join(ALL_TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    p.add_argument("--heldout", default=DEFAULT_HELDOUT, help="directory of the held-out corpus (*.txt)")
    p.add_argument("--margin_tokens", type=int, default=8, help="max_new_tokens = answer tokens + this")
    p.add_argument("--continuation", type=int, default=256, help="perplexity: scored tokens per context")
    p.add_argument("--max_answer_tokens", type=int, default=0,
                   help="drop queries whose answer is longer (function_copy; 0 = keep all)")
    args = p.parse_args()

    lengths = [parse_length(x) for x in args.lengths.split(",") if x.strip()]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in ALL_TASKS:
            sys.exit(f"make_tasks: unknown task {t!r} (known: {', '.join(ALL_TASKS)})")
    tok = Tok(args.tokenizer)
    held = HeldOut(args.heldout)
    if "function_copy" in tasks and len(held.functions) < 8:
        sys.exit("make_tasks: too few held-out functions for function_copy")

    out = sys.stdout if args.out == "-" else open(args.out, "w")
    t0 = time.time()
    lines = 0
    # Context-major order: every task and length of context 0 first, so that an evaluation stopped
    # early (longctx_eval --time_budget_s) still covers every cell.
    for i in range(args.contexts_per_task):
        for length in lengths:
            for task in tasks:
                seed_text = f"eval/{args.seed}/{task}/{length}/{i}"
                if task == "kv_retrieval":
                    gen = lambda rng, chars: longctx_tasks.kv_retrieval(rng, chars, num_queries=args.queries)
                elif task == "passkey":
                    gen = lambda rng, chars: longctx_tasks.passkey(rng, chars, held.filler,
                                                                   num_keys=min(args.queries, 16))
                elif task == "function_copy":
                    gen = lambda rng, chars: longctx_tasks.function_copy(rng, chars, held.functions,
                                                                         num_queries=args.queries)
                if task == "perplexity":
                    n_ctx, context, queries = perplexity_context(tok, held, random.Random(seed_text), length,
                                                                 args.continuation, seed_text)
                    seed = seed_text
                else:
                    n_ctx, context, queries, seed = sized_retrieval(tok, gen, length, args.margin_tokens,
                                                                    seed_text, args.max_answer_tokens)
                record = {
                    "id": f"{task}-{length}-{args.seed}-{i}",
                    "task": task,
                    "context_tokens_target": length,
                    "context_tokens": n_ctx,
                    "tokenizer_sha256": tok.sha256,
                    "vocab_size": tok.sp.get_piece_size(),
                    "seed": seed,
                    "context": context,
                    "queries": queries,
                }
                out.write(json.dumps(record) + "\n")
                out.flush()
                lines += 1
                print(f"make_tasks: {record['id']}: {n_ctx} context tokens, {len(queries)} queries "
                      f"({time.time() - t0:.0f}s)", file=sys.stderr)
    if out is not sys.stdout:
        out.close()
    print(f"make_tasks: wrote {lines} contexts to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
