#!/usr/bin/env python3
"""Records what Hugging Face `tokenizers` and `transformers` do, for the C++ tokenizer and chat templates.

Run where those packages are installed (the GPU machine), from a copy of this repo:

    python3 scripts/gpu/record_hf_cases.py OUT_DIR

For each tokenizer family below it trains a small BPE tokenizer with `tokenizers` on text of this repo
(plus a few lines of other scripts), set up the way the family's tokenizer.json on the hub is (same
normalizer, pre-tokenizer, model flags, post-processor, decoder and added tokens), and records its
behaviour on generated test strings: the ids with and without special tokens, the decoded text with and
without skip_special_tokens, and the decoding of id sequences that cut or break UTF-8. It then renders
chat templates of the Llama-3, Qwen2/ChatML and Mistral kinds with `apply_chat_template` on varied
message lists. The C++ side must reproduce every record (tests/engine/hf_tokenizer_equivalence_test.cc,
tests/engine/chat_template_test.cc); the outputs live in tests/data/hf_recorded/.

Writes (7 files):
  OUT_DIR/<family>.json  for gpt2, llama3, qwen2, llama2, mistral:
      {"family", "tokenizer": <tokenizer.json>, "tokenizer_config": <tokenizer_config.json>,
       "encode": [{"text", "ids", "ids_special"?, "decoded", "decoded_skip"?}],
       "decode": [{"ids", "text", "text_skip"?}]}
      ("ids_special": encode(add_special_tokens=True) when it differs from "ids"; "*_skip": decode with
       skip_special_tokens=True when it differs)
  OUT_DIR/chat.json      {"templates": {name: template}, "cases": [{"template", "family", "messages",
                          "tools"?, "kwargs", "add_generation_prompt", "rendered" | "error", "ids"?}]}
  OUT_DIR/manifest.json  versions, counts, seconds
Only the standard library, tokenizers, transformers and jinja2 are used; it runs in well under a minute.
"""
import json
import os
import random
import sys
import time

import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = 16
ENCODE_CASES_PER_FAMILY = 2200
DECODE_CASES_PER_FAMILY = 400

# The split regexes of the real checkpoints' tokenizer.json.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# A few lines in other scripts so that the trained vocabularies hold some non-ASCII merges.
WORLD_TEXT = """\
Le cœur a ses raisons que la raison ne connaît point. Ça déjà été dit, n'est-ce pas ?
Über den Wolken muss die Freiheit wohl grenzenlos sein. Straße, Mädchen, Größe.
El niño comió piña en la montaña; ¿cuántos años tenía? ¡Olé!
Съешь же ещё этих мягких французских булок, да выпей чаю. Привет, мир!
Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο. Καλημέρα κόσμε.
我能吞下玻璃而不伤身体。你好，世界！今天天气很好，我们去公园散步吧。
私はガラスを食べられます。それは私を傷つけません。こんにちは、世界。カタカナとひらがな。
나는 유리를 먹을 수 있어요. 그래도 아프지 않아요. 안녕하세요 세계.
أنا قادر على أكل الزجاج و هذا لا يؤلمني. مرحبا بالعالم.
אני יכול לאכול זכוכית וזה לא מזיק לי. שלום עולם.
मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती. नमस्ते दुनिया।
ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ สวัสดีชาวโลก
Tôi có thể ăn thủy tinh mà không hại gì. Xin chào thế giới.
Emoji: 😀 😂 🥲 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨ 🚀 🐍 — ok ✓ → ∑ ∫ √ ≤ ≥ ≠ ∞ °C €100 £5 ¥300
"""

SCRIPT_WORDS = [w for line in WORLD_TEXT.splitlines() for w in line.split()]

