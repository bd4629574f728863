"""Outbound TLS and smarthost AUTH: a real sluiced delivering over a
smarthost route to a second sluiced (STARTTLS listener, a dev-cert
certificate) or to a stalling STARTTLS server written here.

  - tls = "opportunistic" to a STARTTLS server: TLS is used although the
    certificate does not verify (result "unverified"); tls = "disabled" does
    not even try;
  - tls = "required" to a server whose certificate does not verify (a
    self-signed dev-cert): nothing is delivered, the message is deferred with
    4.7.5 "TLS handshake failed" and stays in the spool (with or without
    tls_server_name: it is the CA, not the name, that fails);
  - tls = "opportunistic" to a server whose handshake stalls: after
    [delivery] tls_timeout the client gives up, reconnects in plaintext at
    once, skips STARTTLS with that host from then on, and the mail arrives;
  - auth_user / auth_password to a smarthost with auth = "required": the
    message arrives as ESMTPSA; a wrong password defers with 4.7.8.

The client trusts /etc/ssl/certs/ca-certificates.crt only (not configurable
per route yet), so "required" cannot succeed against a test certificate;
there is no test of a verified delivery.

Needs openssl (scripts/dev-cert) and mkpasswd (Debian package whois): a
missing program fails the test, it never skips.

    cd tests/integration && python3 -m unittest -v test_outbound_tls
"""

import socket
import threading
import time

import harness
from harness import (RECEIVED_TLS_RE, SLOW_RETRY_DELIVERY, DaemonTestCase, make_dev_certs,
                     make_message, require_program, wait_until)
from harness import run_program as run

DEST = "dest.test"
SENDER = "alice@sender.test"

# One attempt per test unless it says otherwise.
DELIVERY = dict(SLOW_RETRY_DELIVERY, tls_timeout=5)

RELAY_USER = "relayuser"
RELAY_PASSWORD = "s3cret relay pass"


# ---------------------------------------------------------------------------
# A STARTTLS server whose handshake stalls


class StallSession:
    def __init__(self, index):
        self.index = index
        self.commands = []        # every command line, decoded
        self.starttls = False     # STARTTLS was sent (and answered 220)
        self.after_starttls = b""  # bytes received after our 220 to STARTTLS (ClientHello)
        self.messages = []        # DATA payloads accepted with 250
        self.closed_by_peer = False
        self.ended = False
        self.ended_at = None


