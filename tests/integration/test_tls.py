"""TLS (STARTTLS, implicit TLS) and SMTP AUTH against a real sluiced, spoken
by real clients: swaks, curl, Python smtplib/ssl and openssl s_client.

Every test makes its own certificates with scripts/dev-cert (ECDSA P-256 and
RSA-2048 for localhost / 127.0.0.1) and its own users file with real crypt(3)
hashes from mkpasswd (yescrypt, sha-512) and htpasswd (bcrypt), and starts its
own daemon: the bad-password throttle is process-wide per client address, so
no test may inherit another's failures.

Needs swaks, curl, openssl (CLI), mkpasswd (Debian package whois) and htpasswd
(apache2-utils): a missing program fails the test, it never skips.
"""

import base64
import re
import socket
import smtplib
import ssl
import time

import harness
from harness import (RECEIVED_TLS_RE, AdminDaemon, DaemonTestCase, RawSmtp, SmtpClosed, dot_stuff,
                     make_dev_certs, make_message, queued_id, require_program)
from harness import run_program as run

CRLF = b"\r\n"
TLS_HOST = "localhost"  # the certificates' DNS name (and IP:127.0.0.1)

# The client programs every test here needs (harness.PROGRAMS names their packages).
PROGRAMS = ("swaks", "curl", "openssl", "mkpasswd", "htpasswd")

# Accounts: a yescrypt, a bcrypt and a sha-512 hash; carol may only send as
# allowed.test.
USERS = {
    "alice": "alice-Pa55word",
    "bob": "b0b's password",
    "carol": "carol-secret-9",
}
SENDER_DOMAINS = {"carol": "allowed.test"}


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def plain_response(user, password):
    return b64(f"\0{user}\0{password}")


def header_fields(message, name):
    """The values of every `name:` field in the header section of a CRLF message."""
    head = message.split(b"\r\n\r\n", 1)[0]
    out = []
    prefix = name.lower().encode() + b":"
    for line in head.split(CRLF):
        if line.lower().startswith(prefix):
            out.append(line[len(prefix):].strip())
    return out


# ---------------------------------------------------------------------------
# Client-side TLS


def insecure_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def verifying_context(certs):
    """Trusts exactly the two dev certificates and checks the name."""
    ctx = ssl.create_default_context(cafile=str(certs / "ecdsa.crt"))
    ctx.load_verify_locations(cafile=str(certs / "rsa.crt"))
    return ctx


def probe_tls_greeting(port, timeout=2.0):
    """For an implicit-TLS listener: handshake, 220, QUIT."""
    try:
        with socket.create_connection((harness.LOOPBACK, port), timeout=timeout) as raw:
            with insecure_context().wrap_socket(raw, server_hostname=TLS_HOST) as s:
                c = RawSmtp(s, timeout)
                if c.reply()[0] != 220:
                    return False
                c.send(b"QUIT\r\n")
                c.reply()
                return True
    except (OSError, SmtpClosed, AssertionError):
        return False


def starttls(client, ctx=None, server_hostname=TLS_HOST):
    """STARTTLS on a greeted RawSmtp, then the handshake on its socket."""
    client.expect(220, "STARTTLS")
    if client.buf:
        raise AssertionError(f"plaintext after the STARTTLS 220: {client.buf!r}")
    client.sock = (ctx or insecure_context()).wrap_socket(client.sock,
                                                          server_hostname=server_hostname)
    return client


def ehlo_keywords(reply):
    """{KEYWORD: params} from a 250 EHLO reply (first line is the greeting)."""
    code, lines = reply
    assert code == 250, reply
    out = {}
    for line in lines[1:]:
        word, _, params = line.partition(" ")
        out[word.upper()] = params
    return out


class TlsDaemon(AdminDaemon):
    """A daemon whose implicit-TLS listeners are probed with TLS at startup (the
    harness probe speaks plaintext). The admin port is optional."""

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        for listener in self.listeners:
            port = listener["port"]
            probe = probe_tls_greeting if listener.get("tls") == "implicit" else \
                harness.probe_greeting

            def greeted():
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"sluiced exited with {self.proc.returncode} during startup:\n"
                        + self.log_text())
                return probe(port)

            harness.wait_until(greeted, max(0.1, deadline - time.monotonic()),
                               f"220 greeting on port {port}")


# ---------------------------------------------------------------------------
# Test case base


