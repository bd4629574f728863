"""Sluice delivering over LMTP into a private Dovecot, read back over IMAP
(imaplib) and POP3 (poplib); an unknown user's 550 from LMTP becomes a
bounce, written by Sluice's maildir route for the sender's domain.

The private Dovecot (dovecot -c CONF -F, stopped by PID) as root needs:
default_login_user/default_internal_user set to the packaged dovenull and
dovecot users, mail_uid/mail_gid for the mailboxes (nobody here, with
first_valid_uid low enough), base_dir/state_dir/log_path under the temp dir,
and the temp dir world-traversable.

    cd tests/interop && python3 -m unittest -v test_dovecot
"""

import imaplib
import poplib
import unittest

from interop import (IS_ROOT, Dsn, InteropTestCase, check_relayed, crlf, free_port, lf,
                     make_message, nobody_ids, probe_greeting, require, wait_maildir,
                     wait_until)

PASSWORD = "alice-secret"

DOVECOT_CONF = """\
protocols = lmtp imap pop3
base_dir = {tmp}/base
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
info_log_path = {tmp}/dovecot.log
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
{users}
mail_location = maildir:{tmp}/mail/%u
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
first_valid_gid = 1
mail_plugins = quota
plugin {{
  quota = maildir:User quota
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {tmp}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {tmp}/passwd
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


class Dovecot:
    def __init__(self, tc):
        exe = require("dovecot")
        uid, gid = nobody_ids()
        self.dir = tc.subdir("dovecot")
        tc.subdir("dovecot/base")
        tc.subdir("dovecot/state")
        tc.subdir("dovecot/mail", owner=(uid, gid))
        # bob's quota (10 bytes) is smaller than any message: Dovecot accepts
        # him at RCPT and refuses him after DATA (lmtp_rcpt_check_quota = no),
        # the LMTP per-recipient reply that SMTP does not have.
        (self.dir / "passwd").write_text(
            f"alice@dest.test:{{PLAIN}}{PASSWORD}::::::\n"
            f"bob@dest.test:{{PLAIN}}{PASSWORD}::::::userdb_quota_rule=*:storage=10B\n")
        self.lmtp = free_port()
        self.imap = free_port({self.lmtp})
        self.pop3 = free_port({self.lmtp, self.imap})
        users = ("default_login_user = dovenull\ndefault_internal_user = dovecot"
                 if IS_ROOT else "")
        self.conf = self.dir / "dovecot.conf"
        self.conf.write_text(DOVECOT_CONF.format(tmp=self.dir, users=users, uid=uid, gid=gid,
                                                 lmtp=self.lmtp, imap=self.imap,
                                                 pop3=self.pop3))
        self.proc = tc.spawn("dovecot", [exe, "-c", str(self.conf), "-F"])
        self.proc.log_text = self.log_text
        for port, what in ((self.lmtp, "LMTP"), (self.imap, "IMAP"), (self.pop3, "POP3")):
            wait_until(lambda p=port: self.proc.check_running() or self.listening(p), 20,
                       f"Dovecot {what} on port {port}")
        wait_until(lambda: probe_greeting(self.lmtp), 20, "Dovecot LMTP greeting")

    @staticmethod
    def listening(port):
        import socket
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def log_text(self):
        p = self.dir / "dovecot.log"
        return p.read_text(errors="replace") if p.exists() else ""


class DovecotTest(InteropTestCase):

    def setUp(self):
        super().setUp()
        self.dovecot = Dovecot(self)
        self.bounces = self.workdir / "bounces"
        self.sluice = self.daemon(
            delivery={"enabled": True, "retry_initial": 1, "idle_timeout": 1},
            routes=[
                {"name": "bounces", "domains": ["client.test"], "type": "maildir",
                 "path": str(self.bounces)},
                {"name": "dovecot", "domains": ["dest.test"], "type": "lmtp",
                 "host": "127.0.0.1", "port": self.dovecot.lmtp},
            ])

    def imap_messages(self):
        m = imaplib.IMAP4("127.0.0.1", self.dovecot.imap, timeout=15)
        try:
            m.login("alice@dest.test", PASSWORD)
            typ, data = m.select("INBOX", readonly=True)
            self.assertEqual(typ, "OK")
            n = int(data[0])
            out = []
            for i in range(1, n + 1):
                typ, fetched = m.fetch(str(i), "(BODY.PEEK[])")
                self.assertEqual(typ, "OK")
                out.append(fetched[0][1])
            return out
        finally:
            m.logout()

    def pop3_messages(self):
        p = poplib.POP3("127.0.0.1", self.dovecot.pop3, timeout=15)
        try:
            p.user("alice@dest.test")
            p.pass_(PASSWORD)
            count, _ = p.stat()
            return [b"\r\n".join(p.retr(i)[1]) + b"\r\n" for i in range(1, count + 1)]
        finally:
            p.quit()

    def strip_dovecot_headers(self, raw):
        """Dovecot's LMTP prepends Return-Path, Delivered-To (only when the
        transaction had one recipient) and its Received."""
        lines = crlf(raw).split(b"\r\n")
        self.assertEqual(lines[0], b"Return-Path: <alice@client.test>")
        i = 1
        if lines[1].startswith(b"Delivered-To: "):
            self.assertEqual(lines[1], b"Delivered-To: alice@dest.test")
            i = 2
        start = i
        self.assertTrue(lines[i].startswith(b"Received: from test.sluice ("), lines[i])
        i += 1
        while lines[i].startswith(b"\t"):
            i += 1
        self.assertIn(b"with LMTP", b"\r\n".join(lines[start:i]))
        return b"\r\n".join(lines[i:])

    def test_lmtp_delivery_read_back_over_imap_and_pop3(self):
        sent = make_message("lmtp-one", body_lines=["hello alice", ".dotted", "bye"])
        self.swaks(self.sluice.port, "alice@client.test", ["alice@dest.test"], sent)
        self.wait_log(self.sluice, "delivered id=")
        self.wait_queue_empty(self.sluice)

        (imap,) = wait_until(lambda: self.imap_messages(), 20, "the message over IMAP")
        check_relayed(self, lf(self.strip_dovecot_headers(imap)), sent)
        (pop,) = self.pop3_messages()
        self.assertEqual(crlf(pop), crlf(imap), "POP3 and IMAP disagree")
        self.assertIn("saved mail to INBOX", self.dovecot.log_text())
        self.assertEqual(list(self.bounces.glob("new/*")), [], "unexpected bounces")

    def test_unknown_user_bounces(self):
        sent = make_message("lmtp-mixed")
        self.swaks(self.sluice.port, "alice@client.test",
                   ["alice@dest.test", "nobody-here@dest.test"], sent)

        (raw,) = wait_maildir(self.bounces, 1)
        self.wait_queue_empty(self.sluice)
        dsn = Dsn(raw)
        self.assertEqual(len(dsn.recipients), 1, dsn.recipients)
        r = dsn.recipient("nobody-here@dest.test")
        self.assertEqual(r["Action"], "failed")
        self.assertEqual(r["Status"], "5.1.1")
        self.assertIn("550", r["Diagnostic-Code"])
        self.assertIn("doesn't exist", r["Diagnostic-Code"])
        self.assertIn(b"X-Test-Token: lmtp-mixed", raw)  # the original is attached
        # The other recipient of the same transaction was delivered.
        (imap,) = self.imap_messages()
        check_relayed(self, lf(self.strip_dovecot_headers(imap)), sent)

    def test_per_recipient_lmtp_replies_after_data(self):
        sent = make_message("lmtp-quota")
        self.swaks(self.sluice.port, "alice@client.test", ["alice@dest.test", "bob@dest.test"],
                   sent)

        (raw,) = wait_maildir(self.bounces, 1)
        self.wait_queue_empty(self.sluice)
        dsn = Dsn(raw)
        self.assertEqual(len(dsn.recipients), 1, dsn.recipients)
        r = dsn.recipient("bob@dest.test")
        self.assertEqual(r["Action"], "failed")
        self.assertTrue(r["Status"].startswith("5.2."), r)
        self.assertIn("uota", r["Diagnostic-Code"])
        (imap,) = self.imap_messages()
        check_relayed(self, lf(self.strip_dovecot_headers(imap)), sent)
        log = self.sluice.log_text()
        self.assertEqual(log.count("delivered id="), 2, log)  # alice, then the bounce
        self.assertEqual(log.count("bounced id="), 1, log)


if __name__ == "__main__":
    unittest.main()
