"""Graceful shutdown: SIGTERM under load.

Idle sessions get "421 4.3.2" and are closed, a transaction in DATA may
finish within shutdown_grace and gets its 250, every acknowledged message is
in the spool, and the process exits 0 within grace + 5 s.
"""

import threading
import time
import unittest

import harness
from harness import DaemonTestCase, RawSmtp, SmtpClosed, dot_stuff, make_message, queued_id

GRACE = 4


class ShutdownTest(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.d = self.daemon(server={"shutdown_grace": GRACE, "shards": 2})

    def load_client(self, n, acked, outcomes, stop):
        """Sends messages back to back until the server refuses or closes."""
        sender = f"load{n}@client.test"
        try:
            c = RawSmtp.connect(self.d.port)
        except OSError as e:
            outcomes.append(f"load{n}: connect {e}")
            return
        try:
            if c.reply()[0] != 220:
                return
            c.expect(250, "EHLO load.test")
            for i in range(100000):
                if stop.is_set():
                    return
                msg = make_message(f"load{n}-{i}")
                code, text = c.cmd(f"MAIL FROM:<{sender}>")
                if code != 250:
                    outcomes.append(f"load{n}: MAIL {code}")
                    return
                c.expect(250, "RCPT TO:<r@dest.test>")
                c.expect(354, "DATA")
                c.send(dot_stuff(msg) + b".\r\n")
                code, text = c.reply()
                if code != 250:
                    outcomes.append(f"load{n}: end of data {code}")
                    return
                acked.append((queued_id(text), msg))
        except (OSError, SmtpClosed) as e:
            outcomes.append(f"load{n}: {type(e).__name__}")
        finally:
            c.close()

    def test_sigterm_under_load(self):
        d = self.d
        # Idle sessions: greeted, nothing in progress.
        idle = [self.client(d.port) for _ in range(3)]
        # One idle session inside a transaction (MAIL + RCPT, no DATA yet).
        in_txn = self.client(d.port)
        in_txn.expect(250, "MAIL FROM:<txn@client.test>")
        in_txn.expect(250, "RCPT TO:<r@dest.test>")
        # One session in the middle of DATA.
        slow = self.client(d.port)
        slow.expect(250, "MAIL FROM:<slow@client.test>")
        slow.expect(250, "RCPT TO:<r@dest.test>")
        slow.expect(354, "DATA")
        slow_msg = make_message("slow-data", body_lines=[f"line {i}" for i in range(50)])
        wire = dot_stuff(slow_msg) + b".\r\n"
        half = len(wire) // 2
        slow.send(wire[:half])

        acked, outcomes = [], []
        stop = threading.Event()
        self.addCleanup(stop.set)
        load = [threading.Thread(target=self.load_client, args=(n, acked, outcomes, stop),
                                 daemon=True) for n in range(4)]
        for t in load:
            t.start()
        harness.wait_until(lambda: len(acked) >= 40, 30, "load to get going")

        t0 = time.monotonic()
        d.signal(harness.signal.SIGTERM)

        # Idle sessions are told and closed.
        for c in idle + [in_txn]:
            r = c.reply()
            self.assertReply(r, 421, "4.3.2")
            c.wait_closed()

        # The DATA session finishes after shutdown began and gets its 250.
        slow.send(wire[half:])
        r = slow.reply()
        self.assertReply(r, 250, "2.0.0")
        slow_id = queued_id(r[1])
        rest = slow.replies_until_close()
        self.assertTrue(all(x[0] == 421 for x in rest), rest)

        for t in load:
            t.join(GRACE + 10)
        self.assertFalse(any(t.is_alive() for t in load), "load clients not done")

        rc = harness.wait_until(lambda: d.proc.poll() is not None, GRACE + 5,
                                "sluiced to exit after SIGTERM") and d.proc.returncode
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 0, d.log_text())
        self.assertLessEqual(elapsed, GRACE + 5)
        # A new connection is refused now.
        with self.assertRaises(OSError):
            RawSmtp.connect(d.port, timeout=2).reply()

        harness.require_sluicectl()
        spool = d.export_spool()
        self.assertIn(slow_id, spool)
        self.assertEqual(spool[slow_id].message, slow_msg)
        for qid, msg in acked:
            self.assertIn(qid, spool, f"acknowledged {qid} missing")
            self.assertEqual(spool[qid].message, msg)
        # Nothing was queued that its client did not hear about.
        self.assertEqual(sorted(spool), sorted([q for q, _ in acked] + [slow_id]),
                         f"load outcomes: {outcomes}")

    def test_new_connection_during_grace_gets_421(self):
        d = self.d
        slow = self.client(d.port)
        slow.expect(250, "MAIL FROM:<slow@client.test>")
        slow.expect(250, "RCPT TO:<r@dest.test>")
        slow.expect(354, "DATA")
        slow.send(b"Subject: held open\r\n\r\n")
        idle = self.client(d.port)
        d.signal(harness.signal.SIGTERM)
        self.assertReply(idle.reply(), 421, "4.3.2")
        idle.wait_closed()
        # The listener is closed during the grace period: refused or 421.
        try:
            c = RawSmtp.connect(d.port, timeout=2)
            self.addCleanup(c.close)
            got = c.replies_until_close()
            self.assertTrue(all(r[0] == 421 for r in got), got)
        except OSError:
            pass
        slow.send(b"done\r\n.\r\n")
        self.assertReply(slow.reply(), 250)
        self.assertEqual(d.stop(timeout=GRACE + 5), 0)

    def test_grace_expires_for_a_stuck_data_session(self):
        d = self.d
        stuck = self.client(d.port)
        stuck.expect(250, "MAIL FROM:<stuck@client.test>")
        stuck.expect(250, "RCPT TO:<r@dest.test>")
        stuck.expect(354, "DATA")
        stuck.send(b"Subject: never finished\r\n\r\npartial")
        t0 = time.monotonic()
        d.signal(harness.signal.SIGTERM)
        stuck.wait_closed(GRACE + 5)
        harness.wait_until(lambda: d.proc.poll() is not None, GRACE + 5, "sluiced to exit")
        self.assertEqual(d.proc.returncode, 0)
        self.assertLessEqual(time.monotonic() - t0, GRACE + 5)
        if harness.have_sluicectl():
            self.assertEqual(d.export_spool(), {})

    def test_bdat_chunk_in_progress_finishes(self):
        """A BDAT chunk being received when SIGTERM arrives is read to its end
        and committed. BDAT has no intermediate reply, so the test proves the
        server is inside the chunk by pushing more octets than the socket
        buffers on both sides can hold (the server must have read the BDAT
        line and part of the chunk for sendall to return)."""
        rmem_max = int(open("/proc/sys/net/ipv4/tcp_rmem").read().split()[2])
        sndbuf = 1 << 16
        part1_len = rmem_max + 4 * sndbuf + (1 << 20)
        line = b"b" * 998 + b"\r\n"
        msg = b"Subject: big bdat\r\n\r\n" + line * (part1_len // len(line) + 64)
        d = self.daemon(listeners=[{"name": "big", "max_message_size": 2 * len(msg)}],
                        server={"shutdown_grace": GRACE,
                                "max_body_memory_per_client": 2 * len(msg) + (1 << 20)})
        sock = harness.socket.socket(harness.socket.AF_INET, harness.socket.SOCK_STREAM)
        sock.setsockopt(harness.socket.SOL_SOCKET, harness.socket.SO_SNDBUF, sndbuf)
        sock.settimeout(30)
        sock.connect((harness.LOOPBACK, d.port))
        c = RawSmtp(sock, timeout=30)
        self.addCleanup(c.close)
        c.greet()
        c.expect(250, "MAIL FROM:<b@client.test>")
        c.expect(250, "RCPT TO:<r@dest.test>")
        idle = self.client(d.port)
        try:
            c.send(f"BDAT {len(msg)} LAST\r\n".encode() + msg[:part1_len])
        except OSError as e:
            self.fail(f"server stopped reading a large BDAT chunk before SIGTERM: {e!r} "
                      "(see test_ingest test_large_message_bdat)")
        d.signal(harness.signal.SIGTERM)
        self.assertReply(idle.reply(), 421, "4.3.2")  # shutdown has begun
        c.send(msg[part1_len:])
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        self.assertEqual(d.stop(timeout=GRACE + 5), 0)
        if harness.have_sluicectl():
            spool = d.export_spool()
            self.assertEqual(list(spool), [queued_id(r[1])])
            self.assertTrue(spool[queued_id(r[1])].message == msg, "stored body differs")

if __name__ == "__main__":
    unittest.main()