# Code point ranges for random text: (first, last) inclusive; all assigned in Unicode 13 or older.
UNICODE_RANGES = [
    (0x20, 0x7E), (0xA0, 0xFF), (0x100, 0x17F), (0x180, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF),
    (0x531, 0x556), (0x5D0, 0x5EA), (0x620, 0x64A), (0x660, 0x669), (0x905, 0x939), (0x966, 0x96F),
    (0x985, 0x9B9), (0xE01, 0xE30), (0x10D0, 0x10FA), (0x1100, 0x1112), (0x1E00, 0x1EFF), (0x2010, 0x2027),
    (0x2030, 0x205E), (0x2070, 0x2079), (0x20A0, 0x20BF), (0x2100, 0x214F), (0x2190, 0x21FF), (0x2200, 0x22FF),
    (0x2500, 0x257F), (0x2600, 0x26FF), (0x3041, 0x3096), (0x30A1, 0x30FA), (0x4E00, 0x4FFF), (0xAC00, 0xAD00),
    (0xFF01, 0xFF5E), (0xFB00, 0xFB06), (0x1D400, 0x1D44F), (0x1F300, 0x1F64F), (0x1F680, 0x1F6C5),
    (0x1F90D, 0x1F9FF), (0x20000, 0x2007F), (0xE000, 0xE010),
]
COMBINING = [chr(c) for c in range(0x300, 0x370)] + ["\u0e31", "\u093f", "\u094d", "\u3099", "\u309a"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", "\t\t", " \t ", "\u00a0", "\u2003",
          "\u3000", "\u2009", "\u202f", "\u205f", "\u0085", "\u2028", "\u2029", "\u000b", "\u000c", "\u200b",
          "\u1680", "    ", "        ", "\n\n\n", " \r\n "]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "❤️", "✨", "🚀", "🐍", "🧑‍💻", "🏳️‍🌈", "☕", "1️⃣", "🤷‍♀️", "👋🏿"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'D", "’s", "'x"]
DECOMPOSED = ["e\u0301", "a\u0308", "o\u0302", "\u1100\u1161\u11a8", "A\u030a", "\u212b", "\u2126", "n\u0303",
              "\u0041\u0301\u0302", "\ufb01", "\u00bd", "\u2460", "\uff21", "\u1e9b\u0323", "\u0958"]
CODE = [
    "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "if err != nil {\n\t\treturn nil, err\n\t}", "#include <vector>\n", "SELECT * FROM t WHERE id=42;",
    "x = {'a': [1, 2, 3], \"b\": None}", "    // TODO(me): fix\n", "fn main() { println!(\"hi\"); }",
    "<div class=\"x\">&nbsp;</div>", "$ ls -la | grep '^d' > out.txt 2>&1", "a+=b**2//3%4",
    "const f = async () => { await g(); };", "\\begin{equation} e^{i\\pi} + 1 = 0 \\end{equation}",
]


def repo_corpus(limit_bytes=3_000_000):
    """Text files of this repo, in a stable order (the recorded outputs themselves excluded)."""
    exts = (".md", ".cc", ".h", ".py", ".proto", ".sh", ".txt", ".cu", ".yaml", ".cmake")
    files = []
    for root, dirs, names in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.startswith("build")
                         and d not in ("data", "__pycache__", "node_modules"))
        for name in sorted(names):
            if name.endswith(exts) or name == "CMakeLists.txt":
                files.append(os.path.join(root, name))
    texts, total = [], 0
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) > 200_000:
            continue
        texts.append(text)
        total += len(text)
        if total > limit_bytes:
            break
    return texts


def training_lines(texts):
    lines = []
    for text in texts:
        lines.extend(text.splitlines(keepends=True))
    lines.extend(WORLD_TEXT.splitlines(keepends=True) * 30)
    return lines


# ---------------------------------------------------------------------------------------------------
# Families: each returns (tokenizer, tokenizer_config, special token strings to plant in test text).

def added(content, id_, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False):
    return {"id": id_, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": normalized, "special": special}


def rebuild(tok, edit):
    """Edits the tokenizer's JSON form (model flags, added tokens) and loads it back."""
    data = json.loads(tok.to_str())
    edit(data)
    return Tokenizer.from_str(json.dumps(data))


def train_byte_level(lines, pattern, vocab_size, gpt2_regex):
    tok = Tokenizer(models.BPE())
    if gpt2_regex:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    tok.decoder = decoders.ByteLevel()
    return tok


def config(bos, eos, template, tok_json, extra=None):
    cfg = {
        "add_bos_token": bos is not None,
        "add_eos_token": False,
        "bos_token": bos,
        "eos_token": eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"}
                                 for t in tok_json["added_tokens"]},
    }
    if template is not None:
        cfg["chat_template"] = template
    cfg.update(extra or {})
    return cfg


