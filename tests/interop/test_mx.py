"""MX routing against a private dnsmasq: Sluice resolves through
[delivery] dns_servers = ["127.0.0.1:DNSPORT"] and a route type = "mx" with
port = SINKPORT, so every MX host is reached on SINKPORT. The MX hosts are
smtp-sinks on distinct loopback addresses (127.0.0.11, .12, ...: all of
127/8 is loopback on Linux), so the sink that holds a message says which MX
got it. Bounces go to the sender's domain, client.test, through a maildir
route.

    cd tests/interop && python3 -m unittest -v test_mx
"""

import unittest

from interop import (Dnsmasq, Dsn, InteropTestCase, SmtpSink, check_relayed, free_port,
                     make_message, smtp_addr, wait_maildir, wait_until)
from sink import Sink

# name → the address of its A record.
HOSTS = {
    "mx-a.pref.test": "127.0.0.11",
    "mx-b.pref.test": "127.0.0.12",
    "mx-a.fallback.test": "127.0.0.13",  # nothing listens: connection refused
    "mx-b.fallback.test": "127.0.0.14",
    "implicit.test": "127.0.0.15",       # A record, no MX: implicit MX (RFC 5321 §5.1)
    "mx.shared.test": "127.0.0.16",
}
# (domain, exchange, preference). Higher preferences are listed first so
# that the order of the answer is not what makes the test pass.
MX = [
    ("pref.test", "mx-b.pref.test", 20),
    ("pref.test", "mx-a.pref.test", 10),
    ("fallback.test", "mx-b.fallback.test", 20),
    ("fallback.test", "mx-a.fallback.test", 10),
    ("nullmx.test", ".", 0),                     # RFC 7505 null MX
    ("one.test", "mx.shared.test", 10),
    ("two.test", "mx.shared.test", 10),
]
SINK_ADDRESSES = ["127.0.0.11", "127.0.0.12", "127.0.0.14", "127.0.0.15", "127.0.0.16"]


class MxTest(InteropTestCase):

    def setUp(self):
        super().setUp()
        records = [f"--mx-host={d},{x},{p}" for d, x, p in MX]
        records += [f"--host-record={h},{a},300" for h, a in HOSTS.items()]
        self.dns = Dnsmasq(self, records, probe_name="pref.test")
        # One port on five addresses: a port free on 127.0.0.1 a moment ago may be taken on
        # another of them by then (seen once on CI: "bind 127.0.0.12 port ...: Address already
        # in use"). Take another port then, a bounded number of times.
        for attempt in range(5):
            self.sink_port = free_port()
            self.sinks = {}
            try:
                for a in SINK_ADDRESSES:
                    self.sinks[a] = SmtpSink(self, f"sink-{a}-{attempt}", address=a,
                                             port=self.sink_port)
                break
            except AssertionError as e:
                for sink in self.sinks.values():
                    sink.proc.stop()
                if "Address already in use" not in str(e) or attempt == 4:
                    raise
        self.bounces = self.workdir / "bounces"
        self.sluice = self.daemon(
            delivery={"enabled": True, "retry_initial": 1, "idle_timeout": 1,
                      "dns_servers": [f"127.0.0.1:{self.dns.port}"]},
            routes=[
                {"name": "bounces", "domains": ["client.test"], "type": "maildir",
                 "path": str(self.bounces)},
                {"name": "mx", "domains": ["*"], "type": "mx", "port": self.sink_port},
            ])

    def send(self, recipients, token):
        sent = make_message(token)
        self.swaks(self.sluice.port, "alice@client.test", recipients, sent)
        return sent

    def counts(self):
        return {a: len(s.dumps()) for a, s in self.sinks.items()}

    def expect_at(self, address, n, sent=None):
        """Exactly n messages at the sink on `address` and none anywhere else."""
        self.sinks[address].wait_count(n)
        self.wait_queue_empty(self.sluice)
        expected = {a: 0 for a in SINK_ADDRESSES}
        expected[address] = n
        self.assertEqual(self.counts(), expected)
        msgs = self.sinks[address].messages()
        if sent is not None:
            for m in msgs:
                check_relayed(self, m.message, sent)
        return msgs

    def test_lowest_preference_gets_the_mail(self):
        sent = self.send(["bob@pref.test"], "pref")
        (m,) = self.expect_at("127.0.0.11", 1, sent)
        self.assertEqual([smtp_addr(r) for r in m.recipients], ["bob@pref.test"])
        self.assertIn("relay=mx-a.pref.test[127.0.0.11]", self.sluice.log_text())

    def test_next_mx_when_the_first_refuses_connections(self):
        sent = self.send(["bob@fallback.test"], "fallback")
        self.expect_at("127.0.0.14", 1, sent)
        self.assertIn(f"relay=mx-b.fallback.test[127.0.0.14]:{self.sink_port}",
                      self.sluice.log_text())

    def test_implicit_mx(self):
        sent = self.send(["bob@implicit.test"], "implicit")
        self.expect_at("127.0.0.15", 1, sent)

    def test_domains_sharing_mx_hosts(self):
        # Sluice may carry both in one transaction (domains with the same MX
        # hosts share a destination) or in two; either way both arrive, once.
        sent = self.send(["bob@one.test", "carol@two.test"], "shared")
        self.wait_log(self.sluice, "delivered id=", count=2)
        self.wait_queue_empty(self.sluice)
        msgs = self.sinks["127.0.0.16"].messages()
        got = sorted(smtp_addr(r) for m in msgs for r in m.recipients)
        self.assertEqual(got, ["bob@one.test", "carol@two.test"])
        for m in msgs:
            check_relayed(self, m.message, sent)
        others = {a: n for a, n in self.counts().items() if a != "127.0.0.16"}
        self.assertEqual(sum(others.values()), 0, others)

    def bounce_for(self, rcpt):
        (raw,) = wait_maildir(self.bounces, 1)
        self.wait_queue_empty(self.sluice)
        self.assertEqual(sum(self.counts().values()), 0, "nothing reaches any MX")
        dsn = Dsn(raw)
        self.assertEqual(len(dsn.recipients), 1, dsn.recipients)
        r = dsn.recipient(rcpt)
        self.assertEqual(r["Action"], "failed")
        return r

    def test_null_mx_bounces(self):
        self.send(["bob@nullmx.test"], "nullmx")
        r = self.bounce_for("bob@nullmx.test")
        self.assertEqual(r["Status"], "5.1.10")
        self.assertIn("null MX", r["Diagnostic-Code"])

    def test_nxdomain_bounces(self):
        self.send(["bob@nosuch.test"], "nxdomain")
        r = self.bounce_for("bob@nosuch.test")
        self.assertEqual(r["Status"], "5.1.2")
        self.assertIn("nosuch.test", r["Diagnostic-Code"])


