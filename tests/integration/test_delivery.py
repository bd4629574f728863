"""Delivery end to end: a real sluiced relays to a scriptable sink (sink.py)
over a smarthost or LMTP route, or writes a maildir. What the sink receives
is what the spool held, byte for byte; retries, bounces (RFC 3464 DSNs),
expiry, destination back-off, connection limits, crashes and shutdowns are
checked by what arrives where, by the spool draining, and by the outcomes
sluiced records in its JSON event log.

Timings are shrunk (retry_initial 1 s, retry_max 2 s, destination_backoff
1 s) so that every scenario takes seconds; every wait polls with a deadline.
"""

import collections
import email
import email.policy
import re
import smtplib
import threading
import time
from pathlib import Path

import harness
from harness import (SENDER_DOMAIN, DaemonTestCase, RawSmtp, make_message, queued_id,
                     split_received, wait_until)

CRLF = b"\r\n"

FAST = {
    "enabled": True,
    "retry_initial": 1,
    "retry_max": 2,
    "destination_backoff": 1,
    "idle_timeout": 1,
    "connect_timeout": 2,
    "command_timeout": 10,
    "data_timeout": 10,
}

# The event log's events for a recipient's delivery attempt or its end.
OUTCOMES = ("delivered", "deferred", "bounced", "expired")


class DeliveryTestCase(DaemonTestCase):

    def setUp(self):
        super().setUp()
        harness.require_sluicectl()
        self.maildir = self.workdir / "senders-maildir"

    # -- set-up helpers -------------------------------------------------------

    def relay(self, sink_port, **kw):
        """harness relay() with the FAST timings and the JSON event log."""
        return super().relay(sink_port, timings=FAST, event_log=True, **kw)

    # -- sending --------------------------------------------------------------

    def send_many(self, port, messages, connections, sender="sender@client.test",
                  recipient="rcpt@dest.test"):
        """Sends (token, bytes) pairs over `connections` parallel sessions;
        returns {token: queued id}. Every message must get 250."""
        ids = {}
        errors = []
        lock = threading.Lock()
        shares = [messages[i::connections] for i in range(connections)]

        def worker(share):
            try:
                with RawSmtp.connect(port, timeout=30) as c:
                    c.greet()
                    for token, msg in share:
                        code, text = harness.send_message(c, sender, [recipient], msg)
                        if code != 250:
                            raise AssertionError(f"{token}: {code} {text}")
                        with lock:
                            ids[token] = queued_id(text)
                    c.expect(221, "QUIT")
            except Exception as e:  # reported below, in the test's thread
                with lock:
                    errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in shares]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertFalse([t for t in threads if t.is_alive()], "sender threads hung")
        self.assertEqual(errors, [])
        self.assertEqual(len(ids), len(messages))
        return ids

    # -- observing ------------------------------------------------------------

    def wait_spool_empty(self, d, timeout=20):
        wait_until(lambda: d.queue_count() == 0, timeout, "an empty spool",
                   interval=0.1)

    def outcomes(self, d, kind=None):
        """The delivered, deferred, bounced and expired events so far, in order
        (of one kind only if given)."""
        kinds = (kind,) if kind else OUTCOMES
        return [e for e in d.events() if e["event"] in kinds]

    def final_events(self, d):
        """Stops the daemon (it must exit 0) and returns its whole event log:
        the writer writes everything queued before it exits, so what a test
        counts here is complete."""
        self.assertEqual(d.stop(), 0)
        return d.events()

    def maildir_files(self, root=None):
        new = Path(root or self.maildir) / "new"
        if not new.is_dir():
            return []
        return sorted(new.iterdir())

    def dsns(self):
        """[(raw bytes, parsed message)] for every file in the senders' maildir."""
        out = []
        for p in self.maildir_files():
            raw = p.read_bytes()
            out.append((raw, email.message_from_bytes(raw, policy=email.policy.compat32)))
        return out

    def assert_tokens_once(self, sink, tokens):
        got = sink.tokens()
        missing = [t for t in tokens if got[t] == 0]
        extra = {t: n for t, n in got.items() if n != 1 or t not in tokens}
        self.assertEqual(missing, [], "tokens never delivered")
        self.assertEqual(extra, {}, "tokens delivered more than once, or unknown")