def family_gpt2(lines):
    tok = train_byte_level(lines, None, 1500, gpt2_regex=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    n = tok.get_vocab_size()

    def edit(d):
        d["added_tokens"] = [
            added("<|endoftext|>", n, normalized=True),
            added("<|sep|>", n + 1, lstrip=True, rstrip=True),       # eats the whitespace around it
            added("<word>", n + 2, special=False, single_word=True),  # only between word boundaries
            added("  ", n + 3, special=False),                        # a plain added token: two spaces
        ]
        d["model"]["vocab"].update({"<|endoftext|>": n, "<|sep|>": n + 1, "<word>": n + 2})
    tok = rebuild(tok, edit)
    tj = json.loads(tok.to_str())
    return tok, config(None, "<|endoftext|>", None, tj, {"add_bos_token": False}), \
        ["<|endoftext|>", "<|sep|>", "<word>", "  "]


LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]


def family_llama3(lines):
    tok = train_byte_level(lines, LLAMA3_PATTERN, 2000, gpt2_regex=False)
    n = tok.get_vocab_size()
    bos = n
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])

    def edit(d):
        d["model"]["ignore_merges"] = True  # Llama-3: a pre-token found whole in the vocab is one token
        d["added_tokens"] = [added(s, n + i) for i, s in enumerate(LLAMA3_SPECIALS)]  # past the model's vocab
    tok = rebuild(tok, edit)
    tj = json.loads(tok.to_str())
    return tok, config("<|begin_of_text|>", "<|eot_id|>", TEMPLATES["llama3.1"], tj), LLAMA3_SPECIALS


QWEN2_ADDED = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
               ("<tool_call>", False), ("</tool_call>", False)]


def family_qwen2(lines):
    tok = train_byte_level(lines, QWEN2_PATTERN, 2000, gpt2_regex=False)
    tok.normalizer = normalizers.NFC()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    n = tok.get_vocab_size()

    def edit(d):
        d["model"]["ignore_merges"] = False
        d["added_tokens"] = [added(s, n + i, special=sp) for i, (s, sp) in enumerate(QWEN2_ADDED)]
    tok = rebuild(tok, edit)
    tj = json.loads(tok.to_str())
    return tok, config(None, "<|im_end|>", TEMPLATES["qwen2.5"], tj,
                       {"add_bos_token": False, "pad_token": "<|endoftext|>"}), [s for s, _ in QWEN2_ADDED]


def train_sentencepiece_style(lines, vocab_size, extra_specials):
    """A BPE in the form HF converts sentencepiece models to: ids 0-2 <unk> <s> </s>, ids 3-258 the byte
    tokens <0x00>..<0xFF>, then the learned pieces (with ▁ for spaces); byte fallback, unk fusing."""
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, limit_alphabet=150,
                                  special_tokens=["<unk>", "<s>", "</s>"])
    trainer_tok.train_from_iterator(lines, trainer)
    data = json.loads(trainer_tok.to_str())
    learned = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for piece, _ in learned:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    for s in extra_specials:
        vocab[s] = len(vocab)
    model = dict(data["model"])
    model.update({"vocab": vocab, "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True,
                  "dropout": None, "continuing_subword_prefix": None, "end_of_word_suffix": None})
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": None, "post_processor": None, "decoder": None, "model": model}


def component_json(kind, component):
    """The JSON form of a normalizer / pre_tokenizer / post_processor / decoder, as tokenizer.json holds it."""
    holder = Tokenizer(models.BPE())
    setattr(holder, kind, component)
    return json.loads(holder.to_str())[kind]


def bos_template_processor(bos_id):
    return component_json("post_processor", processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", bos_id)]))


def family_llama2(lines):
    """Llama-2's tokenizer.json (legacy form): Prepend ▁ + Replace ' ' normalizer, no pre-tokenizer."""
    d = train_sentencepiece_style(lines, 1600, [])
    d["added_tokens"] = [added("<unk>", 0, normalized=True), added("<s>", 1, normalized=True),
                         added("</s>", 2, normalized=True)]
    d["normalizer"] = component_json("normalizer", normalizers.Sequence([
        normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]))
    d["decoder"] = component_json("decoder", decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]))
    d["post_processor"] = bos_template_processor(1)
    tok = Tokenizer.from_str(json.dumps(d))
    tj = json.loads(tok.to_str())
    return tok, config("<s>", "</s>", TEMPLATES["llama2"], tj, {"unk_token": "<unk>", "legacy": True}), \
        ["<s>", "</s>", "<unk>"]


