"""Command line: sluiced --check-config, config errors, and spool recovery
seen through sluicectl."""

import json
import re
import subprocess
import unittest

import harness
from harness import DaemonTestCase, make_message, queued_id, send_message, wait_until


def run(*args, timeout=30, cwd=None):
    return subprocess.run([str(a) for a in args], capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=cwd)


class CheckConfigTest(DaemonTestCase):

    def check(self, text, name="broken.toml"):
        path = self.workdir / name
        path.write_text(text)
        return path, run(harness.sluiced_path(), "--check-config", path)

    def assertConfigError(self, text, line, key):
        path, r = self.check(text)
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 2, err)
        self.assertIn(f"{path}:{line}: {key}", err)
        # The daemon refuses to start on it the same way.
        r2 = run(harness.sluiced_path(), "--config", path)
        self.assertEqual(r2.returncode, 2)
        self.assertIn(f"{path}:{line}: {key}", r2.stderr.decode())

    def test_dev_config_ok(self):
        path = harness.REPO_ROOT / "config" / "dev.toml"
        r = run(harness.sluiced_path(), "--check-config", path, cwd=harness.REPO_ROOT)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertIn(b"OK", r.stdout)

    def test_generated_config_ok(self):
        d = self.daemon(listeners=[{"name": "a", "max_recipients": 10,
                                    "bare_newline": "normalize", "command_timeout": 30},
                                   {"name": "b", "relay_domains": ["x.example", "*.y.example"],
                                    "mynetworks": ["10.0.0.0/8", "::1/128"]}],
                        start=False)
        r = run(harness.sluiced_path(), "--check-config", d.config_path)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        out = r.stdout.decode()
        self.assertIn("OK", out)
        self.assertIn("2 listeners", out)
        self.assertIn(str(d.spool_path), out)

    def test_unknown_key(self):
        self.assertConfigError(
            '[server]\nhostname = "h"\n\n[[listener]]\nname = "x"\nport = 2525\n'
            'max_recipents = 5\n', 7, "listener[0].max_recipents")

    def test_out_of_range(self):
        self.assertConfigError(
            '[[listener]]\nport = 2525\nmax_line_length = 100\n', 3,
            "listener[0].max_line_length")

    def test_wrong_type(self):
        self.assertConfigError('[server]\nshards = "two"\n[[listener]]\nport = 2525\n',
                               2, "server.shards")

    def test_bad_bare_newline(self):
        self.assertConfigError('[[listener]]\nport = 2525\n\n\nbare_newline = "lenient"\n',
                               5, "listener[0].bare_newline")

    def test_bad_cidr(self):
        self.assertConfigError(
            '[[listener]]\nname = "x"\nport = 2525\nmynetworks = ["127.0.0.0/33"]\n', 4,
            "listener[0].mynetworks")

    def test_unknown_section_key(self):
        self.assertConfigError('[spool]\npath = "/tmp/x"\nsize = 3\n[[listener]]\nport = 1\n',
                               3, "spool.size")

    def test_toml_syntax_error(self):
        path, r = self.check('[server]\nhostname = "unterminated\n')
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr.decode(), re.escape(str(path)) + r":2: ")

    def test_missing_file(self):
        r = run(harness.sluiced_path(), "--check-config", self.workdir / "nope.toml")
        self.assertEqual(r.returncode, 2)
        self.assertIn("nope.toml", r.stderr.decode())


