"""The queue at scale, in small (docs/architecture.md "The active window"): delivery holds a
bounded window of the queue in memory and reads the rest from the spool's schedule index; the
queue's size comes from counters kept in the spool; a restart reads no envelope before it
listens. The same behaviour at 10 million messages is measured by bench/queue/run.

Every test here makes the window much smaller than the queue, so the index, the cursor and the
counters carry the delivery, and checks that every acknowledged message arrives exactly once.
"""

import json
import unittest

import harness
from harness import (AdminDaemon, DaemonTestCase, RawSmtp, make_message, queued_id,
                     send_message, wait_until)
from sink import Sink

WINDOW = 10  # delivery.max_active_messages: 5 per shard


class QueueTest(DaemonTestCase):

    def setUp(self):
        super().setUp()
        harness.require_sluicectl()
        self.sink = Sink(port=harness.free_port())
        self.addCleanup(self.sink.stop)

    def daemon(self, **delivery):
        wd = self.workdir / f"d{len(self.daemons)}"
        wd.mkdir()
        settings = {"enabled": True, "retry_initial": 1, "retry_max": 2,
                    "destination_backoff": 1, "connect_timeout": 2, "idle_timeout": 1,
                    "max_active_messages": WINDOW}
        settings.update(delivery)
        d = AdminDaemon(wd, delivery=settings,
                        routes=[{"name": "sink", "domains": ["*"], "type": "smarthost",
                                 "host": harness.LOOPBACK, "port": self.sink.port}])
        self.daemons.append(d)
        d.start()
        return d

    def send_many(self, d, count, prefix, domains=("dest.test",), per_connection=50):
        tokens = []
        while len(tokens) < count:
            with RawSmtp.connect(d.port) as c:
                c.greet()
                c.expect(250, "EHLO queue.test")
                for _ in range(min(per_connection, count - len(tokens))):
                    token = f"{prefix}-{len(tokens)}"
                    domain = domains[len(tokens) % len(domains)]
                    r = send_message(c, "a@client.test", [f"r{len(tokens)}@{domain}"],
                                     make_message(token))
                    self.assertEqual(r[0], 250, r)
                    queued_id(r[1])
                    tokens.append(token)
                c.expect(221, "QUIT")
        return tokens

    def assert_each_once(self, tokens, timeout=120):
        wait_until(lambda: sum(self.sink.tokens()[t] > 0 for t in tokens) == len(tokens),
                   timeout, f"{len(tokens)} messages at the sink", interval=0.2)
        got = self.sink.tokens()
        twice = [t for t in tokens if got[t] != 1]
        self.assertEqual(twice, [], "delivered more than once")

    def queue_gauges(self, d):
        s = d.scrape()
        return {state: s.sum("sluice_queue_messages", state=state)
                for state in ("scheduled", "deferred", "in_flight")}

    def test_a_window_far_smaller_than_the_queue_delivers_every_message_once(self):
        # The destination is down: 300 messages queue up, each tried once and deferred.
        d = self.daemon()
        tokens = self.send_many(d, 300, "w", domains=("dest.test", "other.test"))
        s = d.scrape()
        self.assertLessEqual(s.sum("sluice_delivery_active_messages"), WINDOW)
        gauges = self.queue_gauges(d)
        self.assertEqual(sum(gauges.values()), 300, gauges)
        # sluicectl answers from the counters, exactly, while sluiced runs.
        summary = json.loads(d.sluicectl("queue", "summary", "--json").stdout)
        self.assertEqual(summary["messages"], 300)
        self.assertTrue(summary["indexed"])
        self.assertEqual({x["domain"]: x["messages"] for x in summary["domains"]},
                         {"dest.test": 150, "other.test": 150})
        self.assertEqual(d.queue_count(), 300)
        wait_until(lambda: self.queue_gauges(d)["deferred"] >= 20, 30, "deferrals")
        self.sink.start()
        self.assert_each_once(tokens)
        wait_until(lambda: d.queue_count() == 0, 30, "the counters at zero")
        self.assertEqual(sum(self.queue_gauges(d).values()), 0)
        self.assertEqual(len(d.export_spool()), 0)
        self.assertEqual(d.scrape().sum("sluice_bugs_total"), 0)

    def test_mail_arriving_while_the_window_is_full_waits_its_turn(self):
        # Up: new mail flows through a window of 10 while more keeps arriving.
        self.sink.start()
        d = self.daemon()
        tokens = self.send_many(d, 400, "f", per_connection=100)
        self.assert_each_once(tokens)
        wait_until(lambda: d.queue_count() == 0, 30, "the counters at zero")
        self.assertEqual(d.scrape().sum("sluice_bugs_total"), 0)

    def test_after_kill_the_queue_is_known_at_once_and_delivered_once(self):
        # Delivery off while the mail comes in: 200 messages wait for their first attempt.
        d = self.daemon(enabled=False)
        tokens = self.send_many(d, 200, "k")
        d.kill()
        d.delivery["enabled"] = True
        d.write_config()
        d.start()
        # The counters are in the spool: exact right after the start, before any envelope is
        # read (and with the destination down, nothing leaves).
        gauges = self.queue_gauges(d)
        self.assertEqual(sum(gauges.values()), 200, gauges)
        self.assertEqual(d.queue_count(), 200)
        self.sink.start()
        self.assert_each_once(tokens)
        wait_until(lambda: d.queue_count() == 0, 30, "the counters at zero")
        self.assertEqual(d.scrape().sum("sluice_bugs_total"), 0)


if __name__ == "__main__":
    unittest.main()