MISTRAL_SPECIALS = ["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                    "[TOOL_RESULTS]", "[/TOOL_RESULTS]"]


def family_mistral(lines):
    """The newer sentencepiece-converted form: Metaspace pre-tokenizer (prepend_scheme first, no split)."""
    d = train_sentencepiece_style(lines, 1300, MISTRAL_SPECIALS)
    v = d["model"]["vocab"]
    d["added_tokens"] = [added("<unk>", 0), added("<s>", 1), added("</s>", 2)] + \
        [added(s, v[s]) for s in MISTRAL_SPECIALS]
    d["pre_tokenizer"] = component_json("pre_tokenizer", pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first", split=False))
    d["decoder"] = component_json("decoder", decoders.Sequence([
        decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=False),
        decoders.ByteFallback(), decoders.Fuse()]))
    d["post_processor"] = bos_template_processor(1)
    tok = Tokenizer.from_str(json.dumps(d))
    tj = json.loads(tok.to_str())
    return tok, config("<s>", "</s>", TEMPLATES["mistral-v0.3"], tj, {"unk_token": "<unk>", "legacy": False}), \
        ["<s>", "</s>"] + MISTRAL_SPECIALS


# ---------------------------------------------------------------------------------------------------
# Test strings.

def random_unicode(rng, n):
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.08:
            out.append(rng.choice(SPACES))
        elif r < 0.12:
            out.append(rng.choice(COMBINING))
        elif r < 0.16:
            out.append(rng.choice(EMOJI))
        else:
            lo, hi = rng.choice(UNICODE_RANGES)
            out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def snippet(rng, texts, max_len):
    text = rng.choice(texts)
    if not text:
        return ""
    start = rng.randrange(len(text))
    return text[start:start + rng.randint(1, max_len)]


def number(rng):
    kind = rng.random()
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 14)))
    if kind < 0.3:
        return digits
    if kind < 0.5:
        return f"{rng.randint(0, 10**6):,}"
    if kind < 0.7:
        return f"{rng.uniform(-1e4, 1e4):.{rng.randint(0, 6)}f}"
    if kind < 0.85:
        return rng.choice(["v", "x", "id", "abc", "", "$", "#"]) + digits + rng.choice(["", "px", "th", "%", "k"])
    return "".join(chr(0x660 + int(c)) if rng.random() < 0.5 else chr(0xFF10 + int(c)) for c in digits)


def words_with_contractions(rng):
    out = []
    for _ in range(rng.randint(1, 8)):
        w = rng.choice(["I", "you", "we", "they", "DON", "it", "she", "Y", "rock", "o", "can", "won", "l"])
        out.append(w + rng.choice(CONTRACTIONS + [""]))
    return rng.choice([" ", "  ", "", "\n"]).join(out)


def with_specials(rng, specials, texts):
    parts = []
    for _ in range(rng.randint(1, 6)):
        r = rng.random()
        if r < 0.45:
            parts.append(rng.choice(specials))
        elif r < 0.55:
            s = rng.choice(specials)
            parts.append(s[:rng.randint(1, max(1, len(s) - 1))])  # a broken special token is plain text
        elif r < 0.7:
            parts.append(rng.choice(SPACES))
        else:
            parts.append(snippet(rng, texts, 40))
    return "".join(parts)


def make_texts(rng, texts, specials, count):
    fixed = ["", " ", "  ", "\n", "\t", "a", " a", "a ", "Hello world", "Hello  world", " Hello", "hello\n\nworld",
             "\u00a0", "\u0085", "é", "e\u0301", "😀", "👨‍👩‍👧‍👦", "1234567", "12 345", "don't", "DON'T",
             "I'm here", "  leading", "trailing  ", "\r\n", "a\r\nb", "\u2581", "\u2581a", "▁▁x", "<0x41>",
             "<unk>", "\x00", "tab\there", "     indented", "x" * 300, " " * 40, "\n" * 10, "1" * 40] + \
        [s for s in specials] + [" " + s + " " for s in specials] + ["a" + s + "b" for s in specials]
    out = list(fixed)
    generators = [
        (0.22, lambda: snippet(rng, texts, 200)),
        (0.14, lambda: random_unicode(rng, rng.randint(1, 40))),
        (0.10, lambda: " ".join(rng.choice(SCRIPT_WORDS) for _ in range(rng.randint(1, 12)))),
        (0.08, lambda: "".join(rng.choice(SPACES) + rng.choice(SCRIPT_WORDS + ["x", "if", "1"])
                               for _ in range(rng.randint(1, 8))) + rng.choice(SPACES + [""])),
        (0.08, lambda: " ".join(number(rng) for _ in range(rng.randint(1, 5)))),
        (0.07, lambda: "".join(rng.choice(CODE) for _ in range(rng.randint(1, 3)))),
        (0.06, lambda: words_with_contractions(rng)),
        (0.10, lambda: with_specials(rng, specials, texts)),
        (0.06, lambda: "".join(rng.choice(DECOMPOSED) + rng.choice(["", " ", "x"]) for _ in range(rng.randint(1, 6)))),
        (0.05, lambda: "".join(rng.choice(EMOJI) + rng.choice(["", "", " ", "a", "1"]) for _ in range(rng.randint(1, 8)))),
        (0.04, lambda: snippet(rng, texts, 3000)),
    ]
    total = sum(w for w, _ in generators)
    while len(out) < count:
        r = rng.random() * total
        for weight, gen in generators:
            r -= weight
            if r <= 0:
                out.append(gen())
                break
    return out[:count]


