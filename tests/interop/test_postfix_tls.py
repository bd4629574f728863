"""Sluice's outbound STARTTLS against a real Postfix: a private Postfix
instance (see interop.Postfix) with smtpd_tls_security_level = may, a
certificate from scripts/dev-cert, smtpd_tls_received_header = yes and
smtpd_tls_loglevel = 1, delivering dest.test into a maildir.

  - tls = "opportunistic": the message lands in the maildir byte for byte;
    Postfix's Received header says "(using TLSv1.x with cipher ...)" and
    "with ESMTPS", its maillog "Anonymous TLS connection established from";
    Sluice counts sluice_delivery_tls_total{result="unverified"};
  - tls = "disabled": the same Postfix, no TLS at all;
  - tls = "required": the dev-cert certificate does not verify against
    /etc/ssl/certs/ca-certificates.crt (the only trust store; not
    configurable per route yet), so nothing reaches the maildir and the
    message is deferred with 4.7.5 at once, not after tls_timeout.

Needs postfix and openssl (for scripts/dev-cert): a missing program fails.

    cd tests/interop && python3 -m unittest -v test_postfix_tls
"""

import re
import time
import unittest

from interop import (HOSTNAME, InteropTestCase, Postfix, RawSmtp, check_relayed, harness, lf,
                     maildir_messages, make_message, nobody_ids, queued_id, send_message,
                     wait_maildir, wait_until)
from harness import AdminDaemon  # noqa: E402 (tests/integration is on sys.path now)

DELIVERY = {"enabled": True, "retry_initial": 60, "retry_max": 120, "idle_timeout": 1,
            "destination_backoff": 1, "connect_timeout": 2, "tls_timeout": 20}
TLS_TIMEOUT = DELIVERY["tls_timeout"]

POSTFIX_TLS_RE = re.compile(rb"\(using (TLSv1\.[23]) with cipher (\S+)")
MAILLOG_TLS_RE = re.compile(
    r"Anonymous TLS connection established from \S*\[127\.0\.0\.1\]: (TLSv1\.[23]) with cipher")