class TlsTestCase(DaemonTestCase):

    def setUp(self):
        super().setUp()
        harness.require_sluicectl()
        for name in PROGRAMS:
            require_program(name)
        self.certs = make_dev_certs(self.workdir / "certs")
        self.users_file = self.workdir / "users"
        self.users_file.write_text(self.users_text())

    def users_text(self):
        lines = ["# test users", ""]
        rc, out = run(["mkpasswd", "-m", "yescrypt", "--stdin"],
                      input=USERS["alice"].encode())
        self.assertEqual(rc, 0, out)
        self.assertTrue(out.startswith("$y$"), out)
        lines.append(f"alice:{out.strip()}")
        rc, out = run(["htpasswd", "-nbB", "bob", USERS["bob"]])
        self.assertEqual(rc, 0, out)
        self.assertTrue(out.startswith("bob:$2y$"), out)
        lines.append(out.strip())
        rc, out = run(["mkpasswd", "-m", "sha-512", "--stdin"], input=USERS["carol"].encode())
        self.assertEqual(rc, 0, out)
        self.assertTrue(out.startswith("$6$"), out)
        lines.append(f"carol:{out.strip()}:domains={SENDER_DOMAINS['carol']}")
        return "\n".join(lines) + "\n"

    def listener(self, name, tls="starttls", auth="optional", **extra):
        spec = {"name": name, "tls": tls, "auth": auth,
                "certificate": str(self.certs / "ecdsa.crt"),
                "private_key": str(self.certs / "ecdsa.key"),
                "rsa_certificate": str(self.certs / "rsa.crt"),
                "rsa_private_key": str(self.certs / "rsa.key")}
        if auth != "off":
            spec["users_file"] = str(self.users_file)
        spec.update(extra)
        return spec

    def tls_daemon(self, listeners, admin=False, server=None):
        wd = self.workdir / f"d{len(self.daemons)}"
        wd.mkdir()
        d = TlsDaemon(wd, admin=admin, listeners=listeners, server=server)
        self.daemons.append(d)
        d.start()
        return d

    def standard_daemon(self, admin=False):
        """starttls (auth optional), submission (starttls, auth required) and
        submissions (implicit, auth required)."""
        return self.tls_daemon([self.listener("relay"),
                                self.listener("submission", auth="required"),
                                self.listener("submissions", tls="implicit", auth="required")],
                               admin=admin)

    def tls_client(self, port, ctx=None):
        """Greeted, STARTTLS done, greeted again inside TLS."""
        c = self.client(port)
        starttls(c, ctx)
        c.expect(250, "EHLO client.test")
        return c

    def implicit_client(self, port, ctx=None):
        raw = socket.create_connection((harness.LOOPBACK, port), timeout=15)
        self.addCleanup(raw.close)
        s = (ctx or insecure_context()).wrap_socket(raw, server_hostname=TLS_HOST)
        c = RawSmtp(s)
        self.addCleanup(c.close)
        c.greet()
        return c

    def auth_plain(self, c, user, password=None):
        return c.cmd(f"AUTH PLAIN {plain_response(user, password or USERS[user])}")

    def spooled(self, d, qid):
        spool = d.export_spool()
        self.assertIn(qid, spool, f"queued {qid} is not in the spool: {spool}")
        return spool[qid]

    def assertSecureReceived(self, m, kind="ESMTPSA", user=None):
        """Our Received header and the envelope say TLS (and AUTH as `user`)."""
        self.assertIn(f" with {kind} id {m.id}".encode(), m.received)
        self.assertIs(m.envelope.get("tls"), True, m.envelope)
        if user is not None:
            self.assertEqual(m.envelope.get("auth_user"), user, m.envelope)
        if not kind.endswith("A"):
            self.assertEqual(m.envelope.get("auth_user"), "", m.envelope)
        # auth_header is off by default: the user name is not published.
        self.assertNotIn(b"Authenticated sender", m.received)
        match = RECEIVED_TLS_RE.search(m.received)
        self.assertIsNotNone(match, f"no '(using TLS... with cipher ...)' in {m.received!r}")
        return match.group(1).decode(), match.group(2).decode()


# ---------------------------------------------------------------------------
# 1. swaks