class MxSessionLimitTest(InteropTestCase):
    """Postfix's smtp_mx_session_limit: a host that answers but refuses (421
    at the greeting) is followed by the next MX host, up to
    delivery.mx_session_limit hosts that answered."""

    def setUp(self):
        super().setUp()
        self.dns = Dnsmasq(self, ["--mx-host=busy.test,mx-a.busy.test,10",
                                  "--mx-host=busy.test,mx-b.busy.test,20",
                                  "--host-record=mx-a.busy.test,127.0.0.21,300",
                                  "--host-record=mx-b.busy.test,127.0.0.22,300"],
                           probe_name="busy.test")
        self.busy = Sink(host="127.0.0.21", greeting="421 4.3.2 mx-a is busy").start()
        self.addCleanup(self.busy.stop)
        self.good = Sink(host="127.0.0.22", port=self.busy.port).start()
        self.addCleanup(self.good.stop)

    def relay(self, session_limit):
        return self.daemon(
            subdir=f"limit{session_limit}",
            delivery={"enabled": True, "retry_initial": 60, "idle_timeout": 1,
                      "mx_session_limit": session_limit,
                      "dns_servers": [f"127.0.0.1:{self.dns.port}"]},
            routes=[{"name": "mx", "domains": ["*"], "type": "mx", "port": self.busy.port}])

    def test_next_host_after_a_refusing_greeting(self):
        d = self.relay(2)
        self.swaks(d.port, "alice@client.test", ["bob@busy.test"], make_message("busy-2"))
        wait_until(lambda: self.good.delivered_count() == 1, 30, "delivery by mx-b")
        self.wait_queue_empty(d)
        self.assertEqual(self.busy.refused_greetings, 1)
        self.assertEqual(self.good.deliveries[0].token, "busy-2")

    def test_session_limit_one_stops_at_the_first_host(self):
        d = self.relay(1)
        self.swaks(d.port, "alice@client.test", ["bob@busy.test"], make_message("busy-1"))
        self.wait_log(d, "deferred id=")
        self.assertIn("421 4.3.2 mx-a is busy", d.log_text())
        self.assertEqual((self.busy.refused_greetings, self.good.delivered_count()), (1, 0))
        self.assertEqual(d.queue_count(), 1)


if __name__ == "__main__":
    unittest.main()
