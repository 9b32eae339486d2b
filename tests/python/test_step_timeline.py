#!/usr/bin/env python3
"""scripts/gpu/step_timeline.py: exposed times, idle gaps and host calls over a made-up trace of
scripts/gpu/cupti_trace.cc."""
import os
import sys
import tempfile
import unittest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "scripts", "gpu"))
import step_timeline  # noqa: E402

# Two replays of a three-node graph (nodes 11-13; the decode kernel starts under the product, as
# under programmatic dependent launch), then a copy kernel and a copy outside the graph, the host's
# launch of the next replay, and its first node again. Names may hold commas and quotes.
TRACE = """kind,start_ns,end_ns,stream,graph_node,name
kernel,1000,3000,7,11,"detail::skinny_gemm_kernel(Args)"
kernel,2500,4000,7,12,"void decode_kernel<128, 0, 0, 0, 0>(DecodeArgs)"
kernel,4000,5000,7,13,"rms_norm_kernel<1>(const unsigned short *, unsigned short *)"
kernel,5200,5400,7,0,"void at::native::elementwise_kernel<""direct_copy"">(int)"
memcpy,5500,5600,7,0,"memcpy kind 2 24 B"
api,5900,6300,12345,0,"cudaGraphLaunch_v10000"
kernel,6500,8000,7,11,"detail::skinny_gemm_kernel(Args)"
"""


class StepTimelineTest(unittest.TestCase):
    def write(self, text):
        d = tempfile.mkdtemp()
        path = os.path.join(d, "trace.csv")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_the_period_is_charged_to_the_work_and_the_idle_gaps(self):
        s = step_timeline.summarize(step_timeline.read_trace(self.write(TRACE)), layers=1)
        self.assertAlmostEqual(s["period_us"], 5.5)  # replay to replay: 1000 -> 6500
        self.assertAlmostEqual(s["graph_us"], 4.0)
        g = s["groups"]
        self.assertAlmostEqual(g["matmul"]["exposed_us"], 2.0)
        self.assertAlmostEqual(g["attention: decode"]["exposed_us"], 1.0)  # after the product's end
        self.assertAlmostEqual(g["attention: decode"]["duration_us"], 1.5)
        self.assertAlmostEqual(g["norm / rope"]["exposed_us"], 1.0)
        self.assertAlmostEqual(g["elementwise / copies (outside the graph)"]["exposed_us"], 0.2)
        self.assertAlmostEqual(g["memcpy (outside the graph)"]["exposed_us"], 0.1)
        self.assertAlmostEqual(s["idle_us"], 0.2 + 0.1 + 0.9)
        exposed = sum(x["exposed_us"] for x in g.values())
        self.assertAlmostEqual(exposed + s["idle_us"], s["period_us"])
        self.assertEqual(s["api"]["cudaGraphLaunch_v10000"]["count"], 1)
        self.assertAlmostEqual(s["api"]["cudaGraphLaunch_v10000"]["us"], 0.4)
        self.assertIn("idle", step_timeline.text(s))

    def test_one_replay_or_another_file_is_refused(self):
        one = "\n".join(TRACE.splitlines()[:-1]) + "\n"  # no second replay
        with self.assertRaises(ValueError):
            step_timeline.summarize(step_timeline.read_trace(self.write(one)), layers=1)
        with self.assertRaises(ValueError):
            step_timeline.read_trace(self.write("Start (ns),Duration (ns),Name\n1,2,x\n"))


if __name__ == "__main__":
    unittest.main()