class SwaksTest(TlsTestCase):

    def swaks(self, port, *args):
        return run(["swaks", "--server", f"{harness.LOOPBACK}:{port}", "--helo", "swaks.test",
                    "--from", "alice@client.test", "--to", "rcpt@dest.test",
                    "--timeout", "30", *args], timeout=90)

    def check_queued(self, d, out, user):
        self.assertRegex(out, r"<~ +235 2\.7\.0", out)
        m = self.spooled(d, queued_id(out))
        version, cipher = self.assertSecureReceived(m, user=user)
        self.assertEqual(version, "TLSv1.3", m.received)
        # swaks: "=== TLS started with cipher TLSv1.3:TLS_AES_256_GCM_SHA384:256"
        started = re.search(r"TLS started with cipher (TLSv[0-9.]+):(\S+?):\d+", out)
        self.assertIsNotNone(started, out)
        self.assertEqual((version, cipher), started.groups(), m.received)
        self.assertEqual(m.sender, "alice@client.test")
        self.assertEqual(m.recipients, ["rcpt@dest.test"])
        return m

    def test_starttls_auth_plain_and_login(self):
        d = self.standard_daemon()
        port = d.port_of("submission")
        rc, out = self.swaks(port, "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                             "--auth-password", USERS["alice"])
        self.assertEqual(rc, 0, out)
        self.assertIn("<-  220 2.0.0 Ready to start TLS", out)
        self.check_queued(d, out, "alice")
        rc, out = self.swaks(port, "--tls", "--auth", "LOGIN", "--auth-user", "bob",
                             "--auth-password", USERS["bob"])
        self.assertEqual(rc, 0, out)
        self.assertIn("<~  334 VXNlcm5hbWU6", out)  # "Username:"
        self.check_queued(d, out, "bob")
        self.assertEqual(d.queue_count(), 2)

    def test_implicit_tls_auth_plain_and_login(self):
        d = self.standard_daemon()
        port = d.port_of("submissions")
        for mech, user in (("PLAIN", "bob"), ("LOGIN", "alice")):
            rc, out = self.swaks(port, "--tlsc", "--auth", mech, "--auth-user", user,
                                 "--auth-password", USERS[user])
            self.assertEqual(rc, 0, out)
            # The greeting already came inside TLS; no STARTTLS was sent.
            self.assertRegex(out, r"<~  220 test\.sluice ESMTP", out)
            self.assertNotRegex(out, r"-> STARTTLS", out)
            self.check_queued(d, out, user)
        self.assertEqual(d.queue_count(), 2)

    def test_bad_passwords_are_535_and_nothing_is_queued(self):
        d = self.standard_daemon()
        cases = (("submission", "--tls", "PLAIN", "alice"),
                 ("submissions", "--tlsc", "LOGIN", "bob"))
        for listener, tls_flag, mech, user in cases:
            rc, out = self.swaks(d.port_of(listener), tls_flag, "--auth", mech,
                                 "--auth-user", user, "--auth-password", USERS[user] + "x")
            self.assertNotEqual(rc, 0, out)
            self.assertRegex(out, r"<~\*? +535 5\.7\.8", out)
            self.assertNotRegex(out, r"<~ +235", out)
            self.assertNotIn("queued as", out)
        self.assertEqual(d.queue_count(), 0)


# ---------------------------------------------------------------------------
# 2. curl


class CurlTest(TlsTestCase):

    def curl(self, url, port, *args, user="alice", password=None):
        msg = self.workdir / "curl.eml"
        msg.write_bytes(make_message("curl-" + url.split(":")[0]))
        return run(["curl", "--silent", "--show-error", "--max-time", "60",
                    "--url", url, "--resolve", f"{TLS_HOST}:{port}:{harness.LOOPBACK}",
                    "--mail-from", f"{user}@client.test", "--mail-rcpt", "rcpt@dest.test",
                    "--upload-file", msg, "--user", f"{user}:{password or USERS[user]}",
                    "--cacert", self.certs / "ecdsa.crt", *args], timeout=90)

    def only_message(self, d):
        spool = d.export_spool()
        self.assertEqual(len(spool), 1, spool)
        return next(iter(spool.values()))

    def test_smtps_implicit_tls(self):
        d = self.standard_daemon()
        port = d.port_of("submissions")
        rc, out = self.curl(f"smtps://{TLS_HOST}:{port}/client.test", port)
        self.assertEqual(rc, 0, out)
        m = self.only_message(d)
        self.assertEqual(m.sender, "alice@client.test")
        self.assertEqual(m.recipients, ["rcpt@dest.test"])
        self.assertSecureReceived(m, user="alice")
        self.assertIn(b"X-Test-Token: curl-smtps", m.message)

    def test_smtp_starttls_ssl_reqd(self):
        d = self.standard_daemon()
        port = d.port_of("submission")
        rc, out = self.curl(f"smtp://{TLS_HOST}:{port}/client.test", port, "--ssl-reqd",
                            user="bob")
        self.assertEqual(rc, 0, out)
        m = self.only_message(d)
        self.assertEqual(m.sender, "bob@client.test")
        self.assertSecureReceived(m, user="bob")

    def test_ip_address_san_verifies(self):
        d = self.standard_daemon()
        port = d.port_of("submissions")
        rc, out = self.curl(f"smtps://{harness.LOOPBACK}:{port}/client.test", port)
        self.assertEqual(rc, 0, out)
        self.only_message(d)

    def test_wrong_password_is_login_denied(self):
        d = self.standard_daemon()
        port = d.port_of("submissions")
        rc, out = self.curl(f"smtps://{TLS_HOST}:{port}/client.test", port,
                            password="not-the-password")
        self.assertEqual(rc, 67, f"expected CURLE_LOGIN_DENIED (67): {out}")
        self.assertEqual(d.queue_count(), 0)


# ---------------------------------------------------------------------------
# 3. Python smtplib


class SmtplibTest(TlsTestCase):

    def test_starttls_login_sendmail(self):
        d = self.standard_daemon()
        ctx = verifying_context(self.certs)
        msg = make_message("smtplib-starttls",
                           extra_headers=["Date: Wed, 2 Jul 2003 10:52:37 +0200"])
        with smtplib.SMTP(harness.LOOPBACK, d.port_of("submission"), timeout=15) as s:
            s.ehlo("client.test")
            self.assertTrue(s.has_extn("starttls"), s.ehlo_resp)
            self.assertFalse(s.has_extn("auth"), f"AUTH offered before TLS: {s.ehlo_resp}")
            self.assertEqual(s.starttls(context=ctx)[0], 220)
            # The server's certificate verified against ecdsa.crt/rsa.crt for 127.0.0.1.
            self.assertEqual(s.sock.version(), "TLSv1.3")
            s.ehlo("client.test")
            self.assertFalse(s.has_extn("starttls"), f"STARTTLS offered again: {s.ehlo_resp}")
            self.assertTrue(s.has_extn("auth"), s.ehlo_resp)
            self.assertEqual(s.esmtp_features["auth"].split(), ["PLAIN", "LOGIN"])
            self.assertEqual(s.login("alice", USERS["alice"])[0], 235)
            self.assertEqual(s.sendmail("alice@client.test", ["rcpt@dest.test"], msg), {})
        m = next(iter(d.export_spool().values()))
        self.assertEqual(m.message, msg)  # Date and Message-ID present: no fix-ups
        self.assertSecureReceived(m, user="alice")

    def test_login_mechanism(self):
        d = self.standard_daemon()
        with smtplib.SMTP(harness.LOOPBACK, d.port_of("submission"), timeout=15) as s:
            s.starttls(context=insecure_context())
            s.ehlo("client.test")
            s.user, s.password = "bob", USERS["bob"]
            self.assertEqual(s.auth("LOGIN", s.auth_login)[0], 235)
            s.sendmail("bob@client.test", ["rcpt@dest.test"], make_message("smtplib-login"))
        self.assertEqual(d.queue_count(), 1)

    def test_smtp_ssl_login(self):
        d = self.standard_daemon()
        ctx = verifying_context(self.certs)
        msg = make_message("smtplib-ssl")
        with smtplib.SMTP_SSL(TLS_HOST, d.port_of("submissions"), context=ctx, timeout=15) as s:
            s.ehlo("client.test")
            self.assertFalse(s.has_extn("starttls"), s.ehlo_resp)
            self.assertTrue(s.has_extn("auth"), s.ehlo_resp)
            self.assertEqual(s.login("carol", USERS["carol"])[0], 235)
            self.assertEqual(s.sendmail("carol@allowed.test", ["rcpt@dest.test"], msg), {})
        m = next(iter(d.export_spool().values()))
        self.assertEqual(m.sender, "carol@allowed.test")
        self.assertSecureReceived(m, user="carol")

    def test_tls_without_auth_is_esmtps(self):
        d = self.standard_daemon()
        msg = make_message("smtplib-esmtps")
        with smtplib.SMTP(harness.LOOPBACK, d.port_of("relay"), timeout=15) as s:
            s.starttls(context=insecure_context())
            self.assertEqual(s.sendmail("x@client.test", ["rcpt@dest.test"], msg), {})
        m = next(iter(d.export_spool().values()))
        self.assertSecureReceived(m, kind="ESMTPS")
        self.assertEqual(m.message, msg)


# ---------------------------------------------------------------------------
# 4. openssl s_client: versions and certificate selection


NEW_SESSION_RE = re.compile(r"^New, (TLSv1(?:\.\d)?|SSLv3|\(NONE\)), Cipher is (\S+)", re.M)


def s_client(port, *args, starttls=True):
    cmd = ["openssl", "s_client", "-connect", f"{harness.LOOPBACK}:{port}",
           "-servername", TLS_HOST, "-crlf", "-ign_eof"]
    if starttls:
        cmd += ["-starttls", "smtp"]
    return run(cmd + list(args), timeout=30, input=b"QUIT\n")  # -crlf adds the CR


class OpensslTest(TlsTestCase):

    def assertHandshake(self, port, version, *args, starttls=True):
        rc, out = s_client(port, *args, starttls=starttls)
        m = NEW_SESSION_RE.search(out)
        self.assertIsNotNone(m, f"no 'New, ..., Cipher is' line:\n{out}")
        self.assertEqual(m.group(1), version, out)
        self.assertNotEqual(m.group(2), "(NONE)", out)
        self.assertRegex(out, rf"Protocol\s*:\s*{re.escape(version)}", out)
        self.assertEqual(rc, 0, out)
        # -ign_eof: s_client waits for the server to close after QUIT.
        self.assertRegex(out.split("Cipher is", 1)[1], r"(?m)^221 2\.0\.0 ",
                         "no 221 to QUIT inside TLS")
        return out

    def assertRefused(self, port, *args):
        rc, out = s_client(port, *args)
        self.assertNotEqual(rc, 0, out)
        m = NEW_SESSION_RE.search(out)
        self.assertIsNotNone(m, out)
        self.assertEqual(m.group(2), "(NONE)", out)
        self.assertNotRegex(out, r"(?m)^22[01] ", out)
        return out

    def test_versions(self):
        d = self.standard_daemon()
        port = d.port_of("relay")
        self.assertHandshake(port, "TLSv1.2", "-tls1_2")
        self.assertHandshake(port, "TLSv1.3", "-tls1_3")
        self.assertHandshake(d.port_of("submissions"), "TLSv1.3", starttls=False)
        # SECLEVEL=0 so that the client really offers the old versions: the
        # refusal must come from the server.
        for old in ("-tls1_1", "-tls1"):
            self.assertRefused(port, old, "-cipher", "DEFAULT:@SECLEVEL=0")
        harness.wait_until(
            lambda: d.log_text().count("failed on relay: TLS handshake failed: "
                                       "error:100000f0:SSL routines:OPENSSL_internal:"
                                       "UNSUPPORTED_PROTOCOL") == 2,
            10, "two UNSUPPORTED_PROTOCOL handshake failures in the daemon's log")
        # The daemon is still fine afterwards.
        self.assertHandshake(port, "TLSv1.3")

    def test_min_version_13(self):
        d = self.tls_daemon([self.listener("tls13", tls_min_version="1.3"),
                             self.listener("implicit13", tls="implicit", tls_min_version="1.3")])
        self.assertRefused(d.port_of("tls13"), "-tls1_2")
        self.assertHandshake(d.port_of("tls13"), "TLSv1.3", "-tls1_3")
        rc, out = s_client(d.port_of("implicit13"), "-tls1_2", starttls=False)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("Cipher is (NONE)", out)
        self.assertNotRegex(out, r"(?m)^220 ", out)
        self.assertHandshake(d.port_of("implicit13"), "TLSv1.3", starttls=False)

    def test_refused_version_gets_protocol_version_alert(self):
        # RFC 8446 §4.2.1 (and RFC 5246 E.1): a server that will not speak the
        # client's version aborts the handshake with a protocol_version alert;
        # the client must learn why instead of seeing the connection drop.
        d = self.tls_daemon([self.listener("tls13", tls_min_version="1.3"),
                             self.listener("tls12"),
                             self.listener("implicit13", tls="implicit", tls_min_version="1.3")])
        only12 = insecure_context()
        only12.maximum_version = ssl.TLSVersion.TLSv1_2
        for name in ("tls13", "implicit13"):
            with self.subTest(listener=name, client="Python ssl, TLS 1.2 at most"):
                raw = socket.create_connection((harness.LOOPBACK, d.port_of(name)), timeout=15)
                self.addCleanup(raw.close)
                if name == "tls13":
                    c = RawSmtp(raw)
                    c.greet()
                    c.expect(220, "STARTTLS")
                with self.assertRaises(ssl.SSLError) as cm:
                    only12.wrap_socket(raw, server_hostname=TLS_HOST)
                self.assertIn("ALERT_PROTOCOL_VERSION", str(cm.exception),
                              f"no protocol_version alert from the server: {cm.exception!r}")
        with self.subTest(listener="tls12", client="openssl s_client -tls1_1"):
            out = self.assertRefused(d.port_of("tls12"), "-tls1_1", "-cipher",
                                     "DEFAULT:@SECLEVEL=0")
            self.assertIn("alert protocol version", out)

    def test_rsa_only_client_gets_rsa_certificate(self):
        d = self.standard_daemon()
        port = d.port_of("relay")
        rsa_args = ("-verify_return_error", "-verify_hostname", TLS_HOST,
                    "-CAfile", self.certs / "rsa.crt")
        out = self.assertHandshake(port, "TLSv1.2", "-tls1_2",
                                   "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256",
                                   "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", *rsa_args)
        self.assertIn("Server public key is 2048 bit", out)
        self.assertIn("Cipher is ECDHE-RSA-AES128-GCM-SHA256", out)
        self.assertRegex(out, r"Verify return code: 0 \(ok\)", out)
        # TLS 1.3 client that only accepts RSA-PSS signatures.
        out = self.assertHandshake(port, "TLSv1.3", "-tls1_3", "-sigalgs",
                                   "rsa_pss_rsae_sha256", *rsa_args)
        self.assertIn("Server public key is 2048 bit", out)
        # A default client gets the (preferred) ECDSA certificate.
        for version in ("-tls1_2", "-tls1_3"):
            out = self.assertHandshake(port, "TLSv1.2" if version == "-tls1_2" else "TLSv1.3",
                                       version, "-verify_return_error", "-verify_hostname",
                                       TLS_HOST, "-CAfile", self.certs / "ecdsa.crt")
            self.assertIn("Server public key is 256 bit", out)
            self.assertRegex(out, r"Verify return code: 0 \(ok\)", out)


# ---------------------------------------------------------------------------
# 5. STARTTLS sequencing and the plaintext injection (CVE-2011-0411)


class StartTlsInjectionTest(TlsTestCase):

    def test_pipelined_command_after_starttls_is_discarded(self):
        d = self.standard_daemon()
        for _ in range(2):
            c = self.client(d.port_of("relay"))
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.send(b"STARTTLS\r\nRSET\r\n")  # one write, one segment
            code, lines = c.reply()
            self.assertEqual(code, 220, lines)
            self.assertEqual(c.buf, b"", "plaintext reply after the STARTTLS 220 (to RSET?)")
            c.sock = insecure_context().wrap_socket(c.sock, server_hostname=TLS_HOST)
            c.send(b"EHLO inside.test\r\n")
            first = c.reply()
            self.assertEqual(first[0], 250, first)
            self.assertGreater(len(first[1]), 1, f"first reply inside TLS is not the EHLO "
                                                  f"reply (the injected RSET was answered): "
                                                  f"{first}")
            self.assertIn("greets", first[1][0], first)
            # Nothing else is pending: the next reply is the one to HELP.
            self.assertEqual(c.cmd("HELP")[0], 214)
            c.expect(250, "MAIL FROM:<a@client.test>")
            c.expect(221, "QUIT")

    def test_pipelined_auth_after_starttls_is_discarded(self):
        # A plaintext AUTH smuggled behind STARTTLS must not authenticate the
        # TLS session (it would be answered 538 at most, but must not be at all).
        d = self.standard_daemon()
        c = self.client(d.port_of("submission"))
        c.send(f"STARTTLS\r\nAUTH PLAIN {plain_response('alice', USERS['alice'])}\r\n"
               f"MAIL FROM:<alice@client.test>\r\n".encode())
        c.expect(220)
        self.assertEqual(c.buf, b"")
        c.sock = insecure_context().wrap_socket(c.sock, server_hostname=TLS_HOST)
        self.assertIn("AUTH", ehlo_keywords(c.cmd("EHLO inside.test")))
        got = c.cmd("MAIL FROM:<alice@client.test>")
        self.assertEqual(got[0], 530, f"not authenticated inside TLS: {got}")

    def test_second_starttls_is_503(self):
        d = self.standard_daemon()
        c = self.tls_client(d.port_of("relay"))
        self.assertReply(c.cmd("STARTTLS"), 503, "5.5.1")
        c.expect(250, "NOOP")  # still inside TLS, still talking
        c = self.implicit_client(d.port_of("submissions"))
        self.assertReply(c.cmd("STARTTLS"), 503, "5.5.1")
        c.expect(250, "NOOP")

    def test_starttls_with_argument_is_501(self):
        d = self.standard_daemon()
        c = self.client(d.port_of("relay"))
        self.assertReply(c.cmd("STARTTLS now"), 501, "5.5.4")
        # Still plaintext, and STARTTLS without argument works.
        starttls(c)
        c.expect(250, "EHLO client.test")

    def test_starttls_not_offered_without_tls(self):
        d = self.tls_daemon([self.listener("plain", tls="none", auth="off")])
        c = self.client(d.port)
        self.assertNotIn("STARTTLS", ehlo_keywords(c.cmd("EHLO client.test")))
        self.assertReply(c.cmd("STARTTLS"), 502, "5.5.1")

    def test_ehlo_is_forgotten_after_starttls(self):
        d = self.standard_daemon()
        c = self.client(d.port_of("relay"))
        c.expect(250, "MAIL FROM:<a@client.test>")  # a transaction before TLS
        starttls(c)
        # RFC 3207 §4.2: the state is reset; no EHLO yet, no transaction.
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 503, "5.5.1")
        c.expect(250, "EHLO client.test")
        self.assertReply(c.cmd("RCPT TO:<r@dest.test>"), 503, "5.5.1")


