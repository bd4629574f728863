"""Smoke test of bench/queue/run: a --quick run (20,000 messages) whose JSON report is checked
for shape and for what the run promises at any size: the window stays within its bound, the
queue's size is known right after a SIGKILL, every message drains. Nothing about speed is
asserted."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
N = 20000


class QueueSmokeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.out = Path(tempfile.mkdtemp(prefix="queue-smoke."))
        build = os.environ.get("SLUICE_BUILD", str(HERE.parents[1] / "build"))
        cls.proc = subprocess.run(
            [sys.executable, str(HERE / "run"), "--quick", "--build", build,
             "--out-dir", str(cls.out)],
            capture_output=True, text=True, timeout=280)
        path = cls.out / "queue.json"
        cls.report = json.loads(path.read_text()) if path.exists() else None

    def setUp(self):
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-4000:])
        self.assertIsNotNone(self.report, "no queue.json")

    def test_the_deferred_backlog_is_bounded_and_known_after_a_kill(self):
        (r,) = self.report["deferred"]
        self.assertEqual(r["messages"], N)
        self.assertLessEqual(r["active_messages"], 20000)
        for key in ("rss_peak_mib", "rss_end_mib", "spool_bytes", "restart_to_greeting_s",
                    "rss_after_restart_mib", "summary_s", "scrape_s"):
            self.assertGreater(r[key], 0, key)
        self.assertTrue((self.out / "queue.md").exists())

    def test_the_backlog_drains_after_a_kill(self):
        (r,) = self.report["drain"]
        self.assertEqual(r["messages"], N)
        self.assertGreater(r["drain_msgs_per_s"], 0)
        self.assertGreater(r["restart_to_first_delivery_s"], 0)
        self.assertGreater(self.report["empty"]["msgs_per_s"], 0)


if __name__ == "__main__":
    unittest.main()
