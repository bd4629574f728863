"""Smoke test of bench/compare/run: a tiny run (--quick: 200 messages of the
1k-s20 scenario through the ceiling, Postfix and Sluice; the load-tool, latency
and idle experiments shortened) whose JSON and markdown reports are checked for shape
and counts. Nothing about speed is asserted."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEMS = ("ceiling", "postfix", "sluice")
# The same relay to sluice-segsink: each reply its own write; no PIPELINING.
SINK_VARIANTS = ("sluice-segments", "sluice-lockstep")


class CompareSmokeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.out = Path(tempfile.mkdtemp(prefix="compare-smoke."))
        build = os.environ.get("SLUICE_BUILD", str(HERE.parents[1] / "build"))
        cls.proc = subprocess.run(
            [sys.executable, str(HERE / "run"), "--quick", "--build", build,
             "--systems", ",".join(SYSTEMS + SINK_VARIANTS), "--out-dir", str(cls.out)],
            capture_output=True, text=True, timeout=540)
        cls.report = None
        if (cls.out / "compare.json").exists():
            cls.report = json.loads((cls.out / "compare.json").read_text())

    def setUp(self):
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-4000:])
        self.assertIsNotNone(self.report, "no compare.json")

    def test_machine_and_provenance(self):
        r = self.report
        for key in ("date", "git", "repeat", "machine", "wall_s"):
            self.assertIn(key, r)
        self.assertEqual(r["repeat"], 1)
        m = r["machine"]
        for key in ("cpu", "cores", "mem_gib", "kernel", "disk", "postfix"):
            self.assertIn(key, m)
        self.assertGreaterEqual(m["cores"], 1)
        self.assertIn("fs", m["disk"])

    def test_every_system_relayed_every_message(self):
        sc = self.report["scenarios"]["1k-s20"]
        self.assertEqual((sc["messages"], sc["payload_bytes"], sc["sessions"],
                          sc["messages_per_connection"]), (200, 1024, 20, 1))
        for system in SYSTEMS + SINK_VARIANTS:
            [run] = sc["runs"][system]
            self.assertEqual(run["delivered"], 200, system)
            self.assertGreater(run["ingest_s"], 0, system)
            self.assertGreaterEqual(run["e2e_s"], run["ingest_s"], system)
            self.assertGreater(run["source_cpu_s_per_1000"], 0, system)
            self.assertTrue(0 <= run["machine_idle"] <= 1, system)
        for system in ("postfix", "sluice"):
            [run] = sc["runs"][system]
            self.assertGreater(run["peak_rss_kib"], 1024, system)
            self.assertGreater(run["peak_pss_kib"], 0, system)
            self.assertGreaterEqual(run["cpu_s_per_1000"], 0, system)
        s = sc["summary"]
        for key in ("ceiling_e2e_s", "postfix_ingest_s", "postfix_e2e_s", "sluice_ingest_s",
                    "sluice_e2e_s", "sluice_vs_postfix_ingest", "sluice_vs_postfix_e2e",
                    "sluice_vs_ceiling_e2e", "sluice_cpu_s_per_1000", "postfix_cpu_s_per_1000"):
            self.assertIsNotNone(s.get(key), key)
        for system in SINK_VARIANTS:
            self.assertAlmostEqual(s[f"{system}_vs_sluice_e2e"],
                                   s[f"{system}_e2e_s"] / s["sluice_e2e_s"], places=3)
        self.assertAlmostEqual(s["sluice_vs_postfix_e2e"],
                               s["sluice_e2e_s"] / s["postfix_e2e_s"], places=3)

    def test_load_tool_experiment(self):
        for name, per_conn in (("1k-s20", 1), ("1k-s20-reuse", 100)):
            t = self.report["tool"][name]
            self.assertEqual(t["messages_per_connection"], per_conn)
            for system in SYSTEMS:
                [run] = t["runs"][system]
                self.assertGreater(run["accepted"], 0, (name, system))
                self.assertEqual(run["delivered"], run["accepted"], (name, system))
                self.assertGreaterEqual(run["ingest_msgs_per_s"], run["e2e_msgs_per_s"] * 0.5)
            s = t["summary"]
            self.assertAlmostEqual(s["sluice_vs_ceiling_e2e"],
                                   s["sluice_e2e_msgs_per_s"] / s["ceiling_e2e_msgs_per_s"],
                                   places=2)

    def test_latency_experiment(self):
        for system in ("postfix", "sluice"):
            r = self.report["latency"][system]
            self.assertGreater(r["peak"]["accepted"], 0, system)
            # half of the peak (the report rounds the peak to 0.1 msg/s)
            self.assertAlmostEqual(r["half_offered_per_s"], r["peak"]["msgs_per_s"] / 2, delta=1)
            h = r["half"]
            self.assertGreater(h["accepted"], 0, system)
            self.assertTrue(0 < h["p50_ms"] <= h["p90_ms"] <= h["p99_ms"] <= h["p999_ms"]
                            <= h["max_ms"], (system, h))

    def test_idle_experiment(self):
        i = self.report["idle"]
        self.assertEqual(i["idle_connections"], 300)
        self.assertEqual(i["idle_still_open"], 300)
        self.assertGreater(i["rss_idle_kib"], 0)
        self.assertEqual(len(i["busy_msgs_per_s_with_idle"]), 1)
        self.assertEqual(len(i["busy_msgs_per_s_without"]), 1)
        self.assertGreater(i["busy_msgs_per_s_without"][0], 0)
        self.assertGreater(i["with_idle_vs_without"], 0)

    def test_markdown_has_every_table(self):
        md = (self.out / "compare.md").read_text()
        self.assertIn("| scenario | msgs | ceiling e2e | Postfix ingest |", md)
        self.assertIn("| 1k-s20 | 200 |", md)
        self.assertIn("| 1k-s20 | sluice |", md)
        self.assertIn("## The same relay with sluice-blast as the load tool", md)
        self.assertIn("## Acceptance latency at half of the peak rate", md)
        self.assertIn("| sluice |", md)
        self.assertIn("## Idle connections (Sluice)", md)
        self.assertIn("## Servers that write their replies differently (sluice-segsink)", md)
        self.assertIn("| 1k-s20 | sluice | segments |", md)
        self.assertIn("| 1k-s20 | sluice | lockstep |", md)


if __name__ == "__main__":
    unittest.main()