# ---------------------------------------------------------------------------
# 6. AUTH policy


class AuthPolicyTest(TlsTestCase):

    def test_auth_before_tls_is_538(self):
        d = self.standard_daemon()
        c = self.client(d.port_of("submission"), greet=False)
        c.expect(220)
        kw = ehlo_keywords(c.cmd("EHLO client.test"))
        self.assertIn("STARTTLS", kw)
        self.assertNotIn("AUTH", kw)
        self.assertReply(self.auth_plain(c, "alice"), 538, "5.7.11")
        self.assertReply(c.cmd("AUTH LOGIN"), 538, "5.7.11")
        # Not authenticated by any of that.
        self.assertReply(c.cmd("MAIL FROM:<alice@client.test>"), 530, "5.7.0")
        starttls(c)
        kw = ehlo_keywords(c.cmd("EHLO client.test"))
        self.assertEqual(kw.get("AUTH"), "PLAIN LOGIN")
        self.assertReply(self.auth_plain(c, "alice"), 235, "2.7.0")
        # Once authenticated, AUTH is no longer offered.
        self.assertNotIn("AUTH", ehlo_keywords(c.cmd("EHLO client.test")))

    def test_mail_without_auth_on_required_listener_is_530(self):
        d = self.standard_daemon()
        for c in (self.tls_client(d.port_of("submission")),
                  self.implicit_client(d.port_of("submissions"))):
            self.assertReply(c.cmd("MAIL FROM:<alice@client.test>"), 530, "5.7.0")
            self.assertReply(self.auth_plain(c, "alice"), 235, "2.7.0")
            c.expect(250, "MAIL FROM:<alice@client.test>")
            c.expect(250, "RCPT TO:<rcpt@dest.test>")
            c.expect(250, "RSET")

    def relay_daemon(self):
        # 127.0.0.1 is not in mynetworks here: an untrusted client.
        return self.tls_daemon([self.listener("relay", mynetworks=["10.0.0.0/8"])])

    def test_unauthenticated_untrusted_client_cannot_relay(self):
        d = self.relay_daemon()
        c = self.tls_client(d.port)
        c.expect(250, "MAIL FROM:<someone@client.test>")
        self.assertReply(c.cmd("RCPT TO:<victim@foreign.test>"), 550, "5.7.1")
        self.assertReply(c.cmd("DATA"), 554)  # no valid recipient
        self.assertEqual(d.queue_count(), 0)

    def test_authenticated_client_relays_anywhere(self):
        d = self.relay_daemon()
        c = self.tls_client(d.port)
        self.assertReply(self.auth_plain(c, "bob"), 235, "2.7.0")
        msg = make_message("auth-relay")
        code, text = send_message_checked(c, "bob@client.test",
                                          ["victim@foreign.test", "other@[192.0.2.1]"], msg)
        self.assertEqual(code, 250, text)
        m = self.spooled(d, queued_id(text))
        self.assertEqual(m.recipients, ["victim@foreign.test", "other@[192.0.2.1]"])
        self.assertSecureReceived(m, user="bob")

    def test_auth_header_names_the_user(self):
        d = self.tls_daemon([self.listener("sub", auth="required", auth_header=True)])
        c = self.tls_client(d.port)
        self.assertReply(self.auth_plain(c, "alice"), 235, "2.7.0")
        code, text = send_message_checked(c, "alice@client.test", ["rcpt@dest.test"],
                                          make_message("auth-header"))
        self.assertEqual(code, 250, text)
        m = self.spooled(d, queued_id(text))
        self.assertIn(b"\r\n\t(Authenticated sender: alice)\r\n", m.received)
        self.assertIn(b" with ESMTPSA id ", m.received)

    def test_sender_domain_restriction(self):
        d = self.standard_daemon()
        c = self.tls_client(d.port_of("submission"))
        self.assertReply(self.auth_plain(c, "carol"), 235, "2.7.0")
        got = c.cmd("MAIL FROM:<carol@other.test>")
        self.assertReply(got, 553, "5.7.1")
        self.assertIn("carol", got[1][-1])
        self.assertReply(c.cmd("MAIL FROM:<carol@allowed.test.evil>"), 553, "5.7.1")
        self.assertReply(c.cmd("MAIL FROM:<>"), 553, "5.7.1")
        c.expect(250, "MAIL FROM:<carol@Allowed.TEST>")  # domains compare case-insensitively
        c.expect(250, "RSET")
        # alice has no domain list: any sender.
        c2 = self.tls_client(d.port_of("submission"))
        self.assertReply(self.auth_plain(c2, "alice"), 235, "2.7.0")
        c2.expect(250, "MAIL FROM:<alice@anything.test>")

    def test_auth_twice_is_503(self):
        d = self.standard_daemon()
        c = self.tls_client(d.port_of("submission"))
        self.assertReply(self.auth_plain(c, "alice"), 235, "2.7.0")
        self.assertReply(self.auth_plain(c, "bob"), 503, "5.5.1")
        self.assertReply(c.cmd("AUTH LOGIN"), 503, "5.5.1")

    def test_auth_during_transaction_is_503(self):
        d = self.standard_daemon()
        c = self.tls_client(d.port_of("relay"))
        c.expect(250, "MAIL FROM:<x@client.test>")
        self.assertReply(self.auth_plain(c, "alice"), 503, "5.5.1")

    def test_cancel_is_501(self):
        d = self.standard_daemon()
        c = self.tls_client(d.port_of("submission"))
        code, lines = c.cmd("AUTH LOGIN")
        self.assertEqual((code, lines), (334, ["VXNlcm5hbWU6"]))
        self.assertReply(c.cmd("*"), 501, "5.7.0")
        c.expect(334, "AUTH LOGIN")
        c.expect(334, b64("alice"))
        self.assertReply(c.cmd("*"), 501, "5.7.0")
        code, lines = c.cmd("AUTH PLAIN")
        self.assertEqual(code, 334, lines)
        self.assertReply(c.cmd("*"), 501, "5.7.0")
        # Not authenticated; a fresh exchange works.
        self.assertReply(c.cmd("MAIL FROM:<alice@client.test>"), 530, "5.7.0")
        self.assertReply(self.auth_plain(c, "alice"), 235, "2.7.0")

    def test_malformed_base64_is_501(self):
        d = self.standard_daemon()
        c = self.tls_client(d.port_of("submission"))
        self.assertReply(c.cmd("AUTH PLAIN not*base64!"), 501, "5.5.2")
        c.expect(334, "AUTH LOGIN")
        self.assertReply(c.cmd("%%%"), 501, "5.5.2")
        c.expect(334, "AUTH PLAIN")
        self.assertReply(c.cmd("AAA"), 501, "5.5.2")  # bad length
        self.assertReply(c.cmd("AUTH CRAM-MD5"), 504, "5.5.4")
        # None of it counted as a password failure: no 421, and a good one works.
        self.assertReply(self.auth_plain(c, "alice"), 235, "2.7.0")


    def test_auth_before_starttls_is_forgotten(self):
        """RFC 3207 §4.2: an AUTH done in plaintext (allow_plaintext_auth) is
        discarded by STARTTLS; otherwise a man in the middle could log the
        victim's TLS session in as the attacker's account."""
        d = self.tls_daemon([self.listener("sub", auth="required", allow_plaintext_auth=True)])
        c = self.client(d.port)
        self.assertReply(self.auth_plain(c, "bob"), 235, "2.7.0")
        c.expect(250, "MAIL FROM:<bob@client.test>")  # authenticated in plaintext
        c.expect(250, "RSET")
        starttls(c)
        kw = ehlo_keywords(c.cmd("EHLO client.test"))
        self.assertEqual(kw.get("AUTH"), "PLAIN LOGIN")  # offered again: nobody is logged in
        self.assertReply(c.cmd("MAIL FROM:<bob@client.test>"), 530, "5.7.0")
        self.assertReply(self.auth_plain(c, "alice"), 235, "2.7.0")
        code, text = send_message_checked(c, "alice@client.test", ["rcpt@dest.test"],
                                          make_message("after-starttls"))
        self.assertEqual(code, 250, text)
        m = self.spooled(d, queued_id(text))
        self.assertSecureReceived(m, user="alice")


