"""Smoke test of bench/abuse/run: a --quick run (100 connections, 5 MB bodies) whose JSON
report is checked for shape, for every normal-client message accepted, and for the memory
bounds the report states. Nothing about speed is asserted."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
MIB = 1 << 20


class AbuseSmokeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.out = Path(tempfile.mkdtemp(prefix="abuse-smoke."))
        build = os.environ.get("SLUICE_BUILD", str(HERE.parents[1] / "build"))
        cls.proc = subprocess.run(
            [sys.executable, str(HERE / "run"), "--quick", "--build", build,
             "--out-dir", str(cls.out)],
            capture_output=True, text=True, timeout=280)
        path = cls.out / "abuse.json"
        cls.report = json.loads(path.read_text()) if path.exists() else None

    def setUp(self):
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-4000:])
        self.assertIsNotNone(self.report, "no abuse.json")

    def test_every_attack_is_reported(self):
        for name in ("ehlo", "rcpt", "data"):
            r = self.report[name]
            for key in ("fresh_rss", "idle_rss", "peak_rss", "body_memory_held", "normal"):
                self.assertIn(key, r, name)
            self.assertGreater(r["peak_rss"], 0)
            self.assertEqual(len(r["normal"]), 5, name)
        self.assertTrue((self.out / "abuse.md").exists())

    def test_normal_client_is_served_in_every_attack(self):
        for name in ("ehlo", "rcpt", "data"):
            codes = [x["code"] for x in self.report[name]["normal"]]
            self.assertEqual(codes, [250] * 5, name)

    def test_memory_stays_within_the_stated_bounds(self):
        r = self.report
        budget = r["max_body_memory"]
        self.assertLessEqual(r["ehlo"]["peak_rss"] - r["ehlo"]["idle_rss"], 64 * MIB)
        self.assertLessEqual(r["rcpt"]["peak_rss"] - r["rcpt"]["idle_rss"],
                             64 * MIB + r["rcpt"]["body_memory_held"])
        self.assertLessEqual(r["data"]["peak_rss"] - r["data"]["idle_rss"], budget + 64 * MIB)
        # Four client addresses: at most four shares of the budget are held.
        self.assertLessEqual(r["data"]["body_memory_held"],
                             4 * r["max_body_memory_per_client"])


if __name__ == "__main__":
    unittest.main()
