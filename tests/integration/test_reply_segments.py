"""Delivery pace to servers that write their replies differently (sink.py):

- batching: the replies to a pipelined group in one write (Postfix, smtp-sink);
- per segment: each reply its own send() with Nagle on (RFC 896), so the second
  reply of a group leaves only once the first is acknowledged;
- lock-step: no PIPELINING advertised; each reply its own send().

Each sink gets N messages over one connection at a time (max_connections 1),
several messages per connection. The per-segment and lock-step servers must be
served at the pace of the batching one. Before the fix the client's delayed ACK
(Linux: 40 ms at least once the client has sent) held every second reply of a
group: one 40 ms stall per message, ~9 s for 200 messages against well under a
second for the batching sink.

The pace is measured on delivery alone: the sink holds its reply to the first
message (sink.hold) until all N are queued, so the injection rate does not
bound it. Two counts decide, both robust on a loaded machine: how many of the
intervals between consecutive deliveries reach 35 ms (every one of them with
the stall, next to none without), and the elapsed time against the batching
sink's, measured in the same test, with a generous factor.
"""

import time

import harness
from harness import DaemonTestCase, RawSmtp, make_message, wait_until

N = 200
STALL_S = 0.035  # an interval this long is a delayed-ACK stall (40 ms and more)

FAST = {
    "enabled": True,
    "retry_initial": 60,
    "retry_max": 120,
    "destination_backoff": 1,
    "idle_timeout": 10,
    "connect_timeout": 2,
    "command_timeout": 10,
    "data_timeout": 20,  # the first message's reply is held until all N are queued
}

SINKS = {
    "batching": {"batch_replies": True},
    "segments": {},
    "lockstep": {"pipelining": False},
}


class ReplySegmentsTest(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.sinks = {name: self.sink(**kw) for name, kw in SINKS.items()}
        routes = [{"name": name, "domains": [f"{name}.test"], "type": "smarthost",
                   "host": harness.LOOPBACK, "port": s.port, "max_connections": 1,
                   "tls": "disabled"}
                  for name, s in self.sinks.items()]
        self.d = self.daemon(delivery=FAST, routes=routes)

    def deliver(self, name):
        """Queues N messages for the sink `name` while it holds its first reply, releases it;
        returns (seconds from the release to the last delivery, intervals ≥ STALL_S)."""
        sink = self.sinks[name]
        sink.hold()
        tokens = [f"{name}-{i}" for i in range(N)]
        with RawSmtp.connect(self.d.port, timeout=30) as c:
            c.greet()
            for token in tokens:
                code, text = harness.send_message(c, "from@client.test", [f"to@{name}.test"],
                                                  make_message(token))
                self.assertEqual(code, 250, text)
            c.expect(221, "QUIT")
        wait_until(lambda: sink.payloads_count() >= 1, 10, f"{name}: the first message")
        start = time.monotonic()
        sink.release()
        wait_until(lambda: sink.delivered_count() >= N, 60, f"{name}: {N} deliveries")
        deliveries = sink.deliveries
        self.assertEqual(sorted(d.token for d in deliveries), sorted(tokens), name)
        self.assertEqual(sink.protocol_errors, [], name)
        times = sorted(d.time for d in deliveries)
        stalls = sum(1 for a, b in zip(times, times[1:]) if b - a >= STALL_S)
        return max(0.0, times[-1] - start), stalls, sink

    def test_per_segment_and_lock_step_servers_are_served_at_full_speed(self):
        batching, batching_stalls, _ = self.deliver("batching")
        segments, segments_stalls, seg_sink = self.deliver("segments")
        lockstep, lockstep_stalls, lock_sink = self.deliver("lockstep")
        figures = (f"{N} messages: batching {batching:.2f} s ({batching_stalls} stalls), "
                   f"per segment {segments:.2f} s ({segments_stalls} stalls), "
                   f"lock-step {lockstep:.2f} s ({lockstep_stalls} stalls)")
        print(figures)
        # The client did pipeline into the per-segment sink (the next envelope behind the dot)
        # and did not into the one without PIPELINING.
        self.assertGreater(seg_sink.sent_ahead, N // 2, figures)
        self.assertEqual(lock_sink.sent_ahead, 0, figures)
        # With the stall every interval is one (~N); a busy machine makes a few, not a quarter.
        self.assertLess(segments_stalls, N // 4, figures)
        self.assertLess(lockstep_stalls, N // 4, figures)
        # The stall costs N × 40 ms = 8 s; the batching sink takes well under a second.
        self.assertLess(segments, 3 * batching + 1.0, figures)
        # Lock-step needs a round trip per command (four per message instead of one).
        self.assertLess(lockstep, 5 * batching + 1.5, figures)


if __name__ == "__main__":
    import unittest
    unittest.main()