def send_message_checked(c, sender, recipients, message):
    c.expect(250, f"MAIL FROM:<{sender}>")
    for r in recipients:
        c.expect(250, f"RCPT TO:<{r}>")
    c.expect(354, "DATA")
    c.send(dot_stuff(message) + b".\r\n")
    code, lines = c.reply()
    return code, "\n".join(lines)


# ---------------------------------------------------------------------------
# 7. Bad-password throttle


class ThrottleTest(TlsTestCase):

    def test_failures_slow_down_then_421(self):
        d = self.standard_daemon()
        c = self.tls_client(d.port_of("submission"))
        c.sock.settimeout(30)  # the 5th failure waits 8 s
        elapsed = []
        for i in range(5):
            t0 = time.monotonic()
            got = self.auth_plain(c, "alice", "wrong-%d" % i)
            elapsed.append(time.monotonic() - t0)
            self.assertReply(got, 535, "5.7.8")
        # Lower bounds only (1, 2, 4, 8, 8 s nominal): a slow machine only adds.
        for i, (took, nominal) in enumerate(zip(elapsed, (1, 2, 4, 8, 8))):
            self.assertGreaterEqual(took, nominal * 0.9, f"failure {i + 1} answered after "
                                                         f"{took:.2f} s: {elapsed}")
        # The sixth attempt, even with the right password, is refused and closed.
        got = self.auth_plain(c, "alice")
        self.assertReply(got, 421, "4.7.0")
        c.wait_closed()
        # Process-wide per client address: a new connection is refused too.
        c2 = self.implicit_client(d.port_of("submissions"))
        self.assertReply(self.auth_plain(c2, "bob"), 421, "4.7.0")
        c2.wait_closed()
        self.assertEqual(d.queue_count(), 0)

    def test_success_does_not_reset_the_count_and_the_network_is_the_key(self):
        """A valid account buys no extra guesses, and the count belongs to the
        client's network (server.client_ipv4_prefix = 24 here; IPv6 clients
        are keyed by their /64 the same way): failures from five addresses of
        one /24 block a sixth."""
        d = self.tls_daemon([self.listener("plain", tls="none", auth="optional",
                                           allow_plaintext_auth=True)],
                            server={"client_ipv4_prefix": 24})

        def attempt(source, user, password=None):
            c = self.client(d.port, source=source)
            c.sock.settimeout(30)  # failures wait 1, 2, 4, 8 s
            return self.auth_plain(c, user, password)

        for i in range(4):
            self.assertReply(attempt(f"127.0.0.{10 + i}", "alice", "wrong"), 535, "5.7.8")
        # The attacker's own account works, and changes nothing.
        self.assertReply(attempt("127.0.0.20", "bob"), 235, "2.7.0")
        self.assertReply(attempt("127.0.0.21", "alice", "wrong"), 535, "5.7.8")
        # Five failures in the network: the next attempt is refused, even
        # with the right password, from yet another address of it.
        self.assertReply(attempt("127.0.0.22", "alice"), 421, "4.7.0")
        # Another /24 is another client.
        self.assertReply(attempt("127.0.1.1", "alice"), 235, "2.7.0")