def parse_dsn(test, msg):
    """Checks the RFC 3464 structure; returns (per-message fields,
    [per-recipient fields], returned original part)."""
    test.assertEqual(msg.get_content_type(), "multipart/report")
    test.assertEqual(msg.get_param("report-type"), "delivery-status")
    parts = msg.get_payload()
    test.assertGreaterEqual(len(parts), 3, [p.get_content_type() for p in parts])
    test.assertEqual(parts[0].get_content_type(), "text/plain")
    test.assertEqual(parts[1].get_content_type(), "message/delivery-status")
    blocks = parts[1].get_payload()
    test.assertGreaterEqual(len(blocks), 2, "per-message block and a recipient block")
    test.assertIn(parts[2].get_content_type(), ("message/rfc822", "text/rfc822-headers"))
    return blocks[0], blocks[1:], parts[2]


def returned_headers(part):
    """The original's header section, from a message/rfc822 or text/rfc822-headers part."""
    if part.get_content_type() == "message/rfc822":
        return part.get_payload()[0]
    return email.message_from_string(part.get_payload())


class DeliveryTest(DeliveryTestCase):

    # 1 ---------------------------------------------------------------------
    def test_relay_one_message_byte_exact(self):
        sink = self.sink()
        d = self.relay(sink.port)
        sink.hold()  # keeps the message in the spool until we have compared
        msg = make_message("one-1", body_lines=[
            "Hello,", ".starts with a dot", "..two dots", ".", " leading space", "\ttab",
            "8bit: caf\u00e9", "", "end"])
        with smtplib.SMTP(harness.LOOPBACK, d.port, timeout=15) as s:
            self.assertEqual(s.sendmail("alice@client.test", ["bob@dest.test"], msg,
                                        mail_options=["BODY=8BITMIME"]), {})
        wait_until(lambda: sink.payloads_count() >= 1, 15, "the message at the sink")
        spool = d.export_spool()
        self.assertEqual(len(spool), 1, spool)
        stored = next(iter(spool.values()))
        self.assertEqual(stored.message, msg)
        self.assertEqual(sink.payloads, [stored.body])  # byte-exact, Received header included
        sink.release()
        wait_until(lambda: sink.delivered_count() >= 1, 15, "the 250 at the sink")
        self.wait_spool_empty(d)
        [got] = sink.deliveries
        self.assertEqual(got.sender, "alice@client.test")
        self.assertEqual(got.recipients, ["bob@dest.test"])
        received, rest = split_received(got.data)
        self.assertEqual(rest, msg)
        self.assertIn(b"for <bob@dest.test>", received)
        self.assertIn("BODY=8BITMIME", got.mail_params)
        self.assertIn(f"SIZE={len(stored.body)}", got.mail_params)
        self.assertEqual(sink.protocol_errors, [])
        self.assertEqual(self.maildir_files(), [])  # no DSN
        # idle_timeout = 1: the pooled connection is closed soon after
        wait_until(lambda: sink.sessions_current == 0, 5, "the idle connection closed")
        events = [e for e in self.final_events(d) if e["event"] in OUTCOMES]
        self.assertEqual([(e["event"], e["id"], e["recipient"]) for e in events],
                         [("delivered", stored.id, "bob@dest.test")], events)
        self.assertEqual(events[0]["remote"], f"127.0.0.1[127.0.0.1]:{sink.port}")
        self.assertEqual(events[0]["code"], 250)

    def test_relay_with_swaks(self):
        sink = self.sink()
        d = self.relay(sink.port)
        r = harness.subprocess.run(
            ["swaks", "--server", f"{harness.LOOPBACK}:{d.port}", "--helo", "swaks.test",
             "--from", "sw@client.test", "--to", "rc@dest.test",
             "--header", "X-Test-Token: swaks-1", "--body", "swaks body\n.dot line\nlast"],
            capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        wait_until(lambda: sink.delivered_count() >= 1, 15, "the message at the sink")
        self.wait_spool_empty(d)
        [got] = sink.deliveries
        self.assertEqual((got.sender, got.recipients), ("sw@client.test", ["rc@dest.test"]))
        received, rest = split_received(got.data)
        self.assertIn(b"X-Test-Token: swaks-1\r\n", rest)
        self.assertIn(b"\r\n\r\nswaks body\r\n.dot line\r\nlast\r\n", rest)

    # 2 ---------------------------------------------------------------------
    def test_two_hundred_messages_exactly_once(self):
        sink = self.sink()
        d = self.relay(sink.port)
        messages = [(f"bulk-{i:03d}", make_message(f"bulk-{i:03d}")) for i in range(200)]
        ids = self.send_many(d.port, messages, connections=5)
        wait_until(lambda: len(sink.tokens()) >= 200, 60, "200 distinct messages at the sink")
        self.wait_spool_empty(d)
        self.assert_tokens_once(sink, [t for t, _ in messages])
        self.assertEqual(sink.delivered_count(), 200)
        by_token = {dl.token: dl for dl in sink.deliveries}
        for token, msg in messages:
            self.assertEqual(split_received(by_token[token].data)[1], msg, token)
        self.assertEqual(sink.protocol_errors, [])
        events = self.final_events(d)
        delivered = harness.find_events(events, "delivered")
        self.assertEqual(len(delivered), 200)
        self.assertEqual({e["id"] for e in delivered}, set(ids.values()))
        self.assertEqual(harness.find_events(events, "deferred"), [])

    # 3 ---------------------------------------------------------------------
    def test_deferred_twice_then_delivered_once(self):
        sink = self.sink(rules={"flaky@dest.test": ("451 4.2.0 try later", 2)})
        d = self.relay(sink.port)
        t0 = time.monotonic()
        qid = self.send(d.port, "alice@" + SENDER_DOMAIN, ["flaky@dest.test"],
                        make_message("flaky-1"))
        wait_until(lambda: sink.delivered_count() >= 1, 20, "delivery after two deferrals")
        elapsed = time.monotonic() - t0
        self.wait_spool_empty(d)
        self.assertEqual(sink.tokens(), collections.Counter({"flaky-1": 1}))
        self.assertEqual(sink.attempts("flaky@dest.test"), 3)
        # retry_initial 1 s then 2 s (±10%): not immediately, not after ages
        self.assertGreater(elapsed, 2.5, "retries came too soon")
        self.assertLess(elapsed, 12)
        self.assertEqual(self.dsns(), [])  # a deferral is not a bounce
        events = self.final_events(d)
        deferred = harness.find_events(events, "deferred")
        self.assertEqual([(e["id"], e["recipient"], e["code"], e["reply"]) for e in deferred],
                         [(qid, "flaky@dest.test", 451, "451 4.2.0 try later")] * 2)
        self.assertEqual([e["attempts"] for e in deferred], [1, 2])
        [e] = harness.find_events(events, "delivered")
        self.assertEqual((e["id"], e["recipient"], e["attempts"]), (qid, "flaky@dest.test", 3))

    def test_permanent_failure_bounces_with_dsn(self):
        sink = self.sink(rules={"bad-*@": "550 5.1.1 no such user here"})
        d = self.relay(sink.port)
        msg = make_message("bounce-1", subject="the original subject")
        qid = self.send(d.port, "alice@" + SENDER_DOMAIN, ["bad-1@dest.test"], msg)
        wait_until(lambda: self.maildir_files(), 20, "a DSN in the sender's maildir")
        self.wait_spool_empty(d)
        self.assertEqual(sink.deliveries, [])
        [(raw, dsn)] = self.dsns()
        # (Return-Path: <> is checked by test_dsn_in_maildir_has_null_return_path)
        self.assertRegex(raw[:200], rb"^(Return-Path: <>\r\n)?Delivered-To: alice@sender\.test\r\n")
        self.assertEqual(dsn["To"].strip("<> "), "alice@sender.test")
        per_msg, rcpts, returned = parse_dsn(self, dsn)
        self.assertEqual(per_msg["Reporting-MTA"], "dns; " + harness.HOSTNAME)
        [r] = rcpts
        self.assertEqual(r["Final-Recipient"], "rfc822; bad-1@dest.test")
        self.assertEqual(r["Action"], "failed")
        self.assertEqual(r["Status"], "5.1.1")
        self.assertIn("no such user here", r["Diagnostic-Code"])
        self.assertTrue(r["Diagnostic-Code"].startswith("smtp;"), r["Diagnostic-Code"])
        self.assertIn("127.0.0.1", r["Remote-MTA"])
        orig = returned_headers(returned)
        self.assertEqual(orig["X-Test-Token"], "bounce-1")
        self.assertEqual(orig["Subject"], "the original subject")
        self.assertEqual(orig["Message-ID"], "<bounce-1@client.test>")
        events = self.final_events(d)
        [b] = harness.find_events(events, "dsn")
        self.assertEqual((b["for_id"], b["to"], b["action"]), (qid, "alice@sender.test", "failed"))
        [e] = harness.find_events(events, "bounced")
        self.assertEqual((e["id"], e["recipient"], e["code"]), (qid, "bad-1@dest.test", 550))

    def test_address_literals_are_delivered_to_that_address(self):
        """RFC 5321 §5.1: user@[192.0.2.1] and user@[IPv6:...] go to that
        address, without DNS (before, "[127.0.0.2]" was looked up as an MX
        name). A general literal with another tag is refused at RCPT already
        (and, should one reach delivery, bounces with 5.1.2: mx_test)."""
        v4 = self.sink(host="127.0.0.2")
        v6 = self.sink(host="::1", port=v4.port)
        routes = [{"name": "senders", "domains": [SENDER_DOMAIN], "type": "maildir",
                   "path": str(self.maildir)},
                  {"name": "mx", "domains": ["*"], "type": "mx", "port": v4.port}]
        d = self.daemon(delivery=dict(FAST), routes=routes)
        self.send(d.port, "alice@" + SENDER_DOMAIN, ["lit4@[127.0.0.2]"], make_message("lit4"))
        self.send(d.port, "alice@" + SENDER_DOMAIN, ["lit6@[IPv6:::1]"], make_message("lit6"))
        wait_until(lambda: v4.deliveries and v6.deliveries, 20, "both literals delivered")
        self.wait_spool_empty(d)
        [m4] = v4.deliveries
        self.assertEqual((m4.recipients, m4.token), (["lit4@[127.0.0.2]"], "lit4"))
        [m6] = v6.deliveries
        self.assertEqual((m6.recipients, m6.token), (["lit6@[IPv6:::1]"], "lit6"))
        self.assertEqual(self.dsns(), [])
        with RawSmtp.connect(d.port) as c:
            c.greet()
            c.expect(250, "MAIL FROM:<alice@sender.test>")
            self.assertReply(c.cmd("RCPT TO:<odd@[x-tag:whatever]>"), 501, "5.1.3")

    def test_dsn_remote_mta_is_a_host_name(self):
        # RFC 3464 §2.3.5: Remote-MTA is "dns; <host name>"; the scheduler
        # passes its "host[ip]:port" connection label instead.
        sink = self.sink(rules={"bad-*@": "550 5.1.1 no such user"})
        d = self.relay(sink.port)
        self.send(d.port, "alice@" + SENDER_DOMAIN, ["bad-2@dest.test"], make_message("rmta"))
        wait_until(lambda: self.maildir_files(), 20, "a DSN")
        self.wait_spool_empty(d)
        [(_, dsn)] = self.dsns()
        _, [r], _ = parse_dsn(self, dsn)
        self.assertEqual(r["Remote-MTA"], "dns; 127.0.0.1")

    def test_dsn_in_maildir_has_null_return_path(self):
        # RFC 5321 §4.4: final delivery records the reverse-path, "<>" for a
        # bounce, so that readers (autoresponders, MUAs) never answer it. The
        # maildir writer documents "as Postfix local/virtual do", and Postfix
        # writes "Return-Path: <>"; it omits the field for the null sender.
        sink = self.sink(rules={"bad-*@": "550 5.1.1 no such user"})
        d = self.relay(sink.port)
        self.send(d.port, "alice@" + SENDER_DOMAIN, ["bad-5@dest.test"], make_message("rp"))
        wait_until(lambda: self.maildir_files(), 20, "a DSN")
        self.wait_spool_empty(d)
        [(raw, _)] = self.dsns()
        self.assertTrue(raw.startswith(b"Return-Path: <>\r\nDelivered-To: alice@sender.test\r\n"),
                        raw[:120])

    def test_mixed_recipients(self):
        sink = self.sink(rules={"bad-*@": "550 5.1.1 no such user",
                                "later@dest.test": ("451 4.2.0 greylisted", 1)})
        d = self.relay(sink.port)
        rcpts = ["ok@dest.test", "bad-3@dest.test", "later@dest.test"]
        self.send(d.port, "alice@" + SENDER_DOMAIN, rcpts, make_message("mixed-1"))
        wait_until(lambda: len(sink.for_recipient("later@dest.test")) >= 1, 20,
                   "the deferred recipient delivered")
        self.wait_spool_empty(d)
        self.assertEqual(len(sink.for_recipient("ok@dest.test")), 1)
        self.assertEqual(len(sink.for_recipient("later@dest.test")), 1)
        self.assertEqual(sink.for_recipient("bad-3@dest.test"), [])
        self.assertEqual(sink.tokens(), collections.Counter({"mixed-1": 2}))
        [(_, dsn)] = self.dsns()
        _, rblocks, _ = parse_dsn(self, dsn)
        self.assertEqual([r["Final-Recipient"] for r in rblocks], ["rfc822; bad-3@dest.test"])
        self.assertEqual(rblocks[0]["Status"], "5.1.1")

    # 4 ---------------------------------------------------------------------
    def test_dsn_only_when_wanted(self):
        sink = self.sink(rules={"bad-*@": "550 5.1.1 no such user"})
        d = self.relay(sink.port)
        self.send(d.port, "", ["bad-null@dest.test"], make_message("null-sender"))
        self.send(d.port, "never@" + SENDER_DOMAIN, ["bad-never@dest.test"],
                  make_message("notify-never"), rcpt_params="NOTIFY=NEVER")
        self.send(d.port, "delay@" + SENDER_DOMAIN, ["bad-delay@dest.test"],
                  make_message("notify-delay"), rcpt_params="NOTIFY=DELAY")
        self.send(d.port, "fail@" + SENDER_DOMAIN, ["bad-fail@dest.test"],
                  make_message("notify-failure"), rcpt_params="NOTIFY=FAILURE")
        d.wait_events("bounced", count=4)
        self.wait_spool_empty(d)
        dsns = self.dsns()
        self.assertEqual([m["Delivered-To"] for _, m in dsns], ["fail@sender.test"])
        _, [r], returned = parse_dsn(self, dsns[0][1])
        self.assertEqual(r["Final-Recipient"], "rfc822; bad-fail@dest.test")
        self.assertEqual(returned_headers(returned)["X-Test-Token"], "notify-failure")
        self.assertEqual(sink.deliveries, [])
        # The sink saw the NOTIFY it was given (it offers DSN).
        self.assertEqual(sink.attempts("bad-never@dest.test"), 1)
        events = self.final_events(d)
        self.assertEqual(len(harness.find_events(events, "bounced")), 4)
        [b] = harness.find_events(events, "dsn")
        self.assertEqual((b["to"], b["action"]), ("fail@sender.test", "failed"))

    def test_notify_forwarded_to_next_hop(self):
        sink = self.sink()
        d = self.relay(sink.port)
        self.send(d.port, "a@" + SENDER_DOMAIN, ["n1@dest.test"], make_message("fwd-1"),
                  rcpt_params="NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;n1@dest.test")
        wait_until(lambda: sink.delivered_count() >= 1, 15, "delivery")
        [got] = sink.deliveries
        params = got.rcpt_params["n1@dest.test"]
        self.assertIn("NOTIFY=SUCCESS,FAILURE", params)
        self.assertIn("ORCPT=rfc822;n1@dest.test", params)

    def test_null_sender_relayed_as_null(self):
        sink = self.sink()
        d = self.relay(sink.port)
        self.send(d.port, "", ["nobody@dest.test"], make_message("null-ok"))
        wait_until(lambda: sink.delivered_count() >= 1, 15, "delivery")
        self.wait_spool_empty(d)
        [got] = sink.deliveries
        self.assertEqual((got.sender, got.recipients), ("", ["nobody@dest.test"]))

    def test_reply_lost_after_data_is_retried(self):
        # The connection drops after the final dot, before any reply: the
        # outcome is unknown, so the message must be tried again (a duplicate
        # is allowed, a loss is not).
        sink = self.sink(rules={"lossy@dest.test": ("DROP", 1)})
        d = self.relay(sink.port)
        qid = self.send(d.port, "alice@" + SENDER_DOMAIN, ["lossy@dest.test"],
                        make_message("lossy-1"))
        wait_until(lambda: sink.delivered_count() >= 1, 20, "delivery after the lost reply")
        self.wait_spool_empty(d)
        self.assertEqual(sink.payloads_count(), 2)
        self.assertEqual(sink.tokens(), collections.Counter({"lossy-1": 1}))
        self.assertEqual(self.dsns(), [])
        [e] = harness.find_events(self.final_events(d), "deferred")
        self.assertEqual((e["id"], e["recipient"]), (qid, "lossy@dest.test"))
        self.assertRegex(e["reply"], r"^4\d\d ")
        self.assertEqual(e["code"] // 100, 4, e)

    def test_message_over_remote_size_bounces(self):
        sink = self.sink(size_limit=2000)
        d = self.relay(sink.port)
        big = make_message("big-1", body_lines=["x" * 70] * 40)
        self.send(d.port, "alice@" + SENDER_DOMAIN, ["big@dest.test"], big)
        wait_until(lambda: self.maildir_files(), 20, "a DSN")
        self.wait_spool_empty(d)
        self.assertEqual(sink.payloads_count(), 0)
        [(_, dsn)] = self.dsns()
        _, [r], returned = parse_dsn(self, dsn)
        self.assertEqual(r["Status"], "5.3.4")
        self.assertEqual(r["Final-Recipient"], "rfc822; big@dest.test")

    # 5 ---------------------------------------------------------------------
    def test_destination_down_then_back(self):
        sink = self.sink()
        sink.stop()  # down: the port refuses connections
        d = self.relay(sink.port)
        tokens = [f"down-{i}" for i in range(10)]
        for t in tokens:
            self.send(d.port, "a@" + SENDER_DOMAIN, [f"{t}@dest.test"], make_message(t))
        wait_until(lambda: len({e["id"] for e in self.outcomes(d, "deferred")}) >= 10, 20,
                   "every message deferred")
        deferred = self.outcomes(d, "deferred")
        self.assertTrue(all("4.4.1" in e["reply"] for e in deferred), deferred[:3])
        # Deferred for the destination (the route "sink"), not by a reply of the sink's.
        self.assertEqual({e["destination"] for e in deferred}, {"sink"})
        self.assertEqual({e["recipient"] for e in deferred}, {f"{t}@dest.test" for t in tokens})
        spool = d.export_spool()  # they wait
        self.assertEqual(len(spool), 10)
        bodies = {m.recipients[0]: m.body for m in spool.values()}
        self.assertEqual(sink.payloads_count(), 0)
        self.assertEqual(self.dsns(), [])
        sink.start()  # back, same port
        wait_until(lambda: len(sink.tokens()) >= 10, 20, "all ten after the sink came back")
        self.wait_spool_empty(d)
        self.assert_tokens_once(sink, tokens)
        for dl in sink.deliveries:
            [rcpt] = dl.recipients
            self.assertEqual(dl.data, bodies[rcpt], rcpt)
        self.assertEqual(self.dsns(), [])

    def test_next_envelope_rides_behind_the_final_dot(self):
        # One connection; the first message is held at the sink while seven
        # more queue up behind it. After the release, each message's content
        # goes out with the next one's MAIL/RCPT/DATA behind its final dot
        # (RFC 2920 §3.1): the sink sees those bytes before it answers the dot.
        sink = self.sink()
        sink.hold()
        d = self.relay(sink.port, route={"max_connections": 1})
        tokens = [f"chain-{i}" for i in range(8)]
        messages = {t: make_message(t) for t in tokens}
        for t in tokens:
            self.send(d.port, "a@" + SENDER_DOMAIN, [f"{t}@dest.test"], messages[t])
        wait_until(lambda: sink.payloads_count() >= 1, 10, "the first message at the sink")
        time.sleep(0.5)  # the other seven are dispatched to the destination's queue
        self.assertEqual(sink.payloads_count(), 1)
        sink.release()
        wait_until(lambda: len(sink.tokens()) >= 8, 20, "all eight at the sink")
        self.wait_spool_empty(d)
        self.assert_tokens_once(sink, tokens)
        for dl in sink.deliveries:
            [rcpt] = dl.recipients
            self.assertEqual(split_received(dl.data)[1], messages[rcpt.split("@")[0]], rcpt)
        self.assertEqual(sink.sessions_total, 1)
        # Three to eight rode behind the dots of two to seven (they were all
        # queued while the first was held); the second rode behind the first
        # too if it was queued before the first's content went out.
        self.assertIn(sink.sent_ahead, (6, 7))
        self.assertEqual(sink.protocol_errors, [])

    # 6 ---------------------------------------------------------------------
    def test_connection_limits(self):
        sink = self.sink(data_delay=0.15)
        d = self.relay(sink.port, route={"max_connections": 2, "max_messages_per_connection": 5})
        messages = [(f"lim-{i:02d}", make_message(f"lim-{i:02d}")) for i in range(30)]
        self.send_many(d.port, messages, connections=3)
        wait_until(lambda: len(sink.tokens()) >= 30, 60, "30 messages at the sink")
        self.wait_spool_empty(d)
        self.assert_tokens_once(sink, [t for t, _ in messages])
        self.assertLessEqual(sink.sessions_max, 2)
        self.assertEqual(sink.sessions_max, 2, "the limit should be used")
        self.assertGreaterEqual(sink.sessions_total, 30 // 5)
        per_session = collections.Counter(dl.session for dl in sink.deliveries)
        self.assertLessEqual(max(per_session.values()), 5, per_session)
        self.assertEqual(sink.protocol_errors, [])

    def test_message_rate(self):
        sink = self.sink()
        d = self.relay(sink.port, route={"max_message_rate": "5/s"})
        messages = [(f"rate-{i:02d}", make_message(f"rate-{i:02d}")) for i in range(11)]
        self.send_many(d.port, messages, connections=1)
        wait_until(lambda: len(sink.tokens()) >= 11, 20, "11 messages at the sink")
        self.wait_spool_empty(d)
        self.assert_tokens_once(sink, [t for t, _ in messages])
        times = sorted(dl.time for dl in sink.deliveries)
        # 5/s: never more than 5 (+1 for timer slack) in any one-second window,
        # and 11 messages span at least ~10 intervals of 0.2 s.
        windows = [sum(1 for t in times if t0 <= t < t0 + 1.0) for t0 in times]
        gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
        self.assertLessEqual(max(windows), 6, f"burst over the rate; gaps {gaps}")
        self.assertGreater(times[-1] - times[0], 1.7, f"rate limit not applied; gaps {gaps}")

    # 7 ---------------------------------------------------------------------
    def test_expiry_bounces_with_4_4_7(self):
        sink = self.sink(rules={"*": "451 4.3.0 always later"})
        d = self.relay(sink.port, delivery={"max_age": 3})
        qid = self.send(d.port, "alice@" + SENDER_DOMAIN, ["slow@dest.test"],
                        make_message("expire-1"))
        d.wait_events("deferred", id=qid, timeout=10)
        [stored] = d.export_spool().values()
        lifetime = (stored.envelope["expires_at_us"] - stored.envelope["received_at_us"]) / 1e6
        self.assertAlmostEqual(lifetime, 3, delta=1,
                               msg="the spooled expiry is not received_at + [delivery] max_age")
        wait_until(lambda: self.maildir_files(), 15,
                   "a 4.4.7 DSN within max_age (3 s) plus a retry interval")
        self.wait_spool_empty(d)
        [(_, dsn)] = self.dsns()
        _, [r], returned = parse_dsn(self, dsn)
        self.assertEqual(r["Final-Recipient"], "rfc822; slow@dest.test")
        self.assertEqual(r["Action"], "failed")
        self.assertEqual(r["Status"], "4.4.7")
        self.assertIn("always later", r["Diagnostic-Code"])
        self.assertEqual(returned_headers(returned)["X-Test-Token"], "expire-1")
        self.assertEqual(sink.deliveries, [])
        [e] = d.wait_events("expired", id=qid)
        self.assertEqual(e["recipient"], "slow@dest.test")
        self.assertIn("always later", e["reply"])

    # 8 ---------------------------------------------------------------------
    def test_maildir_route(self):
        sink = self.sink()
        box = self.workdir / "local-maildir"
        d = self.relay(sink.port, extra_routes=[
            {"name": "local", "domains": ["local.test"], "type": "maildir", "path": str(box)}])
        msg = make_message("maildir-1", body_lines=["a", ".dot", "..dots", "8bit \u00e9", "z"])
        qid = self.send(d.port, "carol@client.test",
                        ["u1@local.test", "u2@local.test", "far@dest.test"], msg)
        wait_until(lambda: len(self.maildir_files(box)) >= 2 and sink.delivered_count() >= 1,
                   15, "two maildir files and one relayed copy")
        self.wait_spool_empty(d)
        files = self.maildir_files(box)
        self.assertEqual(len(files), 2, files)
        seen = set()
        for p in files:
            raw = p.read_bytes()
            m = re.match(rb"Return-Path: <carol@client\.test>\r\nDelivered-To: (\S+)\r\n", raw)
            self.assertIsNotNone(m, raw[:120])
            seen.add(m.group(1).decode())
            received, rest = split_received(raw[m.end():])
            self.assertEqual(rest, msg)
            self.assertEqual(raw[m.end():], split_received(sink.deliveries[0].data)[0] + msg)
            self.assertFalse(p.name.startswith("."), p)
        self.assertEqual(seen, {"u1@local.test", "u2@local.test"})
        self.assertEqual(list((box / "tmp").iterdir()), [])
        self.assertEqual(sink.deliveries[0].recipients, ["far@dest.test"])
        delivered = harness.find_events(self.final_events(d), "delivered", id=qid)
        self.assertEqual(sorted(e["recipient"] for e in delivered),
                         ["far@dest.test", "u1@local.test", "u2@local.test"])
        self.assertEqual({e["recipient"]: e["destination"] for e in delivered},
                         {"u1@local.test": "local", "u2@local.test": "local",
                          "far@dest.test": "sink"})

    # 9 ---------------------------------------------------------------------
    def test_lmtp_per_recipient_replies(self):
        sink = self.sink(lmtp=True, rules={"bad-*@": "550 5.1.1 mailbox unknown"})
        d = self.relay(sink.port, lmtp=True)
        msg = make_message("lmtp-1")
        self.send(d.port, "alice@" + SENDER_DOMAIN, ["ok@lmtp.test", "bad-4@lmtp.test"], msg)
        wait_until(lambda: sink.delivered_count() >= 1 and self.maildir_files(), 20,
                   "one delivery and one DSN")
        self.wait_spool_empty(d)
        [got] = sink.deliveries
        self.assertEqual(got.recipients, ["ok@lmtp.test"])
        self.assertEqual(split_received(got.data)[1], msg)
        self.assertEqual(sink.payloads_count(), 1)  # one transaction, both recipients
        [(_, dsn)] = self.dsns()
        _, [r], _ = parse_dsn(self, dsn)
        self.assertEqual(r["Final-Recipient"], "rfc822; bad-4@lmtp.test")
        self.assertEqual(r["Status"], "5.1.1")
        self.assertIn("mailbox unknown", r["Diagnostic-Code"])
        self.assertEqual(sink.protocol_errors, [])

    def test_lmtp_deferral_per_recipient(self):
        sink = self.sink(lmtp=True, rules={"slow@lmtp.test": ("452 4.2.2 over quota", 1)})
        d = self.relay(sink.port, lmtp=True)
        self.send(d.port, "alice@" + SENDER_DOMAIN, ["fast@lmtp.test", "slow@lmtp.test"],
                  make_message("lmtp-2"))
        wait_until(lambda: len(sink.for_recipient("slow@lmtp.test")) >= 1, 20,
                   "the deferred LMTP recipient delivered")
        self.wait_spool_empty(d)
        self.assertEqual(len(sink.for_recipient("fast@lmtp.test")), 1)
        self.assertEqual(len(sink.for_recipient("slow@lmtp.test")), 1)
        self.assertEqual(self.dsns(), [])

    # 10 --------------------------------------------------------------------
    def test_sigkill_during_delivery(self):
        n = 1000
        sink = self.sink(data_delay=0.03)
        d = self.relay(sink.port, route={"max_connections": 8})
        messages = [(f"crash-{i:04d}", make_message(f"crash-{i:04d}")) for i in range(n)]
        t0 = time.monotonic()
        self.send_many(d.port, messages, connections=10)
        inject = time.monotonic() - t0
        wait_until(lambda: sink.payloads_count() >= 100, 30, "deliveries under way")
        self.assertGreater(sink.sessions_current, 0, "no delivery in flight")
        before = sink.payloads_count()
        d.kill()
        self.assertLess(before, n, "everything was delivered before the kill")
        d.start()
        wait_until(lambda: len(sink.tokens()) >= n, 60, f"all {n} messages after the restart")
        self.wait_spool_empty(d, timeout=30)
        got = sink.tokens()
        missing = [t for t, _ in messages if got[t] == 0]
        self.assertEqual(missing, [])
        dups = sum(c - 1 for c in got.values() if c > 1)
        print(f"\n[delivery-crash] injected {n} in {inject:.1f} s, {before} at the sink "
              f"when killed, {sink.delivered_count()} deliveries in all, {dups} duplicates "
              f"({sum(1 for c in got.values() if c > 1)} messages), "
              f"total {time.monotonic() - t0:.1f} s", flush=True)
        self.assertEqual(set(got) - {t for t, _ in messages}, set())
        self.assertEqual(self.dsns(), [])

    # 11 --------------------------------------------------------------------
    def test_sigterm_during_delivery(self):
        # The sink holds every final reply 0.5 s, so at SIGTERM up to
        # max_connections transactions are waiting for their 250. A graceful
        # stop (shutdown_grace 5 s) lets them finish and records the outcome:
        # nothing lost, and nothing the sink accepted is sent again.
        n = 100
        sink = self.sink(data_delay=0.5)
        d = self.relay(sink.port, route={"max_connections": 4})
        messages = [(f"term-{i:03d}", make_message(f"term-{i:03d}")) for i in range(n)]
        self.send_many(d.port, messages, connections=5)
        wait_until(lambda: sink.payloads_count() >= 6, 30, "deliveries under way")
        self.assertGreater(sink.sessions_current, 0, "no delivery in flight")
        rc = d.stop()
        self.assertEqual(rc, 0, d.log_text()[-3000:])
        at_stop = sink.tokens()
        self.assertLess(len(at_stop), n, "everything was delivered before the stop")
        left = d.queue_count()
        logged = len(d.events("delivered"))  # complete: the writer flushed at exit
        sink.data_delay = 0
        d.start()
        wait_until(lambda: len(sink.tokens()) >= n, 60, f"all {n} messages after the restart")
        self.wait_spool_empty(d)
        got = sink.tokens()
        self.assertEqual([t for t, _ in messages if got[t] == 0], [])
        dups = {t: c for t, c in got.items() if c > 1}
        print(f"\n[delivery-sigterm] the sink accepted {len(at_stop)} before the stop, "
              f"sluiced logged {logged} delivered, {left} left in the spool, "
              f"{len(dups)} sent again: {sorted(dups)}", flush=True)
        self.assertEqual(logged, len(at_stop), "in-flight results lost at shutdown")
        self.assertEqual(left + len(at_stop), n)
        self.assertEqual(dups, {})


if __name__ == "__main__":
    import unittest
    unittest.main()