# ---------------------------------------------------------------------------------------------------
# Recording tokenizers.

def record_family(name, tok, cfg, specials, texts, rng):
    encode_cases, decode_cases = [], []
    strings = make_texts(rng, texts, specials, ENCODE_CASES_PER_FAMILY)
    plain_all = tok.encode_batch(strings, add_special_tokens=False)
    special_all = tok.encode_batch(strings, add_special_tokens=True)
    for text, plain, spec in zip(strings, plain_all, special_all):
        case = {"text": text, "ids": plain.ids}
        if spec.ids != plain.ids:
            case["ids_special"] = spec.ids
        case["decoded"] = tok.decode(plain.ids, skip_special_tokens=False)
        skipped = tok.decode(plain.ids, skip_special_tokens=True)
        if skipped != case["decoded"]:
            case["decoded_skip"] = skipped
        encode_cases.append(case)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    byte_ids = [i for i in range(vocab_size) if (tok.id_to_token(i) or "").startswith("<0x")]
    while len(decode_cases) < DECODE_CASES_PER_FAMILY:
        r = rng.random()
        if r < 0.35:   # any ids, special ones included
            ids = [rng.randrange(vocab_size) for _ in range(rng.randint(1, 16))]
        elif r < 0.7:  # a slice of an encoding of non-ASCII text: cuts multi-byte characters
            enc = tok.encode(random_unicode(rng, rng.randint(2, 20)), add_special_tokens=False).ids
            if not enc:
                continue
            a = rng.randrange(len(enc))
            ids = enc[a:a + rng.randint(1, 8)]
        elif r < 0.85 and byte_ids:  # raw byte tokens (byte fallback): invalid and partial UTF-8
            ids = [rng.choice(byte_ids) for _ in range(rng.randint(1, 6))]
            if rng.random() < 0.5:
                ids = [rng.randrange(vocab_size)] + ids + [rng.randrange(vocab_size)]
        else:          # special tokens among ordinary ones, ids past the vocabulary
            ids = [rng.randrange(vocab_size) for _ in range(rng.randint(0, 6))]
            ids.insert(rng.randint(0, len(ids)), vocab_size - 1 - rng.randrange(min(8, vocab_size)))
            if rng.random() < 0.2:
                ids.insert(rng.randint(0, len(ids)), vocab_size + rng.randrange(100))
        try:
            text = tok.decode(ids, skip_special_tokens=False)
            skipped = tok.decode(ids, skip_special_tokens=True)
        except Exception:  # e.g. an id past the vocabulary, where a version refuses it
            continue
        case = {"ids": ids, "text": text}
        if skipped != text:
            case["text_skip"] = skipped
        decode_cases.append(case)
    return {"family": name, "tokenizer": json.loads(tok.to_str()), "tokenizer_config": cfg,
            "encode": encode_cases, "decode": decode_cases}


# ---------------------------------------------------------------------------------------------------
# Chat templates (as shipped in the checkpoints' tokenizer_config.json).