# ---------------------------------------------------------------------------
# 8. Submission fix-ups


class SubmissionFixupsTest(TlsTestCase):

    def submit(self, port, msg, user="alice", implicit=True):
        c = (self.implicit_client(port) if implicit else self.tls_client(port))
        if user:
            self.assertReply(self.auth_plain(c, user), 235, "2.7.0")
        c.expect(250, f"MAIL FROM:<{user or 'anon'}@client.test>")
        c.expect(250, "RCPT TO:<rcpt@dest.test>")
        c.expect(354, "DATA")
        c.send(dot_stuff(msg) + b".\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 250, lines)
        return queued_id(lines)

    BARE = (b"From: <alice@client.test>\r\nTo: <rcpt@dest.test>\r\nSubject: bare\r\n"
            b"\r\nno Date, no Message-ID\r\n")

    def test_missing_date_and_message_id_are_added(self):
        d = self.standard_daemon()
        qid = self.submit(d.port_of("submissions"), self.BARE)
        m = self.spooled(d, qid)
        self.assertTrue(m.message.endswith(self.BARE), m.message)
        added = m.message[:-len(self.BARE)]
        self.assertEqual(header_fields(m.message, "Message-ID"),
                         [f"<{qid}@{harness.HOSTNAME}>".encode()], m.message)
        dates = header_fields(m.message, "Date")
        self.assertEqual(len(dates), 1, m.message)
        self.assertRegex(dates[0].decode(),
                         r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} [A-Z][a-z]{2} \d{4} "
                         r"\d\d:\d\d:\d\d [+-]\d{4}$")
        self.assertEqual(sorted(l.split(b":")[0] for l in added.split(CRLF) if l),
                         [b"Date", b"Message-ID"], added)

    def test_present_date_and_message_id_are_kept(self):
        d = self.standard_daemon()
        msg = make_message("fixups-keep", extra_headers=[
            "Date: Tue, 1 Jul 2003 10:52:37 +0200"])
        qid = self.submit(d.port_of("submission"), msg, implicit=False)
        m = self.spooled(d, qid)
        self.assertEqual(m.message, msg)
        self.assertEqual(header_fields(m.message, "Message-ID"), [b"<fixups-keep@client.test>"])
        self.assertEqual(header_fields(m.message, "Date"), [b"Tue, 1 Jul 2003 10:52:37 +0200"])

    def test_header_names_are_case_insensitive(self):
        d = self.standard_daemon()
        msg = (b"From: <alice@client.test>\r\nDATE: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
               b"message-id: <lower@client.test>\r\n\r\nbody\r\n")
        m = self.spooled(d, self.submit(d.port_of("submissions"), msg))
        self.assertEqual(m.message, msg)

    def test_unauthenticated_mail_is_not_fixed_up(self):
        d = self.standard_daemon()
        m = self.spooled(d, self.submit(d.port_of("relay"), self.BARE, user=None,
                                        implicit=False))
        self.assertEqual(m.message, self.BARE)

    def test_fixups_can_be_turned_off(self):
        d = self.tls_daemon([self.listener("sub", tls="implicit", auth="required",
                                           submission_fixups=False)])
        m = self.spooled(d, self.submit(d.port, self.BARE))
        self.assertEqual(m.message, self.BARE)