class StallServer:
    """ESMTP on 127.0.0.1:port offering STARTTLS. STARTTLS is answered 220;
    then the server reads whatever comes (a ClientHello), never answers and
    holds the connection until the peer closes it (or stop()). A session
    without STARTTLS is a plain ESMTP transaction: every RCPT and every
    message get 250. One thread accepts, one thread per session; every
    socket polls with a short timeout so that stop() is prompt."""

    IDLE = 60.0

    def __init__(self):
        self._lock = threading.Lock()
        self.sessions = []
        self._stop = threading.Event()
        self._threads = []
        self._conns = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((harness.LOOPBACK, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._accept = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"stall-accept-{self.port}")
        self._accept.start()

    def stop(self, timeout=10.0):
        self._stop.set()
        self._accept.join(timeout)
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            raise AssertionError(f"stall server sessions did not end: {alive}")

    def snapshot(self):
        with self._lock:
            return list(self.sessions)

    def _accept_loop(self):
        for _ in range(100_000_000):
            if self._stop.is_set():
                return
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                s = StallSession(len(self.sessions) + 1)
                self.sessions.append(s)
                self._conns.add(conn)
                t = threading.Thread(target=self._session, args=(conn, s), daemon=True,
                                     name=f"stall-session-{s.index}")
                self._threads.append(t)
            t.start()

    def _session(self, conn, s):
        try:
            self._run(conn, s)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self._lock:
                self._conns.discard(conn)
                s.ended = True
                s.ended_at = time.monotonic()

    def _recv(self, conn, s, deadline):
        """Next chunk; None at EOF, stop or the idle deadline."""
        for _ in range(1_000_000):
            if self._stop.is_set() or time.monotonic() > deadline:
                return None
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                s.closed_by_peer = True
                return None
            if not chunk:
                s.closed_by_peer = True
                return None
            return chunk
        return None

    def _run(self, conn, s):
        conn.settimeout(0.1)
        conn.sendall(b"220 stall.test ESMTP stall\r\n")
        buf = b""
        deadline = time.monotonic() + self.IDLE
        sender, rcpts = None, []

        def line():
            nonlocal buf
            for _ in range(100_000):
                i = buf.find(b"\r\n")
                if i >= 0:
                    out, buf = buf[:i], buf[i + 2:]
                    return out
                chunk = self._recv(conn, s, deadline)
                if chunk is None:
                    return None
                buf += chunk
            return None

        for _ in range(10_000):
            raw = line()
            if raw is None:
                return
            cmd = raw.decode(errors="replace")
            with self._lock:
                s.commands.append(cmd)
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                conn.sendall(b"250-stall.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                             b"250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n")
            elif verb == "STARTTLS":
                with self._lock:
                    s.starttls = True
                conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                # The stall: take the ClientHello (and anything after), answer nothing.
                if buf:
                    with self._lock:
                        s.after_starttls += buf
                for _ in range(1_000_000):
                    chunk = self._recv(conn, s, deadline)
                    if chunk is None:
                        return
                    with self._lock:
                        s.after_starttls += chunk
                return
            elif verb == "MAIL":
                sender, rcpts = cmd, []
                conn.sendall(b"250 2.1.0 ok\r\n")
            elif verb == "RCPT":
                rcpts.append(cmd)
                conn.sendall(b"250 2.1.5 ok\r\n")
            elif verb == "DATA":
                conn.sendall(b"354 go ahead\r\n")
                parts = []
                for _ in range(10_000_000):
                    l = line()
                    if l is None:
                        return
                    if l == b".":
                        break
                    parts.append((l[1:] if l.startswith(b".") else l) + b"\r\n")
                with self._lock:
                    s.messages.append(b"".join(parts))
                conn.sendall(b"250 2.0.0 Ok: stored\r\n")
                sender, rcpts = None, []
            elif verb in ("RSET", "NOOP"):
                conn.sendall(b"250 2.0.0 ok\r\n")
            elif verb == "QUIT":
                conn.sendall(b"221 2.0.0 bye\r\n")
                return
            else:
                conn.sendall(b"502 5.5.2 not implemented\r\n")


# ---------------------------------------------------------------------------
# Test case base


class OutboundTlsTestCase(DaemonTestCase):

    def setUp(self):
        super().setUp()
        harness.require_sluicectl()
        self.certs = make_dev_certs(self.workdir / "certs")

    def tls_listener(self, **extra):
        spec = {"name": "in", "tls": "starttls",
                "certificate": str(self.certs / "ecdsa.crt"),
                "private_key": str(self.certs / "ecdsa.key"),
                "rsa_certificate": str(self.certs / "rsa.crt"),
                "rsa_private_key": str(self.certs / "rsa.key")}
        spec.update(extra)
        return spec

    def relay(self, port, delivery=None, **route):
        """The sluiced under test, with its event log: dest.test goes to 127.0.0.1:port."""
        conf = dict(DELIVERY)
        conf.update(delivery or {})
        r = {"name": "smarthost", "domains": [DEST], "type": "smarthost",
             "host": harness.LOOPBACK, "port": port}
        r.update(route)
        return self.daemon(admin=True, event_log=True, delivery=conf, routes=[r])

    def receiver(self, **listener):
        """A second sluiced with a STARTTLS listener and an admin port (for its
        command counts), delivery off: its spool is where delivered mail shows up."""
        return self.daemon(admin=True, listeners=[self.tls_listener(**listener)])

    def submit(self, d, token, rcpt=f"bob@{DEST}"):
        msg = make_message(token)
        return self.send(d.port, SENDER, [rcpt], msg), msg

    def tls_count(self, d, result):
        return d.scrape().sum("sluice_delivery_tls_total", result=result)

    def commands(self, d, verb):
        """How many `verb` commands (lower case) the daemon d received."""
        return d.scrape().sum("sluice_smtpd_commands_total", command=verb)

    def wait_spooled(self, d, n, timeout=30):
        wait_until(lambda: d.queue_count() >= n, timeout, f"{n} message(s) in {d.workdir}'s spool",
                   interval=0.1)
        spool = d.export_spool()
        self.assertEqual(len(spool), n, spool)
        return spool


# ---------------------------------------------------------------------------
# Opportunistic and disabled to a STARTTLS sluiced


class OpportunisticTest(OutboundTlsTestCase):

    def test_opportunistic_uses_tls_without_verification(self):
        rx = self.receiver()
        d = self.relay(rx.port, tls="opportunistic")
        qid, msg = self.submit(d, "opportunistic")
        (m,) = self.wait_spooled(rx, 1).values()
        wait_until(lambda: d.queue_count() == 0, 30, "the relay's spool to drain", interval=0.1)
        self.assertEqual(m.recipients, [f"bob@{DEST}"])
        self.assertIn(b" with ESMTPS id ", m.received, m.received)
        self.assertIsNotNone(RECEIVED_TLS_RE.search(m.received), m.received)
        # What the receiver stored after its own Received: the relay's Received, then msg.
        ours, original = harness.split_received(m.message)
        self.assertIn(f" id {qid}".encode(), ours)
        self.assertEqual(original, msg)
        self.assertGreaterEqual(self.tls_count(d, "unverified"), 1)
        self.assertEqual(self.tls_count(d, "verified"), 0)
        self.assertEqual(self.tls_count(d, "failed"), 0)
        d.wait_events("delivered", id=qid, recipient=f"bob@{DEST}")

    def test_disabled_does_not_starttls(self):
        rx = self.receiver()
        d = self.relay(rx.port, tls="disabled")
        self.submit(d, "disabled")
        (m,) = self.wait_spooled(rx, 1).values()
        self.assertIn(b" with ESMTP id ", m.received, m.received)
        self.assertIsNone(RECEIVED_TLS_RE.search(m.received), m.received)
        self.assertEqual(d.scrape().sum("sluice_delivery_tls_total"), 0)


# ---------------------------------------------------------------------------
# 2. required + a certificate that does not verify


class RequiredTest(OutboundTlsTestCase):

    # Long enough that a handshake which merely times out cannot pass for a
    # verification failure: that one is over in a round trip or two.
    TLS_TIMEOUT = 20

    def check_not_delivered(self, **route):
        rx = self.receiver()
        d = self.relay(rx.port, tls="required", delivery={"tls_timeout": self.TLS_TIMEOUT},
                       **route)
        t0 = time.monotonic()
        qid, msg = self.submit(d, "required")
        [e] = d.wait_events("deferred", id=qid, recipient=f"bob@{DEST}",
                            timeout=self.TLS_TIMEOUT + 15)
        elapsed = time.monotonic() - t0
        reply = e["reply"]
        self.assertEqual(e["code"], 451, e)
        self.assertTrue(reply.startswith("451 4.7.5 "), e)
        self.assertIn("TLS handshake failed", reply)
        # The reason is the certificate, not a stalled handshake.
        self.assertNotIn("timed out", reply)
        self.assertRegex(reply, r"CERTIFICATE_VERIFY_FAILED|certificate")
        self.assertLess(elapsed, self.TLS_TIMEOUT / 2,
                        f"the deferral took {elapsed:.1f} s: the handshake ran into "
                        f"tls_timeout instead of failing verification")
        # No plaintext fallback for "required": one handshake, which failed, and
        # no connection that skipped TLS.
        self.assertEqual(self.tls_count(d, "failed"), 1)
        self.assertEqual(self.tls_count(d, "skipped_broken"), 0)
        self.assertEqual(self.tls_count(d, "unverified"), 0)
        # The message stays with the relay; the receiver never got a MAIL.
        spool = d.export_spool()
        self.assertEqual(list(spool), [qid])
        self.assertEqual(spool[qid].recipients, [f"bob@{DEST}"])
        self.assertEqual(spool[qid].message, msg)
        self.assertEqual(rx.queue_count(), 0)
        self.assertEqual(self.commands(rx, "starttls"), 1)
        self.assertEqual(self.commands(rx, "mail"), 0)
        return d, rx

    def test_unverifiable_certificate_is_deferred_4_7_5(self):
        self.check_not_delivered()

    def test_matching_tls_server_name_does_not_help(self):
        # The dev-cert names localhost: the name matches, the issuer is unknown.
        self.check_not_delivered(tls_server_name="localhost")

    def test_required_without_starttls_is_4_7_4(self):
        rx = self.daemon()  # plaintext listener: no STARTTLS in EHLO
        d = self.relay(rx.port, tls="required")
        qid, _ = self.submit(d, "required-no-starttls")
        [e] = d.wait_events("deferred", id=qid, timeout=30)
        self.assertRegex(e["reply"], r"4\.7\.4.*STARTTLS is not offered")
        self.assertEqual(rx.queue_count(), 0)
        self.assertEqual(d.queue_count(), 1)


# ---------------------------------------------------------------------------
# 3. opportunistic + a handshake that stalls


class StalledHandshakeTest(OutboundTlsTestCase):

    TLS_TIMEOUT = 2

    def test_stalled_handshake_falls_back_to_plaintext(self):
        server = StallServer()
        self.addCleanup(server.stop)
        d = self.relay(server.port, tls="opportunistic",
                       delivery={"tls_timeout": self.TLS_TIMEOUT})
        t0 = time.monotonic()
        qid, msg = self.submit(d, "stall-1")

        def delivered():
            return [s for s in server.snapshot() if s.messages]
        (plain,) = wait_until(delivered, self.TLS_TIMEOUT + 15, "the message at the stall server",
                              interval=0.02)
        elapsed = time.monotonic() - t0
        sessions = server.snapshot()
        first = sessions[0]
        # First connection: STARTTLS, no answer to the handshake; the client
        # gave up and closed.
        self.assertTrue(first.starttls, first.commands)
        self.assertFalse(first.messages)
        wait_until(lambda: first.ended, 5, "the stalled connection to be closed by the client")
        self.assertTrue(first.closed_by_peer)
        # Second connection: plaintext, STARTTLS skipped, the message accepted.
        self.assertIs(plain, sessions[1], [s.commands for s in sessions])
        self.assertFalse(plain.starttls, plain.commands)
        self.assertFalse(any(c.upper().startswith("STARTTLS") for c in plain.commands))
        self.assertEqual(plain.messages, [plain.messages[0]])
        received, original = harness.split_received(plain.messages[0])
        self.assertEqual(original, msg)
        self.assertIn(f" id {qid}".encode(), received)
        # It waited for the handshake timeout, and not much longer.
        self.assertGreaterEqual(elapsed, self.TLS_TIMEOUT - 0.2, f"elapsed {elapsed:.2f} s")
        self.assertLess(elapsed, self.TLS_TIMEOUT + 5, f"elapsed {elapsed:.2f} s")
        d.wait_events("delivered", id=qid, recipient=f"bob@{DEST}")
        # The plaintext retry: one failed handshake, then one connection that skipped TLS.
        self.assertEqual(self.tls_count(d, "failed"), 1)
        self.assertEqual(self.tls_count(d, "skipped_broken"), 1)
        # What the stalled server got after its 220 was a ClientHello (a TLS
        # handshake record: 0x16, version 0x03xx), i.e. it really was the
        # server's silence that the client timed out on.
        self.assertTrue(first.after_starttls.startswith(b"\x16\x03"),
                        f"no ClientHello after STARTTLS: {first.after_starttls[:16]!r}")

        # The host is remembered: the next message goes in plaintext, no STARTTLS.
        wait_until(lambda: all(s.ended for s in server.snapshot()), 10,
                   "the idle connection to close")
        qid2, msg2 = self.submit(d, "stall-2")
        wait_until(lambda: sum(len(s.messages) for s in server.snapshot()) >= 2, 15,
                   "the second message at the stall server")
        sessions = server.snapshot()
        self.assertEqual(sum(s.starttls for s in sessions), 1,
                         [s.commands for s in sessions])
        self.assertEqual(harness.split_received(sessions[-1].messages[-1])[1], msg2)
        d.wait_events("delivered", id=qid2, recipient=f"bob@{DEST}")
        self.assertEqual(self.tls_count(d, "failed"), 1)
        self.assertEqual(self.tls_count(d, "skipped_broken"), 2)
        wait_until(lambda: d.queue_count() == 0, 10, "the relay's spool to drain", interval=0.1)
        self.assertLess(time.monotonic() - t0, 40, "the whole exchange took too long")


# ---------------------------------------------------------------------------
# 4. AUTH to a smarthost over TLS


class SmarthostAuthTest(OutboundTlsTestCase):

    def smarthost(self):
        require_program("mkpasswd")
        rc, out = run(["mkpasswd", "-m", "sha-512", "--stdin"], input=RELAY_PASSWORD.encode())
        self.assertEqual(rc, 0, out)
        self.assertTrue(out.startswith("$6$"), out)
        users = self.workdir / "users"
        users.write_text(f"# smarthost accounts\n{RELAY_USER}:{out.strip()}\n")
        # Nothing is trusted by address: MAIL needs AUTH.
        # A relay hop, not a submission: no Date/Message-ID fix-ups, so the
        # message can be compared byte for byte.
        return self.receiver(auth="required", users_file=str(users), auth_header=True,
                             submission_fixups=False, mynetworks=[])

    def test_auth_over_tls_is_esmtpsa(self):
        sh = self.smarthost()
        d = self.relay(sh.port, tls="opportunistic", auth_user=RELAY_USER,
                       auth_password=RELAY_PASSWORD)
        qid, msg = self.submit(d, "auth-ok", rcpt="carol@dest.test")
        (m,) = self.wait_spooled(sh, 1).values()
        self.assertEqual(m.sender, SENDER)
        self.assertEqual(m.recipients, ["carol@dest.test"])
        self.assertIn(b" with ESMTPSA id ", m.received, m.received)
        self.assertIsNotNone(RECEIVED_TLS_RE.search(m.received), m.received)
        self.assertIn(f"(Authenticated sender: {RELAY_USER})".encode(), m.received)
        ours, original = harness.split_received(m.message)
        self.assertIn(f" id {qid}".encode(), ours)
        self.assertEqual(original, msg)
        d.wait_events("delivered", id=qid, recipient=f"carol@{DEST}")
        wait_until(lambda: d.queue_count() == 0, 30, "the relay's spool to drain", interval=0.1)
        self.assertGreaterEqual(self.tls_count(d, "unverified"), 1)

    def test_wrong_password_is_deferred_4_7_8(self):
        sh = self.smarthost()
        d = self.relay(sh.port, tls="opportunistic", auth_user=RELAY_USER,
                       auth_password=RELAY_PASSWORD + "x")
        qid, msg = self.submit(d, "auth-bad")
        [e] = d.wait_events("deferred", id=qid, recipient=f"bob@{DEST}", timeout=30)
        self.assertRegex(e["reply"], r"4\.7\.8.*authentication failed")
        self.assertEqual(sh.queue_count(), 0)
        spool = d.export_spool()
        self.assertEqual(list(spool), [qid])
        self.assertEqual(spool[qid].message, msg)
        # The credentials went over TLS (the handshake succeeded first).
        self.assertGreaterEqual(self.tls_count(d, "unverified"), 1)
        self.assertEqual(self.tls_count(d, "failed"), 0)


if __name__ == "__main__":
    import unittest
    unittest.main()
