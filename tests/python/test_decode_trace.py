#!/usr/bin/env python3
"""bench/kernels/decode_trace.py: its summary of a made-up per-CTA trace (phases in ns, as
kernels_bench --trace writes them), straddling CTAs told apart from the rest."""
import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "bench", "kernels"))
import decode_trace  # noqa: E402


def cta(entry_us, phase_us, pieces, merges):
    """One CTA's 16 words: (globaltimer ns, clock) at 7 events, then (pieces, merges)."""
    words, t = [], entry_us * 1000
    for step in [0] + phase_us:
        t += step * 1000
        words += [t, 0]
    return words + [pieces, merges]


class Summary(unittest.TestCase):
    def test_the_straddler_ends_last_and_is_reported_apart(self):
        ctas = [cta(0, [1, 2, 80, 2, 0, 0], 1, 0),
                cta(0, [1, 2, 70, 2, 5, 0], 1, 1),
                cta(0, [1, 2, 20, 16, 4, 60], 2, 1)]
        rec = {"model": "llama3-8b", "context": 524288, "batch": 1, "sparsity": 0.9, "lookup": "paper",
               "rep": 0, "device": "test", "ctas": ctas}
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write(json.dumps(rec) + "\n")
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                sys.argv = ["decode_trace.py", f.name, "--batch", "1"]
                decode_trace.main()
        finally:
            os.unlink(f.name)
        text = out.getvalue()
        self.assertIn("3 CTAs, 3 with rows, 2 merges; span 103.0 us", text)
        self.assertIn("last to finish: entry at +0.0 us; wait for the selection 1.00, split (range known) 2.00, "
                      "first piece's rows 20.00, partial + ticket 16.00", text)
        self.assertIn("ends, 2 CTAs with one piece: first 80.0 us, median 82.5, 95th percentile 85.0, last 85.0", text)
        self.assertIn("ends, 1 CTAs with 2+ pieces: first 103.0 us", text)


if __name__ == "__main__":
    unittest.main()
