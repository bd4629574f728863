"""SMTP smuggling (CVE-2023-51764 family): only CR LF "." CR LF ends DATA.

With bare_newline = "reject" (the default) a message with a bare LF or CR is
refused with 5xx after the real end marker, nothing is queued and the bytes
that look like a second transaction are never executed. With "normalize" the
message is accepted with CRLF line ends and the smuggled-looking part stays
inside that one message.
"""

import unittest

import harness
from harness import DaemonTestCase

SMUGGLED = (b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled body\r\n")

# Fake end-of-data sequences a lenient parser (or a downstream one) might
# accept. Each is followed by SMUGGLED and then the real "\r\n.\r\n".
FAKE_ENDS = {
    "lf_dot_lf": b"\n.\n",
    "crlf_dot_lf": b"\r\n.\n",
    "lf_dot_crlf": b"\n.\r\n",
    "cr_dot_cr": b"\r.\r",
    "cr_dot_crlf": b"\r.\r\n",
    "crlf_dot_cr": b"\r\n.\r",
}

HEAD = b"From: <a@client.test>\r\nSubject: smuggling test\r\n\r\nfirst part"


def payload(fake_end):
    return HEAD + fake_end + SMUGGLED + b".\r\n"


class SmugglingRejectTest(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.d = self.daemon(listeners=[{"name": "strict"}])

    def start_data(self, c):
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.expect(354, "DATA")

    def test_fake_end_markers_rejected(self):
        for name, fake in FAKE_ENDS.items():
            with self.subTest(fake_end=name):
                c = self.client(self.d.port)
                self.start_data(c)
                c.send(payload(fake) + b"QUIT\r\n")
                replies = c.replies_until_close()
                # One 5xx for the whole thing, then QUIT: no 250 for a first
                # message, no 250/354 for the smuggled MAIL/RCPT/DATA.
                self.assertEqual([r[0] for r in replies], [550, 221], replies)
                self.assertTrue(replies[0][1][0].startswith("5.6.0"), replies)
        if harness.have_sluicectl():
            self.assertEqual(self.d.export_spool(), {})

    def test_bare_lf_elsewhere_in_body_rejected(self):
        c = self.client(self.d.port)
        self.start_data(c)
        c.send(b"Subject: x\r\n\r\nline one\nline two\r\n.\r\n")
        self.assertReply(c.reply(), 550, "5.6.0")
        # The transaction is over; the session is usable.
        self.assertReply(c.cmd("RCPT TO:<b@dest.test>"), 503)
        r = harness.send_message(c, "a@client.test", ["b@dest.test"],
                                 b"Subject: clean\r\n\r\nclean\r\n")
        self.assertReply(r, 250)
        if harness.have_sluicectl():
            spool = self.d.export_spool()
            self.assertEqual(list(spool), [harness.queued_id(r[1])])
            self.assertEqual(spool[harness.queued_id(r[1])].message,
                             b"Subject: clean\r\n\r\nclean\r\n")

    def test_fake_end_split_across_packets(self):
        """The same with the octets arriving one send() at a time around the marker."""
        c = self.client(self.d.port)
        self.start_data(c)
        data = payload(b"\n.\n")
        cut = len(HEAD)
        c.send(data[:cut])
        for i in range(cut, cut + 3):
            c.send(data[i:i + 1])
            c.sock.settimeout(0.05)
            try:
                early = c.sock.recv(100)
            except OSError:
                early = b""
            c.sock.settimeout(15)
            self.assertEqual(early, b"", "server replied in the middle of DATA")
        c.send(data[cut + 3:] + b"QUIT\r\n")
        self.assertEqual([r[0] for r in c.replies_until_close()], [550, 221])
        if harness.have_sluicectl():
            self.assertEqual(self.d.export_spool(), {})

    def test_bdat_bare_lf_rejected(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        body = payload(b"\n.\n")
        c.send(f"BDAT {len(body)} LAST\r\n".encode() + body + b"QUIT\r\n")
        replies = c.replies_until_close()
        self.assertEqual([r[0] for r in replies], [550, 221], replies)
        if harness.have_sluicectl():
            self.assertEqual(self.d.export_spool(), {})

    def test_bare_lf_in_command(self):
        c = self.client(self.d.port)
        # The bare LF ends the bad line (500), the CRLF line after it is a NOOP.
        c.send(b"NOOP\nNOOP\r\n")
        self.assertReply(c.reply(), 500, "5.5.2")
        self.assertReply(c.reply(), 250)
        c.send(b"MAIL FROM:<a@client.test>\n")
        self.assertReply(c.reply(), 500, "5.5.2")
        # The bare-LF MAIL did not open a transaction.
        self.assertReply(c.cmd("RCPT TO:<b@dest.test>"), 503)

    def test_bare_lf_command_resets_transaction(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.send(b"RCPT TO:<c@dest.test>\n")
        self.assertReply(c.reply(), 500, "5.5.2")
        self.assertReply(c.cmd("DATA"), 503)

    def test_bare_cr_in_command(self):
        c = self.client(self.d.port)
        self.assertReply(c.cmd(b"NOOP\rMAIL FROM:<a@client.test>"), 500)
        self.assertReply(c.cmd("RCPT TO:<b@dest.test>"), 503)


class SmugglingNormalizeTest(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.d = self.daemon(listeners=[{"name": "lenient", "bare_newline": "normalize"}])

    def send_payload(self, fake):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.expect(354, "DATA")
        c.send(payload(fake) + b"QUIT\r\n")
        replies = c.replies_until_close()
        self.assertEqual([r[0] for r in replies], [250, 221], replies)
        return harness.queued_id(replies[0][1])

    def assertCrlfOnly(self, body):
        self.assertNotIn(b"\r\r", body)
        stripped = body.replace(b"\r\n", b"")
        self.assertNotIn(b"\n", stripped, body)
        self.assertNotIn(b"\r", stripped, body)
        self.assertTrue(body.endswith(b"\r\n"))

    def test_fake_end_markers_stay_inside_one_message(self):
        harness.require_sluicectl()
        ids = {}
        for name, fake in FAKE_ENDS.items():
            with self.subTest(fake_end=name):
                ids[name] = self.send_payload(fake)
        spool = self.d.export_spool()
        self.assertEqual(sorted(spool), sorted(ids.values()),
                         "exactly one message per transaction")
        for name, qid in ids.items():
            with self.subTest(fake_end=name):
                m = spool[qid]
                self.assertEqual(m.sender, "a@client.test")
                self.assertEqual(m.recipients, ["b@dest.test"])
                self.assertCrlfOnly(m.body)
                self.assertTrue(m.message.startswith(HEAD), m.message)
                self.assertTrue(m.message.endswith(SMUGGLED), m.message)
                self.assertNotIn(b"attacker", m.sender.encode())

    def test_lf_dot_lf_normalized_exactly(self):
        """A bare LF never starts a line for framing, so the dot after it is
        kept and only the line ends change."""
        harness.require_sluicectl()
        qid = self.send_payload(b"\n.\n")
        m = self.d.export_spool()[qid]
        self.assertEqual(m.message, HEAD + b"\r\n.\r\n" + SMUGGLED)

    def test_bare_lf_lines_normalized(self):
        harness.require_sluicectl()
        c = self.client(self.d.port)
        r = harness.send_message(c, "a@client.test", ["b@dest.test"],
                                 b"Subject: lf\r\n\r\none\ntwo\nthree\r\n")
        self.assertReply(r, 250)
        m = self.d.export_spool()[harness.queued_id(r[1])]
        self.assertEqual(m.message, b"Subject: lf\r\n\r\none\r\ntwo\r\nthree\r\n")

    def test_bare_lf_command_accepted(self):
        """Each command alone in its packet: the whole input is consumed."""
        c = self.client(self.d.port)
        c.send(b"MAIL FROM:<a@client.test>\n")
        self.assertReply(c.reply(), 250)
        c.send(b"RCPT TO:<b@dest.test>\n")
        self.assertReply(c.reply(), 250)

    def test_bare_lf_command_accepted_pipelined(self):
        c = self.client(self.d.port)
        c.send(b"MAIL FROM:<a@client.test>\nRCPT TO:<b@dest.test>\nNOOP\r\n")
        self.assertReply(c.reply(), 250, "2.1.0")
        self.assertReply(c.reply(), 250, "2.1.5")
        self.assertReply(c.reply(), 250, "2.0.0")

    def test_bare_cr_command_still_rejected(self):
        c = self.client(self.d.port)
        self.assertReply(c.cmd(b"NOOP\rMAIL FROM:<a@client.test>"), 500)
        self.assertReply(c.cmd("RCPT TO:<b@dest.test>"), 503)


if __name__ == "__main__":
    unittest.main()
