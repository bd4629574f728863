"""Crash safety: "250 means on disk" across SIGKILLs.

20 client connections send 2,000 messages while sluiced is killed with
SIGKILL at 3 random moments and restarted on the same spool and port. Clients
retry every message that did not get a 250. Afterwards every acknowledged
message is in the spool exactly once under the id it was given, byte-exact;
the only extra copies allowed are crash-window duplicates: a message that was
durable before the kill but whose 250 never reached the client. Those must
belong to an attempt that was in flight on a connection to a killed daemon.

Knobs (environment): SLUICE_CRASH_SEED, SLUICE_CRASH_MESSAGES,
SLUICE_CRASH_CONNECTIONS, SLUICE_CRASH_KILLS.
"""

import collections
import hashlib
import os
import random
import socket
import threading
import time
import unittest

import harness
from harness import DaemonTestCase, RawSmtp, SmtpClosed, dot_stuff, queued_id

TOTAL_DEADLINE = 150  # seconds for the whole send phase


class Attempt:
    """One try at one message."""

    def __init__(self, generation):
        self.generation = generation  # daemon incarnation the connection went to
        self.outcome = "unknown"      # acked | refused NNN | lost
        self.qid = None


class CrashTest(DaemonTestCase):

    def setUp(self):
        super().setUp()
        harness.require_sluicectl()
        self.seed = int(os.environ.get("SLUICE_CRASH_SEED", str(random.randrange(1 << 30))))
        self.n_messages = int(os.environ.get("SLUICE_CRASH_MESSAGES", "2000"))
        self.n_conns = int(os.environ.get("SLUICE_CRASH_CONNECTIONS", "20"))
        self.n_kills = int(os.environ.get("SLUICE_CRASH_KILLS", "3"))
        print(f"\n[crash] seed={self.seed} messages={self.n_messages} "
              f"connections={self.n_conns} kills={self.n_kills}", flush=True)
        self.rng = random.Random(self.seed)
        self.lock = threading.Lock()
        self.generation = 1
        self.killed = set()
        self.acked = 0
        self.stop_clients = threading.Event()
        self.errors = []

    # -- messages -----------------------------------------------------------

    def make_messages(self):
        messages = {}
        owner = {}
        for i in range(self.n_messages):
            conn = i % self.n_conns
            token = f"tok{i:05d}x{self.rng.randrange(1 << 32):08x}"
            lines = [f"token {token} line 0"]
            for j in range(1, self.rng.randrange(2, 40)):
                filler = "".join(self.rng.choice("abcdefghij klmnop.") for _ in
                                 range(self.rng.randrange(0, 90)))
                lead = "." if self.rng.random() < 0.1 else ""
                lines.append(f"{lead}{token} {j} {filler}")
            msg = harness.make_message(token, body_lines=lines,
                                       extra_headers=[f"X-Conn: {conn}"])
            messages[token] = msg
            owner.setdefault(conn, []).append(token)
        return messages, owner

    # -- clients ------------------------------------------------------------

    def current_generation(self):
        with self.lock:
            return self.generation

    def client(self, conn, tokens, messages, attempts, port):
        """Sends `tokens` in order over one connection at a time, reconnecting
        whenever the connection fails; bounded by TOTAL_DEADLINE."""
        pending = collections.deque(tokens)
        sender = f"s{conn}@client.test"
        rcpt = f"r{conn}@dest.test"
        deadline = self.start_time + TOTAL_DEADLINE
        for _ in range(100000):
            if not pending or self.stop_clients.is_set() or time.monotonic() > deadline:
                return
            gen = self.current_generation()
            try:
                c = RawSmtp.connect(port, timeout=10)
            except OSError:
                time.sleep(harness.POLL_INTERVAL)  # daemon down: poll until restarted
                continue
            attempt = None
            try:
                if c.reply()[0] != 220:
                    continue
                c.expect(250, "EHLO crash.test")
                for _ in range(len(pending) + 1):
                    if not pending or self.stop_clients.is_set():
                        break
                    token = pending[0]
                    attempt = None
                    c.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
                    codes = [c.reply()[0] for _ in range(3)]
                    if codes != [250, 250, 354]:
                        raise AssertionError(f"transaction start answered {codes}")
                    attempt = Attempt(gen)
                    attempts[token].append(attempt)
                    c.send(dot_stuff(messages[token]) + b".\r\n")
                    code, text = c.reply()
                    if code == 250:
                        attempt.outcome = "acked"
                        attempt.qid = queued_id(text)
                        pending.popleft()
                        with self.lock:
                            self.acked += 1
                    else:
                        attempt.outcome = f"refused {code}"
                        if code == 421:
                            break
                    attempt = None
            except (OSError, SmtpClosed):
                if attempt is not None:
                    attempt.outcome = "lost"  # the reply to a complete DATA never came
            except AssertionError as e:
                with self.lock:
                    self.errors.append(f"conn {conn} gen {gen}: {e}")
                if attempt is not None:
                    attempt.outcome = "lost"
            finally:
                c.close()

    # -- the test -------------------------------------------------------------

    def test_sigkill_under_load(self):
        messages, owner = self.make_messages()
        d = self.daemon(server={"shards": 2, "shutdown_grace": 5})
        port = d.port
        attempts = {t: [] for t in messages}
        self.start_time = time.monotonic()

        threads = [threading.Thread(target=self.client, name=f"client{c}", daemon=True,
                                    args=(c, owner[c], messages, attempts, port))
                   for c in range(self.n_conns)]
        for t in threads:
            t.start()
        self.addCleanup(self.stop_clients.set)

        lo, hi = int(self.n_messages * 0.1), int(self.n_messages * 0.85)
        thresholds = sorted(self.rng.sample(range(lo, hi), self.n_kills))
        print(f"[crash] kill after {thresholds} acknowledged messages", flush=True)
        # Each kill also waits for some progress after the previous restart, so
        # that no two kills hit the same moment.
        gap = max(1, self.n_messages // 20)
        acked_at_kill = 0
        for n, planned in enumerate(thresholds):
            threshold = max(planned, acked_at_kill + gap)
            wait_for = lambda: self.acked >= threshold or not any(t.is_alive() for t in threads)
            harness.wait_until(wait_for, TOTAL_DEADLINE, f"{threshold} acknowledged messages")
            with self.lock:
                self.killed.add(self.generation)
                acked_at_kill = self.acked
            d.kill()
            with self.lock:
                self.generation += 1
            print(f"[crash] SIGKILL #{n + 1} at {acked_at_kill} acked", flush=True)
            d.start()

        for t in threads:
            t.join(max(1, self.start_time + TOTAL_DEADLINE + 15 - time.monotonic()))
        self.stop_clients.set()
        alive = [t.name for t in threads if t.is_alive()]
        self.assertEqual(alive, [], "clients still running at the deadline")
        self.assertEqual(self.errors, [], "protocol errors seen by clients")
        self.assertEqual(d.stop(), 0, "exit status after SIGTERM")

        unacked = [t for t, a in attempts.items() if not any(x.outcome == "acked" for x in a)]
        self.assertEqual(unacked, [], f"{len(unacked)} messages never acknowledged")

        # Attempts whose fate the client does not know happened only on
        # connections to a daemon that was then killed.
        lost = [(t, a.generation) for t, al in attempts.items() for a in al
                if a.outcome == "lost"]
        stray = [(t, g) for t, g in lost if g not in self.killed]
        self.assertEqual(stray, [], "connections failed without a kill")
        refused = collections.Counter(a.outcome for al in attempts.values() for a in al
                                      if a.outcome.startswith("refused"))

        spool = d.export_spool()
        by_token = collections.defaultdict(list)
        for m in spool.values():
            token = None
            for line in m.message.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
                if line.startswith(b"X-Test-Token: "):
                    token = line[len(b"X-Test-Token: "):].decode()
            self.assertIn(token, messages, f"spooled message {m.id} has no known token")
            by_token[token].append(m)

        missing, corrupt, duplicates, unexplained = [], [], [], []
        for token, msg in messages.items():
            acked_id = next(a.qid for a in attempts[token] if a.outcome == "acked")
            copies = {m.id: m for m in by_token.get(token, [])}
            if acked_id not in copies:
                missing.append((token, acked_id))
                continue
            want = hashlib.sha256(msg).hexdigest()
            for m in copies.values():
                if hashlib.sha256(m.message).hexdigest() != want:
                    corrupt.append((token, m.id))
                conn = int(token[3:8]) % self.n_conns
                if m.sender != f"s{conn}@client.test" or m.recipients != [f"r{conn}@dest.test"]:
                    corrupt.append((token, m.id, m.sender, m.recipients))
            extra = sorted(set(copies) - {acked_id})
            n_lost = sum(1 for a in attempts[token] if a.outcome == "lost")
            if extra:
                if len(extra) <= n_lost:
                    duplicates.append((token, extra))
                else:
                    unexplained.append((token, extra, [a.outcome for a in attempts[token]]))

        n_dups = sum(len(e) for _, e in duplicates)
        print(f"[crash] spool {len(spool)} messages; acknowledged {len(messages)}; "
              f"attempts lost in a kill {len(lost)}; crash-window duplicates {n_dups} "
              f"{duplicates[:10]}; refusals {dict(refused)}", flush=True)
        self.assertEqual(missing, [], "acknowledged messages missing from the spool")
        self.assertEqual(corrupt, [], "spooled messages that differ from what was sent")
        self.assertEqual(unexplained, [], "extra copies without a lost attempt")
        self.assertEqual(len(spool), len(messages) + n_dups)


if __name__ == "__main__":
    unittest.main()