# ---------------------------------------------------------------------------
# 9. Metrics


class TlsMetricsTest(TlsTestCase):

    def test_handshake_and_auth_counters(self):
        d = self.standard_daemon(admin=True)
        before = d.scrape()
        self.assertTrue(before.has("sluice_tls_handshakes_total", listener="relay",
                                   version="none", result="failure"), before.text)

        # 2 good STARTTLS on "submission" (TLS 1.3 and 1.2), 1 good implicit.
        c = self.tls_client(d.port_of("submission"))
        self.assertReply(self.auth_plain(c, "alice"), 235, "2.7.0")             # plain ok
        c.expect(221, "QUIT")
        ctx12 = insecure_context()
        ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
        c = self.tls_client(d.port_of("submission"), ctx12)
        c.expect(334, "AUTH LOGIN")
        c.expect(334, b64("bob"))
        self.assertReply(c.cmd(b64(USERS["bob"])), 235, "2.7.0")                 # login ok
        c.expect(221, "QUIT")
        c = self.implicit_client(d.port_of("submissions"))
        self.assertReply(self.auth_plain(c, "bob", "wrong"), 535, "5.7.8")       # plain fail
        c.expect(221, "QUIT")
        # 1 failed handshake on "relay": garbage instead of a ClientHello.
        c = self.client(d.port_of("relay"))
        c.expect(220, "STARTTLS")
        c.send(b"this is not TLS\r\n" * 20)
        c.wait_closed()

        def delta(name, **match):
            return d.scrape().sum(name, **match) - before.sum(name, **match)

        harness.wait_until(lambda: delta("sluice_tls_handshakes_total") >= 4, 10,
                           "4 handshakes counted")
        after = d.scrape()

        def diff(name, **match):
            return after.sum(name, **match) - before.sum(name, **match)

        hs = "sluice_tls_handshakes_total"
        self.assertEqual(diff(hs, result="ok"), 3, after.text)
        self.assertEqual(diff(hs, listener="submission", version="TLSv1.3", result="ok"), 1)
        self.assertEqual(diff(hs, listener="submission", version="TLSv1.2", result="ok"), 1)
        self.assertEqual(diff(hs, listener="submissions", version="TLSv1.3", result="ok"), 1)
        self.assertEqual(diff(hs, listener="relay", version="none", result="failure"), 1)
        self.assertEqual(diff(hs, result="failure"), 1)
        au = "sluice_smtpd_auth_total"
        self.assertEqual(diff(au, listener="submission", mechanism="plain", result="success"),
                         1, after.text)
        self.assertEqual(diff(au, listener="submission", mechanism="login", result="success"),
                         1, after.text)
        self.assertEqual(diff(au, listener="submissions", mechanism="plain", result="failure"),
                         1, after.text)
        self.assertEqual(diff(au), 3, after.text)
        self.assertEqual(after.types.get(hs), "counter")
        self.assertEqual(after.types.get(au), "counter")