class SpoolRecoveryTest(DaemonTestCase):

    def setUp(self):
        super().setUp()
        harness.require_sluicectl()

    def test_restart_recovers_queue(self):
        d = self.daemon()
        sent = {}
        c = self.client(d.port)
        for i in range(7):
            msg = make_message(f"recover-{i}")
            r = send_message(c, f"s{i}@client.test", [f"r{i}@dest.test", "cc@dest.test"], msg)
            self.assertReply(r, 250)
            sent[queued_id(r[1])] = (i, msg)
        c.cmd("QUIT")
        self.assertEqual(d.stop(), 0)

        d.start()
        self.assertIn("7 messages recovered", d.log_text())
        self.assertEqual(d.queue_count(), 7)
        # One more after the restart.
        c = self.client(d.port)
        r = send_message(c, "late@client.test", ["r@dest.test"], make_message("late"))
        self.assertReply(r, 250)
        late = queued_id(r[1])
        self.assertNotIn(late, sent)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.queue_count(), 8)

        spool = d.export_spool()
        self.assertEqual(sorted(spool), sorted(list(sent) + [late]))
        for qid, (i, msg) in sent.items():
            m = spool[qid]
            self.assertEqual(m.message, msg)
            self.assertEqual(m.sender, f"s{i}@client.test")
            self.assertEqual(m.recipients, [f"r{i}@dest.test", "cc@dest.test"])

        # queue list names every id; --json is one object per line.
        listing = d.sluicectl("queue", "list").stdout.decode()
        for qid in spool:
            self.assertIn(qid, listing)
        lines = d.sluicectl("queue", "list", "--json").stdout.decode().splitlines()
        listed = [json.loads(line) for line in lines if line.strip()]
        self.assertEqual(sorted(x["id"] for x in listed), sorted(spool))
        for x in listed:
            self.assertEqual(harness._address(x["sender"]), spool[x["id"]].sender)

        for qid in spool:
            # queue show ID --body prints the stored body, byte for byte.
            shown = d.sluicectl("queue", "show", qid, "--body").stdout
            self.assertEqual(shown, spool[qid].body)
            self.assertEqual(spool[qid].envelope["body_size"], len(spool[qid].body))
        # Without --body: the envelope, then the body.
        qid, (i, msg) = next(iter(sent.items()))
        full = d.sluicectl("queue", "show", qid).stdout
        self.assertIn(f"id: {qid}\n".encode(), full)
        self.assertIn(f"s{i}@client.test".encode(), full)
        self.assertTrue(full.endswith(spool[qid].body), full[-200:])

    def test_show_unknown_id_fails(self):
        d = self.daemon()
        self.assertEqual(d.stop(), 0)
        r = d.sluicectl("queue", "show", "0" * 26, check=False)
        self.assertNotEqual(r.returncode, 0)

    def test_empty_spool(self):
        d = self.daemon()
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.queue_count(), 0)
        self.assertEqual(d.export_spool(), {})

    def test_inspect_while_running(self):
        d = self.daemon()
        c = self.client(d.port)
        r = send_message(c, "a@client.test", ["b@dest.test"], make_message("live"))
        self.assertReply(r, 250)
        # sluicectl reads a running daemon's spool without disturbing it.
        self.assertEqual(d.queue_count(), 1)
        self.assertEqual(list(d.export_spool()), [queued_id(r[1])])
        r = send_message(c, "a@client.test", ["b@dest.test"], make_message("live-2"))
        self.assertReply(r, 250)
        self.assertEqual(d.queue_count(), 2)


def spool_corrupt_path():
    return harness._binary("SLUICE_SPOOL_CORRUPT", "build/queue/spool_corrupt")


