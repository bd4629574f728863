"""Every per-listener limit answers with its reply code, and a refused
message leaves nothing in the spool."""

import time
import unittest

import harness
from harness import DaemonTestCase, RawSmtp, make_message, wait_until


class LimitsTest(DaemonTestCase):

    def start(self, **listener):
        self.d = self.daemon(listeners=[{"name": "relay", **listener}])
        return self.d

    def assertSpoolEmpty(self):
        if harness.have_sluicectl():
            self.assertEqual(self.d.export_spool(), {})

    def test_size_parameter_too_big(self):
        self.start(max_message_size=10000)
        c = self.client(self.d.port)
        self.assertReply(c.cmd("MAIL FROM:<a@client.test> SIZE=10001"), 552, "5.3.4")
        # At the limit is fine.
        self.assertReply(c.cmd("MAIL FROM:<a@client.test> SIZE=10000"), 250)

    def test_ehlo_advertises_configured_size(self):
        self.start(max_message_size=10000)
        c = RawSmtp.connect(self.d.port)
        self.addCleanup(c.close)
        _, lines = c.greet()
        self.assertIn("SIZE 10000", lines)

    def test_body_over_max_message_size(self):
        self.start(max_message_size=4096)
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.expect(354, "DATA")
        line = b"x" * 70 + b"\r\n"
        c.send(b"Subject: big\r\n\r\n" + line * 100 + b".\r\n")
        self.assertReply(c.reply(), 552, "5.3.4")
        # The session stays in step and usable; a small message still fits.
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.expect(354, "DATA")
        c.send(b"Subject: small\r\n\r\nok\r\n.\r\n")
        ok = c.reply()
        self.assertReply(ok, 250)
        if harness.have_sluicectl():
            self.assertEqual(list(self.d.export_spool()), [harness.queued_id(ok[1])])

    def test_bdat_over_max_message_size(self):
        self.start(max_message_size=4096)
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        body = b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 100
        c.send(f"BDAT {len(body)} LAST\r\n".encode() + body)
        self.assertReply(c.reply(), 552, "5.3.4")
        self.assertReply(c.cmd("NOOP"), 250)
        self.assertSpoolEmpty()

    def test_data_line_too_long(self):
        self.start()
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.expect(354, "DATA")
        c.send(b"Subject: long\r\n\r\n" + b"z" * 1200 + b"\r\n.\r\n")
        self.assertEqual(c.reply()[0], 550)
        self.assertReply(c.cmd("NOOP"), 250)
        self.assertSpoolEmpty()

    def test_max_recipients(self):
        self.start(max_recipients=3)
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        for i in range(3):
            c.expect(250, f"RCPT TO:<r{i}@dest.test>")
        self.assertReply(c.cmd("RCPT TO:<r3@dest.test>"), 452, "4.5.3")
        self.assertReply(c.cmd("RCPT TO:<r4@dest.test>"), 452, "4.5.3")
        # The message still goes to the accepted three.
        c.expect(354, "DATA")
        msg = make_message("maxrcpt")
        c.send(harness.dot_stuff(msg) + b".\r\n")
        r = c.reply()
        self.assertReply(r, 250)
        if harness.have_sluicectl():
            spool = self.d.export_spool()
            m = spool[harness.queued_id(r[1])]
            self.assertEqual(sorted(m.recipients), [f"r{i}@dest.test" for i in range(3)])

    def test_command_line_too_long(self):
        self.start(max_line_length=512)
        c = self.client(self.d.port)
        # 512 octets including CRLF is the limit.
        self.assertReply(c.cmd("NOOP " + "a" * (512 - 7)), 250)
        self.assertReply(c.cmd("NOOP " + "a" * 600), 500, "5.5.2")
        self.assertReply(c.cmd("MAIL FROM:<" + "b" * 2000 + "@client.test>"), 500, "5.5.2")
        # Still in step afterwards.
        self.assertReply(c.cmd("NOOP"), 250)

    def test_max_connections_per_ip(self):
        self.start(max_connections_per_ip=2)
        self.check_connection_limit(2, "too many connections from your address")

    def test_max_connections(self):
        self.start(max_connections=3)
        self.check_connection_limit(3, "too many connections")

    def check_connection_limit(self, limit, text):
        held = []

        def fill():
            # The readiness probe's slot is released just after it closes:
            # retry until `limit` sessions are greeted (bounded).
            for c in held:
                c.close()
            held.clear()
            for _ in range(limit):
                c = RawSmtp.connect(self.d.port)
                self.addCleanup(c.close)
                held.append(c)
                if c.reply()[0] != 220:
                    return False
            return True

        wait_until(fill, 10, f"{limit} greeted connections")
        extra = RawSmtp.connect(self.d.port)
        self.addCleanup(extra.close)
        r = extra.reply()
        self.assertReply(r, 421, "4.7.0")
        self.assertIn(text, r[1][0])
        extra.wait_closed()
        # The held sessions still work.
        for c in held:
            c.expect(250, "EHLO held.test")
        # A slot freed is a slot usable again.
        held[0].expect(221, "QUIT")
        held[0].wait_closed()

        def reconnect():
            c = RawSmtp.connect(self.d.port)
            self.addCleanup(c.close)
            return c.reply()[0] == 220

        wait_until(reconnect, 10, "a connection after a slot was freed")

    def test_hard_error_limit(self):
        self.start(soft_error_limit=3, hard_error_limit=3)
        c = self.client(self.d.port)
        self.assertReply(c.cmd("RCPT TO:<x@dest.test>"), 503)
        self.assertReply(c.cmd("DATA"), 503)
        c.send(b"MAIL FROM:<bad\r\n")
        replies = c.replies_until_close()
        self.assertEqual([r[0] for r in replies], [501, 421], replies)
        self.assertTrue(replies[-1][1][0].startswith("4.7.0"), replies)

    def test_soft_error_limit_slows_replies_then_hard_limit_closes(self):
        """Postfix's smtpd_soft_error_limit / smtpd_hard_error_limit: a client
        that probes a few bad addresses is slowed down, not cut off, until the
        hard limit."""
        sleep = 2
        self.start(soft_error_limit=2, hard_error_limit=4, error_sleep=sleep,
                   mynetworks=["10.0.0.0/8"], relay_domains=["allowed.test"])
        c = self.client(self.d.port)
        c.sock.settimeout(30)
        c.expect(250, "MAIL FROM:<a@client.test>")
        took = []
        for i in range(3):
            t0 = time.monotonic()
            self.assertReply(c.cmd(f"RCPT TO:<probe{i}@elsewhere.test>"), 550, "5.7.1")
            took.append(time.monotonic() - t0)
        # The first error is answered at once; from the second (the soft
        # limit) on, every reply waits error_sleep. Lower bounds only for the
        # slowed ones: a loaded machine only adds.
        self.assertLess(took[0], sleep * 0.75, took)
        self.assertGreaterEqual(took[1], sleep * 0.9, took)
        self.assertGreaterEqual(took[2], sleep * 0.9, took)
        # A good command is slowed too, and does not count.
        t0 = time.monotonic()
        self.assertReply(c.cmd("RCPT TO:<ok@allowed.test>"), 250)
        self.assertGreaterEqual(time.monotonic() - t0, sleep * 0.9)
        # The fourth error reaches the hard limit: 550, then 421 and close.
        c.send(b"RCPT TO:<probe9@elsewhere.test>\r\n")
        replies = c.replies_until_close()
        self.assertEqual([r[0] for r in replies], [550, 421], replies)
        self.assertTrue(replies[-1][1][0].startswith("4.7.0"), replies)

    def test_queued_message_clears_the_error_count(self):
        self.start(soft_error_limit=3, hard_error_limit=3)
        c = self.client(self.d.port)
        self.assertReply(c.cmd("BOGUS"), 500)
        self.assertReply(c.cmd("BOGUS"), 500)
        r = harness.send_message(c, "a@client.test", ["b@dest.test"], make_message("errors"))
        self.assertReply(r, 250)
        # Two more errors: four in the session, but only two since the message.
        self.assertReply(c.cmd("BOGUS"), 500)
        self.assertReply(c.cmd("BOGUS"), 500)
        self.assertReply(c.cmd("NOOP"), 250)

    def test_max_junk_commands(self):
        self.start(max_junk_commands=5)
        c = self.client(self.d.port)  # EHLO is the first junk command
        for _ in range(4):
            self.assertReply(c.cmd("NOOP"), 250)
        c.send(b"NOOP\r\n")
        replies = c.replies_until_close()
        self.assertEqual([r[0] for r in replies], [250, 421], replies)
        self.assertTrue(replies[-1][1][0].startswith("4.7.0"), replies)

    def test_pipelined_ehlo_flood_is_cut_off(self):
        """EHLO/HELO count as junk: 5,000 pipelined EHLOs get the junk
        limit's worth of replies, then 421."""
        self.start(max_junk_commands=100)
        c = RawSmtp.connect(self.d.port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        flood = b"EHLO a\r\n" * 2500 + b"HELO b\r\n" * 2500
        try:
            c.sock.sendall(flood)
        except OSError:
            pass  # the server may close before it has read everything
        replies = c.replies_until_close(limit=200)
        codes = [r[0] for r in replies]
        self.assertEqual(codes, [250] * 101 + [421], codes[:3] + ["..."] + codes[-3:])

    def test_junk_counter_reset_by_a_delivered_message(self):
        self.start(max_junk_commands=3)
        c = self.client(self.d.port)  # EHLO: 1
        for _ in range(2):
            self.assertReply(c.cmd("NOOP"), 250)
        r = harness.send_message(c, "a@client.test", ["b@dest.test"], make_message("junk"))
        self.assertReply(r, 250)
        for _ in range(3):
            self.assertReply(c.cmd("NOOP"), 250)

    def test_untrusted_routing_is_refused(self):
        """allow_untrusted_routing = false (Postfix's default): '%', '!' and
        a quoted '@' in a recipient's local part are refused from clients that
        are neither in mynetworks nor authenticated."""
        self.start(mynetworks=["10.0.0.0/8"], relay_domains=["allowed.example"])
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        for rcpt in ("user%evil.test@allowed.example", '"user@evil.test"@allowed.example',
                     "evil.test!user@allowed.example", '"user\\@evil.test"@allowed.example',
                     '"a!b"@allowed.example'):
            got = c.cmd(f"RCPT TO:<{rcpt}>")
            self.assertReply(got, 550, "5.7.1")
            self.assertIn("sender-specified routing", got[1][0])
        c.expect(250, "RCPT TO:<user@allowed.example>")
        c.expect(250, 'RCPT TO:<"john smith"@allowed.example>')
        self.assertReply(c.cmd("DATA"), 354)
        c.send(b"Subject: routing\r\n\r\nx\r\n.\r\n")
        r = c.reply()
        self.assertReply(r, 250)
        if harness.have_sluicectl():
            spool = self.d.export_spool()
            self.assertEqual(sorted(spool[harness.queued_id(r[1])].recipients),
                             ['"john smith"@allowed.example', "user@allowed.example"])

    def test_trusted_clients_and_the_listener_option_may_route(self):
        # 127.0.0.1 is in mynetworks: trusted.
        self.start()
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<user%evil.test@allowed.example>")
        c.expect(250, "RCPT TO:<evil.test!user@allowed.example>")
        self.d.stop()
        d2 = self.daemon(listeners=[{"name": "open", "mynetworks": ["10.0.0.0/8"],
                                     "relay_domains": ["allowed.example"],
                                     "allow_untrusted_routing": True}], subdir="d2")
        c2 = self.client(d2.port)
        c2.expect(250, "MAIL FROM:<a@client.test>")
        c2.expect(250, "RCPT TO:<user%evil.test@allowed.example>")
        self.assertReply(c2.cmd("RCPT TO:<user%evil.test@elsewhere.example>"), 550, "5.7.1")

    def test_command_timeout(self):
        self.start(command_timeout=1)
        c = self.client(self.d.port)
        c.sock.settimeout(15)
        r = c.reply()  # nothing sent: the server gives up
        self.assertReply(r, 421, "4.4.2")
        c.wait_closed()

    def test_command_timeout_mid_transaction_queues_nothing(self):
        self.start(command_timeout=1, data_timeout=1)
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.expect(354, "DATA")
        c.send(b"Subject: never finished\r\n\r\npartial")
        self.assertReply(c.reply(), 421, "4.4.2")
        c.wait_closed()
        self.assertSpoolEmpty()

    def test_too_many_received_headers(self):
        self.start(max_received_headers=5)
        c = self.client(self.d.port)

        def msg(hops):
            hdr = b"".join(b"Received: from hop%d.test by x.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                           % i for i in range(hops))
            return hdr + b"Subject: loop\r\n\r\nbody\r\n"

        r = harness.send_message(c, "a@client.test", ["b@dest.test"], msg(6))
        self.assertReply(r, 554, "5.4.6")
        self.assertSpoolEmpty()
        r = harness.send_message(c, "a@client.test", ["b@dest.test"], msg(5))
        self.assertReply(r, 250)
        if harness.have_sluicectl():
            spool = self.d.export_spool()
            self.assertEqual(list(spool), [harness.queued_id(r[1])])
            self.assertEqual(spool[harness.queued_id(r[1])].message, msg(5))

    def data(self, c, wire):
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.expect(354, "DATA")
        c.send(wire)
        return c.reply()

    def test_message_size_boundary(self):
        """RFC 1870: the limit is on the message octets (CRLFs included, the
        end marker and stuffing excluded); our Received header is not the
        client's to pay for."""
        self.start(max_message_size=4096)
        c = self.client(self.d.port)
        head = b"Subject: exact\r\n\r\n"
        line = b"." + b"w" * 98 + b"\r\n"  # 101 octets, 102 on the wire
        n = (4096 - len(head)) // len(line)
        pad = 4096 - len(head) - n * len(line) - 2
        msg = head + line * n + b"p" * pad + b"\r\n"
        self.assertEqual(len(msg), 4096)
        r = self.data(c, harness.dot_stuff(msg) + b".\r\n")
        self.assertReply(r, 250)
        big = msg[:-2] + b"q\r\n"
        self.assertReply(self.data(c, harness.dot_stuff(big) + b".\r\n"), 552, "5.3.4")
        if harness.have_sluicectl():
            spool = self.d.export_spool()
            self.assertEqual(list(spool), [harness.queued_id(r[1])])
            self.assertEqual(spool[harness.queued_id(r[1])].message, msg)

    def test_data_line_length_boundary(self):
        """1000 octets per line including CRLF; a stuffed dot does not count."""
        self.start()
        c = self.client(self.d.port)
        ok_line = b"a" * 998 + b"\r\n"
        dot_line = b"." + b"b" * 997 + b"\r\n"  # 1001 octets on the wire
        msg = b"Subject: lines\r\n\r\n" + ok_line + dot_line
        r = self.data(c, harness.dot_stuff(msg) + b".\r\n")
        self.assertReply(r, 250)
        self.assertEqual(self.data(c, b"Subject: x\r\n\r\n" + b"c" * 999 + b"\r\n.\r\n")[0], 550)
        if harness.have_sluicectl():
            spool = self.d.export_spool()
            self.assertEqual(list(spool), [harness.queued_id(r[1])])
            self.assertEqual(spool[harness.queued_id(r[1])].message, msg)

    def test_received_headers_counting(self):
        """Received fields are counted in the header section only, by
        case-insensitive name, a folded field once."""
        self.start(max_received_headers=2)
        c = self.client(self.d.port)
        folded = (b"Received: from a.test\r\n\tby b.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                  b"received: from c.test by d.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n")
        body_only = b"Subject: quoted\r\n\r\n" + b"Received: in the body\r\n" * 5
        r = harness.send_message(c, "a@client.test", ["b@dest.test"],
                                 folded + b"Subject: two\r\n\r\nx\r\n")
        self.assertReply(r, 250)
        r2 = harness.send_message(c, "a@client.test", ["b@dest.test"], folded + body_only)
        self.assertReply(r2, 250)
        r3 = harness.send_message(c, "a@client.test", ["b@dest.test"],
                                  folded + b"RECEIVED: from e.test; x\r\nSubject: 3\r\n\r\nx\r\n")
        self.assertReply(r3, 554, "5.4.6")

    def test_reconnect_at_the_per_address_limit_is_admitted(self):
        """Clients at exactly max_connections_per_ip that close a connection and
        open the next one at once are admitted: a closed session's slot is
        released before the new connection is judged, also when the two land
        on different shards (the new one is looked at again before a 421).
        sluice-blast keeps `limit` sessions of one message each (QUIT, close,
        reconnect) going; before the fix this saw hundreds of 421s per
        20,000 messages."""
        limit = 30
        self.start(max_connections_per_ip=limit)
        # Let the readiness probe's slot go first.
        wait_until(lambda: harness.probe_greeting(self.d.port), 10, "a greeting")
        report = harness.run_blast(self.d.port, "--connections", limit, "--messages", 6000,
                                   "--per-connection", 1, "--max-errors", 0)
        self.assertEqual((report["errors"], report["accepted"]), (0, 6000),
                         report["error_samples"])

    def test_connection_slots_are_released(self):
        """However a session ends, its per-IP slot comes back."""
        self.start(max_connections_per_ip=2, soft_error_limit=1, hard_error_limit=1,
                   error_sleep=0, command_timeout=1)
        port = self.d.port
        endings = {
            "quit": lambda c: (c.cmd("QUIT"), c.wait_closed()),
            "client reset mid-DATA": lambda c: (c.expect(250, "MAIL FROM:<a@client.test>"),
                                                c.expect(250, "RCPT TO:<b@dest.test>"),
                                                c.expect(354, "DATA"), c.send(b"partial"),
                                                c.close()),
            "too many errors": lambda c: (c.send(b"BOGUS\r\n"), c.replies_until_close()),
            "timeout": lambda c: c.replies_until_close(),
            "client close before greeting": lambda c: c.close(),
        }
        for name, end in endings.items():
            with self.subTest(ending=name):
                for _ in range(3):  # more sessions than slots
                    def session():
                        c = RawSmtp.connect(port)
                        self.addCleanup(c.close)
                        if name == "client close before greeting":
                            return c
                        code = c.reply()[0]
                        if code != 220:
                            c.close()
                            return None
                        c.expect(250, "EHLO slots.test")
                        return c
                    c = wait_until(session, 10, f"a free slot after '{name}'")
                    end(c)
        # Two at once are still admitted.
        both = []
        def two():
            for x in both:
                x.close()
            both.clear()
            for _ in range(2):
                c = RawSmtp.connect(port)
                self.addCleanup(c.close)
                both.append(c)
                if c.reply()[0] != 220:
                    return False
            return True
        wait_until(two, 10, "two concurrent sessions after all endings")


if __name__ == "__main__":
    unittest.main()