TEMPLATES = {
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
        "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
        "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
        "{{ content }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "llama3.1": """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
""",
    "qwen2": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "qwen2.5": """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
""",
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
        "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
        "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"),
    "mistral-v0.1": (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"),
    "mistral-v0.3": """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
""",
}

# Which family's special tokens render each template (and tokenize its output).
TEMPLATE_FAMILY = {"llama3": "llama3", "llama3.1": "llama3", "qwen2": "qwen2", "qwen2.5": "qwen2",
                   "llama2": "llama2", "mistral-v0.1": "mistral", "mistral-v0.3": "mistral"}
TOOL_TEMPLATES = ("llama3.1", "qwen2.5", "mistral-v0.3")

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Zürich"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city"]}}}
SEARCH_TOOL = {"type": "function", "function": {
    "name": "search_docs", "description": "Search the manual",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "top_k": {"type": "number"},
                                                     "exact": {"type": "boolean"}}, "required": ["query"]}}}


def chat_content(rng, texts):
    r = rng.random()
    if r < 0.35:
        return snippet(rng, texts, 120)
    if r < 0.5:
        return " ".join(rng.choice(SCRIPT_WORDS) for _ in range(rng.randint(1, 10)))
    if r < 0.6:
        return rng.choice(SPACES) + snippet(rng, texts, 60) + rng.choice(SPACES)  # trimmed by some templates
    if r < 0.68:
        return ""
    if r < 0.76:
        return random_unicode(rng, rng.randint(1, 20))
    if r < 0.84:
        return "Line one\n\nLine two\n  - item\n" + rng.choice(EMOJI)
    if r < 0.92:
        return rng.choice(["<|eot_id|> inside", "[INST] nested [/INST]", "<|im_end|>\n", "{{ not jinja }}",
                           "{% raw %}", "quote \" and ' and \\ backslash", "tab\tand\r\nCRLF"])
    return snippet(rng, texts, 400)


def chat_messages(rng, texts, with_tools, system_probability):
    msgs = []
    if rng.random() < system_probability:
        msgs.append({"role": "system", "content": chat_content(rng, texts)})
    turns = rng.randint(1, 5)
    for i in range(turns):
        msgs.append({"role": "user", "content": chat_content(rng, texts)})
        if i < turns - 1 or rng.random() < 0.3:
            msgs.append({"role": "assistant", "content": chat_content(rng, texts)})
    if rng.random() < 0.12:  # broken alternation: templates that check it must refuse
        i = rng.randrange(len(msgs))
        msgs.insert(i, {"role": rng.choice(["user", "assistant"]), "content": "again"})
    if rng.random() < 0.05:
        msgs.append({"role": "narrator", "content": "an unknown role"})
    if with_tools and rng.random() < 0.5:
        call_id = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(9))
        args = {"city": rng.choice(["Paris", "Zürich", "東京"]), "days": rng.randint(1, 7)}
        msgs.append({"role": "assistant", "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": args}}]})
        msgs.append({"role": "tool", "tool_call_id": call_id, "name": "get_weather",
                     "content": rng.choice(["{\"temp\": 21.5, \"sky\": \"clear\"}", "sunny, 21°C", "[1, 2]"])})
        if rng.random() < 0.5:
            msgs.append({"role": "assistant", "content": "It is sunny."})
            msgs.append({"role": "user", "content": "Thanks! And tomorrow?"})
    return msgs


def hf_renderer(family_cfg):
    """apply_chat_template of a transformers tokenizer with the family's special tokens; None if this
    transformers version cannot build one (then render_jinja_template, then plain jinja2 are tried)."""
    try:
        from transformers import PreTrainedTokenizerFast
        cfg = family_cfg["tokenizer_config"]
        hf = PreTrainedTokenizerFast(tokenizer_object=family_cfg["tok"], bos_token=cfg.get("bos_token"),
                                     eos_token=cfg.get("eos_token"), unk_token=cfg.get("unk_token"))

        def render(template, messages, tools, add_generation_prompt, kwargs):
            return hf.apply_chat_template(messages, tools=tools, chat_template=template, tokenize=False,
                                          add_generation_prompt=add_generation_prompt, **kwargs)
        probe = render("{{ messages[0]['content'] }}", [{"role": "user", "content": "probe"}], None, False, {})
        if probe != "probe":
            raise RuntimeError(f"apply_chat_template(tokenize=False) returned {probe!r}")
        return render, "transformers.PreTrainedTokenizerFast.apply_chat_template"
    except Exception as e:  # noqa: BLE001 - any API drift falls back below
        print("apply_chat_template unavailable:", repr(e), file=sys.stderr)
    try:
        from transformers.utils.chat_template_utils import render_jinja_template
        cfg = family_cfg["tokenizer_config"]

        def render(template, messages, tools, add_generation_prompt, kwargs):
            rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=template,
                                                add_generation_prompt=add_generation_prompt,
                                                bos_token=cfg.get("bos_token"), eos_token=cfg.get("eos_token"),
                                                **kwargs)
            return rendered[0]
        return render, "transformers.utils.chat_template_utils.render_jinja_template"
    except Exception as e:  # noqa: BLE001
        print("render_jinja_template unavailable:", repr(e), file=sys.stderr)
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    cfg = family_cfg["tokenizer_config"]

    def render(template, messages, tools, add_generation_prompt, kwargs):
        return env.from_string(template).render(messages=messages, tools=tools,
                                                add_generation_prompt=add_generation_prompt,
                                                bos_token=cfg.get("bos_token"), eos_token=cfg.get("eos_token"),
                                                **kwargs)
    return render, "jinja2 with transformers' environment settings"


def record_chat(families, texts, rng):
    cases, renderer_names = [], set()
    renderers = {}
    for template_name, family in TEMPLATE_FAMILY.items():
        if family not in renderers:
            renderers[family] = hf_renderer(families[family])
        render, renderer_name = renderers[family]
        renderer_names.add(renderer_name)
        tok = families[family]["tok"]
        count = 90 if template_name in TOOL_TEMPLATES else 60
        for i in range(count):
            with_tools = template_name in TOOL_TEMPLATES
            messages = chat_messages(rng, texts, with_tools, 0.1 if template_name == "mistral-v0.1" else 0.45)
            tools = [WEATHER_TOOL, SEARCH_TOOL][:rng.randint(1, 2)] if with_tools and rng.random() < 0.4 else None
            kwargs = {}
            if template_name == "llama3.1" and rng.random() < 0.3:
                kwargs["date_string"] = "04 Dec 2026"
            if template_name == "llama3.1" and tools and rng.random() < 0.5:
                kwargs["tools_in_user_message"] = False
            case = {"template": template_name, "family": family, "messages": messages, "kwargs": kwargs,
                    "add_generation_prompt": i % 2 == 1}
            if tools is not None:
                case["tools"] = tools
            try:
                rendered = render(TEMPLATES[template_name], messages, tools, case["add_generation_prompt"], kwargs)
                case["rendered"] = rendered
                case["ids"] = tok.encode(rendered, add_special_tokens=False).ids
            except Exception as e:  # noqa: BLE001 - recorded: the C++ side must refuse too
                case["error"] = str(e)
            cases.append(case)
    return {"templates": TEMPLATES, "renderers": sorted(renderer_names), "cases": cases}


FAMILIES = [("gpt2", family_gpt2), ("llama3", family_llama3), ("qwen2", family_qwen2),
            ("llama2", family_llama2), ("mistral", family_mistral)]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    texts = repo_corpus()
    lines = training_lines(texts)
    texts = texts + [WORLD_TEXT]
    families, counts = {}, {}
    for name, make in FAMILIES:
        rng = random.Random(f"{SEED}-{name}")
        tok, cfg, specials = make(lines)
        record = record_family(name, tok, cfg, specials, texts, rng)
        families[name] = {"tok": tok, "tokenizer_config": cfg}
        with open(os.path.join(out_dir, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False, separators=(",", ":"))
        counts[name] = {"encode": len(record["encode"]), "decode": len(record["decode"]),
                        "vocab": tok.get_vocab_size(with_added_tokens=True)}
        print(f"{name}: {counts[name]} ({time.time() - start:.1f} s)", flush=True)
    chat = record_chat(families, texts, random.Random(f"{SEED}-chat"))
    with open(os.path.join(out_dir, "chat.json"), "w", encoding="utf-8") as f:
        json.dump(chat, f, ensure_ascii=False, indent=None, separators=(",", ":"))
    counts["chat"] = {"cases": len(chat["cases"]), "errors": sum("error" in c for c in chat["cases"])}
    try:
        import transformers
        transformers_version = transformers.__version__
    except Exception:  # noqa: BLE001
        transformers_version = None
    import jinja2
    manifest = {"script": "scripts/gpu/record_hf_cases.py", "seed": SEED, "tokenizers": tokenizers.__version__,
                "transformers": transformers_version, "jinja2": jinja2.__version__,
                "chat_renderers": chat["renderers"], "counts": counts,
                "seconds": round(time.time() - start, 1)}
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
