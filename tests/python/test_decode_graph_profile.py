#!/usr/bin/env python3
"""scripts/gpu/decode_graph_profile.py: its summary of a made-up Nsight Compute CSV of two replays of
a two-layer decode step (one replay kept; kernels grouped by what they do)."""
import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "scripts", "gpu"))
import decode_graph_profile  # noqa: E402

HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size",'
          '"Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"\n')
LAYER = [("rms_norm_kernel", 3000), ("sm90_xmma_gemm_bf16bf16_bf16f32", 14000), ("rope_kernel", 2000),
         ("score_mma_kernel<128, 4>", 9000), ("select_place_kernel", 6000), ("decode_kernel<128, true>", 80000),
         ("sm90_xmma_gemm_bf16bf16_bf16f32", 60000), ("vectorized_elementwise_kernel<silu>", 3000),
         ("sm90_xmma_gemm_bf16bf16_bf16f32", 30000)]


FIRST = [("indexSelectLargeIndex", 2000)]  # the embedding
LAST = [("rms_norm_kernel", 3000), ("sm90_xmma_gemm_bf16bf16_bf16f32", 250000), ("reduce_greedy_rows_kernel", 4000)]


def csv_text(replays, layers, dram=False):
    """With dram, each kernel also reads 1 MB from DRAM per us (as Mbyte rows)."""
    lines, i = ["==PROF== Connected to process 1\n", HEADER], 0
    row = '"{i}","1","squeezeserve","h","{name}","1","7","(128, 1, 1)","(264, 1, 1)","0","9.0",' \
          '"Command line profiler metrics","{metric}","{unit}","{value}"\n'
    for _ in range(replays):
        for name, ns in FIRST + LAYER * layers + LAST:
            lines.append(row.format(i=i, name=name, metric="gpu__time_duration.sum", unit="nsecond", value=f"{ns:,}"))
            if dram:
                lines.append(row.format(i=i, name=name, metric="dram__bytes_read.sum", unit="Mbyte", value=ns / 1e3))
            i += 1
    return "".join(lines)


class Summary(unittest.TestCase):
    def run_on(self, text, layers, extra=()):
        with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
            f.write(text)
        out, js = io.StringIO(), f.name + ".json"
        try:
            with contextlib.redirect_stdout(out):
                sys.argv = ["decode_graph_profile.py", f.name, "--layers", str(layers), "--json", js] + list(extra)
                decode_graph_profile.main()
            with open(js) as j:
                return out.getvalue(), json.load(j)
        finally:
            os.unlink(f.name)
            if os.path.exists(js):
                os.unlink(js)

    def test_dram_bytes_summed_by_group(self):
        text, s = self.run_on(csv_text(replays=2, layers=2, dram=True), layers=2)
        self.assertEqual(s["kernels"], 2 * len(LAYER) + 4)  # one row per kernel, not per metric
        g = s["groups"]
        self.assertAlmostEqual(g["attention: decode"]["dram_bytes"], 2 * 80e6)
        self.assertAlmostEqual(g["matmul"]["dram_bytes"], (2 * 104.0 + 250.0) * 1e6)
        self.assertIn("| attention: decode | 2 | 0.160 | ", text)
        self.assertIn("| 80.0 | 1.00 |", text)  # MB per layer, TB/s

    def test_one_replay_grouped(self):
        text, s = self.run_on(csv_text(replays=2, layers=2), layers=2)
        self.assertEqual(s["kernels"], 2 * len(LAYER) + 4)  # the first replay only
        self.assertAlmostEqual(s["total_us"], (2 * sum(ns for _, ns in LAYER) + 259000) / 1e3)
        g = s["groups"]
        self.assertAlmostEqual(g["matmul"]["us"], 2 * 104.0 + 250.0)  # the lm_head's with the layers'
        self.assertEqual(g["matmul"]["kernels"], 7)
        self.assertAlmostEqual(g["attention: decode"]["us"], 2 * 80.0)
        self.assertAlmostEqual(g["attention: selection"]["us"], 2 * 15.0)
        self.assertAlmostEqual(g["norm / rope"]["us"], 2 * 5.0 + 3.0)
        self.assertAlmostEqual(g["sampling"]["us"], 4.0)
        self.assertAlmostEqual(g["elementwise / copies"]["us"], 2 * 3.0 + 2.0)  # the embedding too
        self.assertIn("| matmul | 7 | 0.458 |", text)

    def test_a_partial_second_replay_still_gives_one(self):
        full = csv_text(replays=2, layers=3)
        cut = "".join(full.splitlines(keepends=True)[:-4])  # the profiler stopped mid-replay
        _, s = self.run_on(cut, layers=3)
        self.assertEqual(s["kernels"], 3 * len(LAYER) + 4)

    def test_all_rows_in_rounds(self):
        # The query prefill's steps do not repeat as replays do: --all sums them, per round.
        text, s = self.run_on(csv_text(replays=2, layers=2), layers=2, extra=("--all", "--rounds", "2"))
        self.assertEqual(s["kernels"], 2 * (2 * len(LAYER) + 4))
        self.assertAlmostEqual(s["total_us"], (2 * sum(ns for _, ns in LAYER) + 259000) / 1e3)
        self.assertAlmostEqual(s["groups"]["matmul"]["us"], 2 * 104.0 + 250.0)
        self.assertIn("per round of 2", text)
        self.assertEqual(decode_graph_profile.group_of("prefill_kernel<128, 4>"), "attention: prefill")
        self.assertEqual(decode_graph_profile.group_of("merge_parts_kernel"), "attention: merges")
        self.assertEqual(decode_graph_profile.group_of("void detail::merge_pieces_kernel<128>(MergePiecesArgs)"),
                         "attention: merges")


if __name__ == "__main__":
    unittest.main()
