"""Synthetic long-context retrieval documents, shared by training (scripts/gpu/train_small_model.py)
and, later, the evaluation harness (bench/eval_long_context/), so both see the same formats.

Each generator returns (context, queries): `context` is the long fixed document; `queries` is a list of
(prompt, answer) strings whose answer can only be found far back in the context. For training the
document is flattened as context + "".join(prompt + answer) so the LM loss covers every answer.

Pure Python (no numpy/torch) so it runs anywhere; randomness comes from the `random.Random` passed in,
so a seed fully determines a document.

Also here, for the same reason: the training corpus walk (`corpus_files`) and the held-out rule
(`is_heldout`): training skips held-out files, the evaluation harness takes its natural text and real
functions only from them.
"""
import hashlib
import os
import random
import re
import site

TEXT_SUFFIXES = (".py", ".md", ".rst", ".txt")


def corpus_files(max_file_bytes=1 << 20):
    """Text files present on any Python machine: site-packages + stdlib sources/docs, license texts."""
    roots = list(site.getsitepackages()) + [os.path.dirname(os.__file__), "/usr/share/common-licenses"]
    files = set()
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = os.path.join(dirpath, n)
                if (n.endswith(TEXT_SUFFIXES) or n.startswith(("LICENSE", "COPYING")) or
                        root.endswith("common-licenses")):
                    try:
                        if 0 < os.path.getsize(p) <= max_file_bytes:
                            files.add(os.path.realpath(p))
                    except OSError:
                        pass
    return sorted(files)


def is_heldout(path):
    # ~2% of files, chosen by path hash, are kept out of training for the evaluation harness.
    return hashlib.md5(path.encode()).digest()[0] < 5


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (UnicodeDecodeError, OSError):
        return None

_SYLLABLES = ["ka", "lo", "mi", "ran", "tes", "vu", "zor", "pel", "dun", "qui", "bex", "sol", "tra",
              "nim", "gor", "fa", "wen", "hul", "cri", "yo", "mab", "ost", "ri", "sen"]
_VAULTS = ["Orion", "Lyra", "Cygnus", "Draco", "Auriga", "Perseus", "Vela", "Carina", "Hydra",
           "Pegasus", "Aquila", "Cetus", "Lupus", "Norma", "Pavo", "Tucana"]


def _word(rng, parts=(2, 4)):
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(*parts)))


def _key(rng):
    return f"{_word(rng)}_{_word(rng, (1, 2))}"


def _value(rng):
    # Digits are split one per token by the tokenizer (--split_digits), so values cost ~6 tokens.
    return str(rng.randint(100000, 999999))


def kv_retrieval(rng, approx_chars, num_queries=16):
    """A long `key = value` table followed by lookups of random keys."""
    lines, table = [], {}
    size = 0
    lines.append("# configuration table\n")
    while size < approx_chars:
        k = _key(rng)
        if k in table:
            continue
        table[k] = _value(rng)
        line = f"{k} = {table[k]}\n"
        lines.append(line)
        size += len(line)
    keys = list(table)
    queries = [(f"\nlookup {k} ->", f" {table[k]}\n") for k in rng.sample(keys, min(num_queries, len(keys)))]
    return "".join(lines), queries


def passkey(rng, approx_chars, filler_chunks, num_keys=4):
    """Natural filler text with a few named pass keys planted at random depths, then questions."""
    filler, size = [], 0
    while size < approx_chars:
        chunk = rng.choice(filler_chunks)
        filler.append(chunk)
        size += len(chunk)
    names = rng.sample(_VAULTS, num_keys)
    keys = {n: str(rng.randint(10000, 99999)) for n in names}
    for n in names:
        filler.insert(rng.randint(0, len(filler)), f"\nThe pass key for vault {n} is {keys[n]}. Remember it.\n")
    order = names[:]
    rng.shuffle(order)
    queries = [(f"\nWhat is the pass key for vault {n}? The pass key for vault {n} is", f" {keys[n]}.\n")
               for n in order]
    return "".join(filler), queries


_DEF = re.compile(r"^(\s*)(async\s+)?def\s+\w+\s*\(")


def extract_functions(source, min_lines=3, max_lines=40):
    """Python function blocks (signature line + body) found by indentation; good enough for copying."""
    lines = source.split("\n")
    out = []
    i = 0
    while i < len(lines):
        m = _DEF.match(lines[i])
        if not m or not lines[i].rstrip().endswith(":"):  # single-line signatures only: easy to query
            i += 1
            continue
        indent = len(m.group(1))
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
            j += 1
        block = lines[i:j]
        while block and not block[-1].strip():
            block.pop()
        if min_lines <= len(block) <= max_lines:
            # Dedent so methods and functions look alike when lined up in one synthetic module.
            out.append("\n".join(l[indent:] for l in block))
        i = max(j, i + 1)
    return out


def function_copy(rng, approx_chars, functions, num_queries=4):
    """Many real functions in one module, then a few signatures whose bodies must be copied verbatim."""
    chosen, size = [], 0
    while size < approx_chars:
        f = rng.choice(functions)
        chosen.append(f)
        size += len(f) + 2
    queries = []
    for f in rng.sample(chosen, min(num_queries, len(chosen))):
        signature, _, body = f.partition("\n")
        queries.append((f"\n# copy of the function above\n{signature}\n", body + "\n"))
    return "\n\n".join(chosen) + "\n", queries


def make_document(rng, approx_chars, filler_chunks, functions):
    """One training document of a randomly chosen task, flattened to text."""
    kind = rng.choice(["kv", "passkey", "copy"] if functions else ["kv", "passkey"])
    if kind == "kv":
        context, queries = kv_retrieval(rng, approx_chars)
    elif kind == "passkey":
        context, queries = passkey(rng, approx_chars, filler_chunks)
    else:
        context, queries = function_copy(rng, approx_chars, functions)
    return context + "".join(p + a for p, a in queries)
