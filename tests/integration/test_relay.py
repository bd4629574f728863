"""Relay policy: clients in mynetworks relay anywhere; everyone else only to
relay_domains ("example.com" exactly, "*.example.com" for subdomains)."""

import unittest

import harness
from harness import DaemonTestCase, make_message, send_message


class RelayTest(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.d = self.daemon(listeners=[
            {"name": "trusted", "mynetworks": ["127.0.0.0/8"]},
            # 127.0.0.1 is not in 10.0.0.0/8: every test client is untrusted here.
            {"name": "public", "mynetworks": ["10.0.0.0/8"],
             "relay_domains": ["allowed.example", "*.example.org", "Mixed.Example"]},
        ])
        self.trusted = self.d.port_of("trusted")
        self.public = self.d.port_of("public")

    def rcpt(self, port, address):
        c = self.client(port)
        c.expect(250, "MAIL FROM:<sender@client.test>")
        return c.cmd(f"RCPT TO:<{address}>")

    def test_trusted_relays_anywhere(self):
        for address in ["anyone@anywhere.test", "x@example.org", "y@[192.0.2.1]",
                        "z@allowed.example"]:
            with self.subTest(address=address):
                self.assertReply(self.rcpt(self.trusted, address), 250, "2.1.5")

    def test_untrusted_allowed_domain(self):
        self.assertReply(self.rcpt(self.public, "user@allowed.example"), 250, "2.1.5")
        self.assertReply(self.rcpt(self.public, "user@ALLOWED.Example"), 250, "2.1.5")
        self.assertReply(self.rcpt(self.public, "user@mixed.example"), 250, "2.1.5")

    def test_untrusted_other_domain_denied(self):
        for address in ["user@elsewhere.test", "user@sub.allowed.example",
                        "user@allowed.example.evil.test", "user@notallowed.example",
                        "postmaster@example.com"]:
            with self.subTest(address=address):
                r = self.rcpt(self.public, address)
                self.assertReply(r, 550, "5.7.1")

    def test_wildcard_matches_subdomains_only(self):
        self.assertReply(self.rcpt(self.public, "u@sub.example.org"), 250)
        self.assertReply(self.rcpt(self.public, "u@a.b.example.org"), 250)
        self.assertReply(self.rcpt(self.public, "u@example.org"), 550, "5.7.1")
        self.assertReply(self.rcpt(self.public, "u@badexample.org"), 550, "5.7.1")

    def test_address_literal_denied_for_untrusted(self):
        self.assertReply(self.rcpt(self.public, "u@[127.0.0.1]"), 550, "5.7.1")
        self.assertReply(self.rcpt(self.public, "u@[IPv6:::1]"), 550, "5.7.1")

    def test_denied_recipient_not_queued(self):
        harness.require_sluicectl()
        c = self.client(self.public)
        c.expect(250, "MAIL FROM:<sender@client.test>")
        self.assertReply(c.cmd("RCPT TO:<victim@elsewhere.test>"), 550, "5.7.1")
        c.expect(250, "RCPT TO:<ok@allowed.example>")
        c.expect(354, "DATA")
        msg = make_message("relay-mixed")
        c.send(harness.dot_stuff(msg) + b".\r\n")
        r = c.reply()
        self.assertReply(r, 250)
        # Only denied recipients: no message.
        c.expect(250, "MAIL FROM:<sender@client.test>")
        self.assertReply(c.cmd("RCPT TO:<victim@elsewhere.test>"), 550, "5.7.1")
        self.assertReply(c.cmd("DATA"), 554)
        spool = self.d.export_spool()
        self.assertEqual(list(spool), [harness.queued_id(r[1])])
        m = spool[harness.queued_id(r[1])]
        self.assertEqual(m.recipients, ["ok@allowed.example"])
        self.assertEqual(m.message, msg)
        self.assertEqual(m.envelope.get("listener", "public"), "public")


if __name__ == "__main__":
    unittest.main()