class OutboundTlsPostfixTest(InteropTestCase):

    def certs(self):
        return harness.make_dev_certs(self.workdir / "certs")

    def destination(self):
        """Postfix with STARTTLS ("may") taking dest.test into one maildir."""
        certs = self.certs()
        uid, gid = nobody_ids()
        vmail = self.subdir("dest.vmail", owner=(uid, gid))
        pf = Postfix(self, "dest", {
            "virtual_mailbox_domains": "dest.test",
            "virtual_mailbox_base": str(vmail),
            "virtual_mailbox_maps": "static:dest.test/",
            "virtual_uid_maps": f"static:{uid}",
            "virtual_gid_maps": f"static:{gid}",
            "virtual_minimum_uid": "1",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": str(certs / "rsa.crt"),
            "smtpd_tls_key_file": str(certs / "rsa.key"),
            "smtpd_tls_eccert_file": str(certs / "ecdsa.crt"),
            "smtpd_tls_eckey_file": str(certs / "ecdsa.key"),
            "smtpd_tls_received_header": "yes",
            "smtpd_tls_loglevel": "1",
        })
        # smtpd asks tlsmgr for its PRNG seed and session cache.
        with open(pf.conf / "master.cf", "a") as f:
            f.write("tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n")
        pf.start()
        return pf, vmail / "dest.test"

    def sluice(self, port, tls):
        wd = self.workdir / f"d{len(self.daemons)}"
        wd.mkdir()
        d = AdminDaemon(wd, admin=True, delivery=DELIVERY, routes=[
            {"name": "postfix", "domains": ["dest.test"], "type": "smarthost",
             "host": "127.0.0.1", "port": port, "tls": tls}])
        self.daemons.append(d)
        d.start()
        return d

    def submit(self, d, token):
        msg = make_message(token)
        with RawSmtp.connect(d.port) as c:
            c.greet()
            code, text = send_message(c, "alice@client.test", ["bob@dest.test"], msg)
            self.assertEqual(code, 250, text)
            c.cmd("QUIT")
        return queued_id(text), msg

    def postfix_header(self, raw):
        """(Postfix's Received header, the rest) of a maildir message, LF line ends,
        after Return-Path / X-Original-To / Delivered-To."""
        lines = lf(raw).split(b"\n")
        self.assertEqual(lines[0], b"Return-Path: <alice@client.test>")
        self.assertEqual(lines[1], b"X-Original-To: bob@dest.test")
        self.assertEqual(lines[2], b"Delivered-To: bob@dest.test")
        self.assertTrue(lines[3].startswith(f"Received: from {HOSTNAME} (".encode()), lines[3])
        i = 4
        while lines[i].startswith((b"\t", b" ")):
            i += 1
        return b"\n".join(lines[3:i]), b"\n".join(lines[i:])

    def tls_count(self, d, result):
        return d.scrape().sum("sluice_delivery_tls_total", result=result)

    def test_opportunistic_starttls_to_postfix(self):
        pf, maildir = self.destination()
        d = self.sluice(pf.smtpd_port, "opportunistic")
        t0 = time.monotonic()
        qid, sent = self.submit(d, "tls-to-postfix")
        (raw,) = wait_maildir(maildir, 1, timeout=TLS_TIMEOUT + 30)
        elapsed = time.monotonic() - t0
        self.wait_queue_empty(d)
        theirs, rest = self.postfix_header(raw)
        ours = check_relayed(self, rest, sent)
        self.assertIn(f" id {qid}".encode(), ours)
        # Postfix saw TLS: its Received header and its maillog say so.
        self.assertIn(b"(Postfix) with ESMTPS id ", theirs, theirs)
        m = POSTFIX_TLS_RE.search(theirs)
        self.assertIsNotNone(m, f"no '(using TLSv1.x with cipher' in {theirs!r}")
        wait_until(lambda: MAILLOG_TLS_RE.search(pf.log_text()), 10,
                   "'Anonymous TLS connection established' in Postfix's maillog")
        self.assertEqual(MAILLOG_TLS_RE.search(pf.log_text()).group(1), m.group(1).decode())
        self.assertIn("status=sent (delivered to maildir)", pf.log_text())
        # Sluice: TLS without a verified certificate, no fallback, no wait.
        self.assertGreaterEqual(self.tls_count(d, "unverified"), 1)
        self.assertEqual(self.tls_count(d, "failed"), 0)
        self.assertNotIn("retrying in plaintext", d.log_text())
        self.assertLess(elapsed, TLS_TIMEOUT / 2, f"delivery took {elapsed:.1f} s")

    def test_disabled_stays_plaintext(self):
        pf, maildir = self.destination()
        d = self.sluice(pf.smtpd_port, "disabled")
        _, sent = self.submit(d, "plain-to-postfix")
        (raw,) = wait_maildir(maildir, 1)
        theirs, rest = self.postfix_header(raw)
        check_relayed(self, rest, sent)
        self.assertIn(b"(Postfix) with ESMTP id ", theirs, theirs)
        self.assertIsNone(POSTFIX_TLS_RE.search(theirs), theirs)
        self.assertNotIn("TLS connection established", pf.log_text())
        self.assertEqual(d.scrape().sum("sluice_delivery_tls_total"), 0)

    def test_required_with_unverifiable_certificate_defers(self):
        pf, maildir = self.destination()
        d = self.sluice(pf.smtpd_port, "required")
        t0 = time.monotonic()
        qid, sent = self.submit(d, "required-to-postfix")
        rx = re.compile(rf"deferred id={qid} to=<bob@dest\.test> [^\n]*4\.7\.5[^\n]*"
                        rf"TLS handshake failed[^\n]*")
        line = wait_until(lambda: rx.search(d.log_text()), TLS_TIMEOUT + 15,
                          "a 4.7.5 deferral in Sluice's log").group(0)
        elapsed = time.monotonic() - t0
        self.assertNotIn("timed out", line)
        self.assertRegex(line, r"CERTIFICATE_VERIFY_FAILED|certificate")
        self.assertLess(elapsed, TLS_TIMEOUT / 2,
                        f"the deferral took {elapsed:.1f} s: the handshake ran into "
                        f"tls_timeout instead of failing verification")
        self.assertEqual(d.queue_count(), 1)
        self.assertEqual(list(d.export_spool()), [qid])
        self.assertEqual(maildir_messages(maildir), [])
        self.assertNotIn("status=sent", pf.log_text())


if __name__ == "__main__":
    unittest.main()
