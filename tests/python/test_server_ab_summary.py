#!/usr/bin/env python3
"""scripts/gpu/server_ab_summary.py: its table over made-up full_model_bench.py runs of two trees."""
import json
import os
import sys
import tempfile
import unittest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "scripts", "gpu"))
import server_ab_summary  # noqa: E402


def write_run(folder, name, tpots, ttft=100.0):
    """One full_model_bench.py --out folder: decode rows of dense at batches 1 and 8."""
    os.makedirs(os.path.join(folder, name))
    decode = [{"mode": "dense", "batch": b, "tpot_ms": t, "ttft_ms": ttft, "tpot_over_limit": t / 6.5}
              for b, t in zip((1, 8), tpots)]
    with open(os.path.join(folder, name, "full_llama3-8b_33000.json"), "w") as f:
        json.dump({"shape": "llama3-8b", "context": 33000, "decode": decode}, f)


class ServerAbSummaryTest(unittest.TestCase):
    def test_medians_and_ratio_per_mode_and_batch(self):
        with tempfile.TemporaryDirectory() as d:
            write_run(d, "base_1", (8.0, 10.2))
            write_run(d, "new_1", (7.9, 9.8))
            write_run(d, "base_2", (8.2, 10.3))
            write_run(d, "new_2", (8.1, 9.9), ttft=90.0)
            for name in ("base_1", "new_1", "base_2", "new_2"):  # server_ab.sh's logs beside the folders
                open(os.path.join(d, name + ".log"), "w").close()
            text = server_ab_summary.summary(d, "3e538c0aaaa")
        self.assertIn("base 3e538c0", text)
        rows = [line for line in text.splitlines() if line.startswith("| llama3-8b")]
        self.assertEqual(len(rows), 2)
        cells = [c.strip() for c in rows[1].split("|")[1:-1]]  # batch 8
        self.assertEqual(cells[3], "8")
        self.assertEqual(cells[4], "10.250")  # median of 10.2, 10.3
        self.assertEqual(cells[5], "9.850")
        self.assertEqual(cells[6], f"{9.85 / 10.25:.3f}")
        self.assertEqual(cells[9], "95.0")  # the new runs' TTFT median
        self.assertEqual(cells[10], "2 + 2")
        self.assertNotIn("no result", text)  # a log is not a run

    def test_a_run_without_result_is_named(self):
        with tempfile.TemporaryDirectory() as d:
            write_run(d, "base_1", (8.0, 10.2))
            os.makedirs(os.path.join(d, "new_1"))  # the server failed: no JSON
            text = server_ab_summary.summary(d)
        self.assertIn("no result in new_1", text)
        rows = [line for line in text.splitlines() if line.startswith("| llama3-8b")]
        self.assertTrue(all("| - |" in row for row in rows))  # no new TPOT, no ratio


if __name__ == "__main__":
    unittest.main()
