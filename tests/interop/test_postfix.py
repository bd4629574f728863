"""Sluice and a real Postfix, both directions, each Postfix a private instance
(own main.cf/master.cf, queue, data dir and maillog under the test's temp
dir; see interop.Postfix for what that takes):

  - Sluice → Postfix: a smarthost route to Postfix's smtpd; Postfix's virtual
    agent writes the message into a maildir under the temp dir.
  - Postfix → Sluice: a Postfix whose relayhost is Sluice; mail submitted to
    it (its smtpd, its sendmail) arrives in Sluice's spool.
  - Postfix → Sluice → Postfix: the whole chain into the maildir.
  - a Postfix 5xx at RCPT → Sluice bounces to the sender.

    cd tests/interop && python3 -m unittest -v test_postfix
"""

import unittest

from interop import (HOSTNAME, Dsn, InteropTestCase, Postfix, check_relayed, crlf, lf,
                     make_message, nobody_ids, split_received, wait_maildir, wait_until)

DELIVERY = {"enabled": True, "retry_initial": 1, "idle_timeout": 1}


class PostfixTest(InteropTestCase):

    def destination(self, name="dest", mynetworks="127.0.0.0/8"):
        """Postfix that takes dest.test into one maildir (virtual delivery)."""
        uid, gid = nobody_ids()
        vmail = self.subdir(f"{name}.vmail", owner=(uid, gid))
        pf = Postfix(self, name, {
            "virtual_mailbox_domains": "dest.test",
            "virtual_mailbox_base": str(vmail),
            "virtual_mailbox_maps": "static:dest.test/",
            "virtual_uid_maps": f"static:{uid}",
            "virtual_gid_maps": f"static:{gid}",
            "virtual_minimum_uid": "1",
            "mynetworks": mynetworks,
        }).start()
        return pf, vmail / "dest.test"

    def relay_client(self, sluice_port, name="client"):
        """Postfix that relays everything to Sluice."""
        return Postfix(self, name, {
            "relayhost": f"[127.0.0.1]:{sluice_port}",
            "smtp_helo_name": "client-mta.test",
        }).start()

    def strip_postfix_delivery_headers(self, raw, rcpt, sender):
        """Postfix virtual(8) prepends Return-Path, X-Original-To, Delivered-To
        and its own Received; returns what follows them (LF line ends)."""
        lines = lf(raw).split(b"\n")
        self.assertEqual(lines[0], f"Return-Path: <{sender}>".encode())
        self.assertEqual(lines[1], f"X-Original-To: {rcpt}".encode())
        self.assertEqual(lines[2], f"Delivered-To: {rcpt}".encode())
        self.assertTrue(lines[3].startswith(f"Received: from {HOSTNAME} (".encode()),
                        lines[3])
        i = 4
        while lines[i].startswith(b"\t"):
            i += 1
        self.assertIn(b"(Postfix) with ESMTP", b"\n".join(lines[3:i]))
        return b"\n".join(lines[i:])

    def test_sluice_delivers_into_postfix_maildir(self):
        pf, maildir = self.destination()
        d = self.daemon(delivery=DELIVERY, routes=[
            {"name": "postfix", "domains": ["dest.test"], "type": "smarthost",
             "host": "127.0.0.1", "port": pf.smtpd_port}])
        sent = make_message("to-postfix")
        self.swaks(d.port, "alice@client.test", ["bob@dest.test", "carol@dest.test"], sent)

        msgs = wait_maildir(maildir, 2)
        self.wait_queue_empty(d)
        rcpts = set()
        for raw in msgs:
            rcpt = lf(raw).split(b"\n")[2].split(b": ")[1].decode()
            rcpts.add(rcpt)
            rest = self.strip_postfix_delivery_headers(raw, rcpt, "alice@client.test")
            check_relayed(self, rest, sent)
        self.assertEqual(rcpts, {"bob@dest.test", "carol@dest.test"})
        self.assertIn("status=sent (delivered to maildir)", pf.log_text())
        # One transaction, two recipients: Postfix logs nrcpt=2 for one queue file.
        self.assertIn("nrcpt=2", pf.log_text())

    def test_postfix_relays_into_sluice(self):
        d = self.daemon()  # delivery off: the spool is where we look
        pf = self.relay_client(d.port)
        sent = make_message("from-postfix-smtpd")
        self.swaks(pf.smtpd_port, "alice@client.test", ["bob@far.test"], sent)
        pf.sendmail("carol@client.test", ["dave@far.test"], lf(make_message("from-sendmail")))

        self.wait_until_spooled(d, 2)
        spool = {m.sender: m for m in d.export_spool().values()}
        self.assertEqual(set(spool), {"alice@client.test", "carol@client.test"})
        smtpd = spool["alice@client.test"]
        self.assertEqual(smtpd.recipients, ["bob@far.test"])
        self.assertIn(b"from client-mta.test ([127.0.0.1])", smtpd.received)
        # What Postfix relayed: its own Received header, then the message.
        theirs, original = split_received(smtpd.message)
        self.assertIn(b"by client.postfix.test (Postfix) with ESMTP", theirs)
        self.assertEqual(original, sent)
        local = spool["carol@client.test"]
        self.assertEqual(local.recipients, ["dave@far.test"])
        self.assertIn(b"X-Test-Token: from-sendmail\r\n", local.message)
        self.assertIn(b"by client.postfix.test (Postfix, from userid", local.message)
        log = pf.log_text()
        self.assertEqual(log.count(f"relay=127.0.0.1[127.0.0.1]:{d.port}"), 2, log)
        self.assertEqual(log.count("status=sent (250 2.0.0 Ok: queued as "), 2, log)

    def wait_until_spooled(self, d, n):
        wait_until(lambda: d.queue_count() >= n, 60, f"{n} messages in Sluice's spool",
                   interval=0.1)
        self.assertEqual(d.queue_count(), n)

    def test_postfix_to_sluice_to_postfix(self):
        dest, maildir = self.destination()
        d = self.daemon(delivery=DELIVERY, routes=[
            {"name": "postfix", "domains": ["dest.test"], "type": "smarthost",
             "host": "127.0.0.1", "port": dest.smtpd_port}])
        client = self.relay_client(d.port)
        sent = make_message("chain")
        self.swaks(client.smtpd_port, "alice@client.test", ["bob@dest.test"], sent)

        (raw,) = wait_maildir(maildir, 1)
        rest = self.strip_postfix_delivery_headers(raw, "bob@dest.test", "alice@client.test")
        ours, relayed = split_received(crlf(rest))
        self.assertIn(f"by {HOSTNAME} (Sluice) with ESMTP".encode(), ours)
        theirs, original = split_received(relayed)
        self.assertIn(b"(Postfix)", theirs)
        self.assertEqual(original, sent)
        self.wait_queue_empty(d)

    def test_postfix_rejection_bounces(self):
        # Sluice (127.0.0.1) is outside this Postfix's mynetworks: relaying to
        # a domain it does not serve gets "554 5.7.1 Relay access denied".
        pf, maildir = self.destination(mynetworks="127.0.0.2/32")
        bounces = self.workdir / "bounces"
        d = self.daemon(delivery=DELIVERY, routes=[
            {"name": "bounces", "domains": ["client.test"], "type": "maildir",
             "path": str(bounces)},
            {"name": "postfix", "domains": ["*"], "type": "smarthost",
             "host": "127.0.0.1", "port": pf.smtpd_port}])
        sent = make_message("rejected")
        self.swaks(d.port, "alice@client.test", ["bob@dest.test", "eve@elsewhere.test"], sent)

        (bob,) = wait_maildir(maildir, 1)
        self.assertIn(b"Delivered-To: bob@dest.test", bob)
        (raw,) = wait_maildir(bounces, 1)
        self.wait_queue_empty(d)
        dsn = Dsn(raw)
        self.assertEqual(dsn.report_type, "delivery-status")
        self.assertEqual(len(dsn.recipients), 1, dsn.recipients)
        r = dsn.recipient("eve@elsewhere.test")
        self.assertEqual(r["Action"], "failed")
        self.assertEqual(r["Status"], "5.7.1")
        self.assertIn("Relay access denied", r["Diagnostic-Code"])
        self.assertIn("127.0.0.1", r.get("Remote-MTA", ""))
        self.assertIn("reject: RCPT from", pf.log_text())


if __name__ == "__main__":
    unittest.main()