class QuarantineTest(DaemonTestCase):
    """A spool record that cannot be read (here: an envelope no version of the
    code could decode, written by the test tool spool_corrupt while sluiced is
    stopped) is quarantined at start: logged, counted, listed by sluicectl,
    never silently dropped, and the relay runs on with the other messages."""

    def test_undecodable_record_is_quarantined_not_fatal(self):
        d = self.daemon(subdir="q", admin=True)  # the admin port, for the gauge
        ids = []
        c = self.client(d.port)
        for i in range(3):
            r = send_message(c, "a@client.test", [f"r{i}@dest.test"], make_message(f"q{i}"))
            self.assertReply(r, 250)
            ids.append(queued_id(r[1]))
        c.expect(221, "QUIT")
        self.assertEqual(d.stop(), 0)
        bad = ids[1]
        r = run(spool_corrupt_path(), d.spool_path, bad)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        # A key that is not a message id at all.
        r = run(spool_corrupt_path(), d.spool_path, "x00ff", "junk")
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        # Before sluiced has run, sluicectl names the unreadable records and lists the rest.
        r = d.sluicectl("queue", "list")
        listed = r.stdout.decode()
        self.assertIn(ids[0], listed)
        self.assertIn(ids[2], listed)
        self.assertIn(f"record {bad} cannot be read", r.stderr.decode())

        d.start()  # before: "cannot read spool ... : ... envelope" and exit 1
        # The audit runs in the background once the relay is up.
        # (This start's log: the previous start's audit said its line too.)
        wait_until(lambda: "spool audit:" in d.log_path.read_text(), 20, "the spool audit")
        log = d.log_path.read_text()
        self.assertIn(f"spool: record {bad} cannot be read", log)
        self.assertIn("spool: record x00ff cannot be read", log)
        self.assertEqual(sorted(d.export_spool()), sorted([ids[0], ids[2]]))
        self.assertEqual(d.scrape().sum("sluice_spool_quarantined_messages"), 2)
        self.assertEqual(d.get("/readyz")[0], 200)

        listing = d.sluicectl("quarantine", "list").stdout.decode()
        self.assertIn(bad, listing)
        self.assertIn("x00ff", listing)
        self.assertIn("envelope does not decode", listing)
        shown = d.sluicectl("quarantine", "show", bad).stdout
        self.assertIn(b"reason: envelope does not decode", shown)
        self.assertIn(b"X-Test-Token: q1", shown)  # the body is kept
        body = d.sluicectl("quarantine", "show", bad, "--body").stdout
        self.assertEqual(harness.split_received(body)[1], make_message("q1"))
        out = d.workdir / "quarantine-export"
        d.sluicectl("quarantine", "export", str(out))
        self.assertEqual(sorted(p.name for p in out.iterdir()),
                         sorted([f"{bad}.envelope", f"{bad}.eml", f"{bad}.reason",
                                 "x00ff.envelope", "x00ff.reason"]))
        self.assertEqual((out / "x00ff.envelope").read_bytes(), b"junk")

        # A restart finds the quarantine as it was and nothing new to set aside.
        self.assertEqual(d.stop(), 0)
        d.start()
        wait_until(lambda: "spool audit:" in d.log_path.read_text(), 20, "the spool audit")
        self.assertNotIn("cannot be read", d.log_path.read_text())
        self.assertEqual(d.scrape().sum("sluice_spool_quarantined_messages"), 2)
        self.assertEqual(d.queue_count(), 2)


class FileLimitTest(DaemonTestCase):

    def test_soft_limit_raised_to_the_hard_limit(self):
        d = self.daemon(start=False)
        d.nofile = (512, 4096)
        d.start()
        limits = open(f"/proc/{d.pid}/limits").read()
        m = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M)
        self.assertIsNotNone(m, limits)
        self.assertEqual((int(m.group(1)), int(m.group(2))), (4096, 4096))
        log = d.log_text()
        self.assertIn("open file limit raised from 512 to 4096", log)
        # server.max_connections defaults to 10000: 4096 cannot hold that many
        self.assertIn("open file limit 4096 is below server.max_connections (10000)", log)

    def test_enough_descriptors_no_warning(self):
        d = self.daemon(server={"max_connections": 100}, start=False)
        d.nofile = (1024, 4096)
        d.start()
        self.assertNotIn("is below server.max_connections", d.log_text())


class LinkageTest(unittest.TestCase):
    """BoringSSL and OpenSSL 3 in one process crash (unversioned symbols,
    docs/design.md §7): no binary may pull in libssl.so.3 or libcrypto.so.3."""

    def test_no_binary_links_openssl3(self):
        for binary in (harness.sluiced_path(), harness.sluicectl_path()):
            out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                                 timeout=30).stdout
            self.assertNotRegex(out, r"lib(ssl|crypto)\.so\.3", f"{binary}:\n{out}")
        out = subprocess.run(["ldd", str(harness.sluiced_path())], capture_output=True,
                             text=True, timeout=30).stdout
        self.assertRegex(out, r"android/libssl\.so\.0", "sluiced must use BoringSSL")


if __name__ == "__main__":
    unittest.main()
