"""The spool on a small file system that fills up (Postfix's queue_minfree,
RocksDB's ENOSPC paths, a restart on a nearly full disk).

Each test mounts a 64 MiB tmpfs in a private mount namespace of its own
(unshare: a "holder" process keeps the namespace alive across daemon restarts)
and runs sluiced and sluicectl inside it with nsenter, so nothing is mounted
on the host. Root does this directly; anyone else in a user namespace of
their own (allowed by Debian's default kernel settings). The disk is "filled by another file" with
fallocate inside the namespace.

Every acknowledged message is delivered afterwards: the destination (a sink)
is down while the disk fills, and started at the end.
"""

import os
import shutil
import signal
import subprocess
import time
import unittest

import harness
from harness import AdminDaemon, DaemonTestCase, RawSmtp, make_message, queued_id, wait_until
from sink import Sink

MIB = 1 << 20
FS_SIZE = 64 * MIB


class MountNamespace:
    """A tmpfs of `size` bytes at `mountpoint`, visible only to processes run
    through prefix(). Stopped (its holder killed by PID) by the test."""

    def __init__(self, tc, mountpoint, size):
        for tool in ("unshare", "nsenter", "fallocate"):
            if shutil.which(tool) is None:
                raise AssertionError(f"{tool} not found (Debian package util-linux)")
        self.mountpoint = str(mountpoint)
        # Root needs no user namespace (and cannot make one inside a chroot, as on CI); anyone
        # else maps themselves to root in one, which lets them mount in their own namespace.
        self.user_ns = os.geteuid() != 0
        user = ["--user", "--map-root-user"] if self.user_ns else []
        # "--propagation private" makes every mount of the new namespace private, so the tmpfs
        # cannot appear in the host's namespace. In a chroot (as on CI) "/" is no mount point
        # and that fails; there, only mounts that are already private are acceptable.
        propagation = "private"
        r = subprocess.run(["unshare", *user, "--mount", "--propagation", "private", "true"],
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            shared = [l for l in open("/proc/self/mountinfo") if " shared:" in l]
            if shared:
                raise AssertionError(
                    "cannot mount privately: unshare --propagation private failed "
                    f"({r.stderr.decode().strip()}) and mounts here propagate: {shared[0]}")
            propagation = "unchanged"
        self.holder = subprocess.Popen(
            ["unshare", *user, "--mount", "--propagation", propagation, "sleep", "3600"],
            stdin=subprocess.DEVNULL)
        tc.addCleanup(self.stop)
        ours = os.readlink("/proc/self/ns/mnt")

        def entered():
            if self.holder.poll() is not None:
                raise AssertionError(
                    f"unshare exited with {self.holder.returncode}" +
                    (": are user namespaces disabled (kernel.unprivileged_userns_clone)?"
                     if self.user_ns else ""))
            try:
                return os.readlink(f"/proc/{self.holder.pid}/ns/mnt") != ours
            except OSError:
                return False

        wait_until(entered, 10, "the namespace holder")
        self.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", self.mountpoint])
        self.filler = os.path.join(self.mountpoint, "filler")

    def prefix(self):
        user = ["-U", "--preserve-credentials"] if self.user_ns else []
        # --root/--wd: entering a mount namespace resets the root to that namespace's; inside a
        # chroot (as on CI) that is the host's, so keep the holder's (the chroot's) instead.
        return ["nsenter", "-t", str(self.holder.pid), "-m", *user, "--root", "--wd"]

    def run(self, argv):
        r = subprocess.run(self.prefix() + [str(a) for a in argv], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"{argv} in the namespace: {r.stderr.decode(errors='replace')}")
        return r

    def free(self):
        st = os.statvfs(f"/proc/{self.holder.pid}/root{self.mountpoint}")
        return st.f_bavail * st.f_frsize

    def fill(self, leave):
        """Another file takes all but `leave` bytes (grows or shrinks the filler)."""
        current = 0
        p = f"/proc/{self.holder.pid}/root{self.filler}"
        if os.path.exists(p):
            current = os.stat(p).st_blocks * 512
        size = max(0, current + self.free() - leave)
        self.run(["rm", "-f", self.filler])
        if size > 0:
            self.run(["fallocate", "-l", str(size), self.filler])

    def free_filler(self):
        self.run(["rm", "-f", self.filler])

    def stop(self):
        if self.holder.poll() is None:
            os.kill(self.holder.pid, signal.SIGKILL)
        self.holder.wait(10)


class DiskTest(DaemonTestCase):

    def setUp(self):
        super().setUp()
        harness.require_sluicectl()
        self.fs_dir = self.workdir / "fs"
        self.fs_dir.mkdir()
        self.ns = MountNamespace(self, self.fs_dir, FS_SIZE)
        # The destination is down while the disk fills: mail stays in the spool.
        self.sink = Sink(port=harness.free_port())
        self.addCleanup(self.sink.stop)

    def disk_daemon(self, min_free):
        wd = self.workdir / "d"
        wd.mkdir(exist_ok=True)
        spool = self.fs_dir / "spool"
        d = AdminDaemon(
            wd, spool={"path": str(spool), "min_free_bytes": min_free},
            delivery={"enabled": True, "retry_initial": 1, "retry_max": 1,
                      "destination_backoff": 1, "connect_timeout": 2, "idle_timeout": 1},
            routes=[{"name": "sink", "domains": ["*"], "type": "smarthost",
                     "host": harness.LOOPBACK, "port": self.sink.port}],
            listeners=[{"name": "relay", "max_message_size": 4 * MIB}])
        d.spool_path = spool
        d.wrapper = self.ns.prefix()
        self.daemons.append(d)
        d.start()
        return d

    def send(self, d, token, size):
        """One message of about `size` bytes on a new connection: (code, text)."""
        with RawSmtp.connect(d.port) as c:
            code, text = c.reply()
            if code != 220:
                return code, " ".join(text)
            c.expect(250, "EHLO disk.test")
            code, text = c.cmd("MAIL FROM:<a@client.test>")
            if code != 250:
                return code, " ".join(text)
            c.expect(250, "RCPT TO:<b@dest.test>")
            c.expect(354, "DATA")
            msg = make_message(token, body_lines=["z" * 990] * (size // 992))
            c.send(harness.dot_stuff(msg) + b".\r\n")
            code, text = c.reply()
            return code, " ".join(text)

    def fill_up(self, d, size, stop_codes, limit=200):
        """Sends messages until one is answered with a code in stop_codes;
        returns ([acknowledged tokens], the stopping reply)."""
        acked = []
        for i in range(limit):
            token = f"disk-{len(self.tokens_sent)}"
            self.tokens_sent.append(token)
            code, text = self.send(d, token, size)
            if code == 250:
                acked.append(token)
                continue
            self.assertIn(code, stop_codes, text)
            return acked, (code, text)
        self.fail(f"no {stop_codes} after {limit} messages; {self.ns.free()} bytes free")

    def deliver_everything(self, d, acked):
        """Starts the destination; every acknowledged message arrives exactly once."""
        self.sink.start()
        wait_until(lambda: d.queue_count() == 0, 90, "the spool to drain", interval=0.2)
        got = self.sink.tokens()
        for token in acked:
            self.assertEqual(got[token], 1, f"{token} delivered {got[token]} times")

    tokens_sent = None

    def test_below_min_free_new_mail_gets_452_and_rocksdb_never_sees_enospc(self):
        self.tokens_sent = []
        d = self.disk_daemon(min_free=24 * MIB)
        self.assertEqual(d.get("/readyz")[0], 200)
        self.ns.fill(leave=32 * MIB)
        acked, (code, text) = self.fill_up(d, 512 * 1024, (452,))
        self.assertIn("4.3.1", text)
        self.assertGreater(len(acked), 0)
        # Refused at MAIL from now on, before any byte of the message is sent.
        with RawSmtp.connect(d.port) as c:
            c.greet()
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 452, "4.3.1")
        s = d.scrape()
        self.assertEqual(s.sum("sluice_spool_disk_low"), 1)
        self.assertEqual(s.sum("sluice_spool_healthy"), 1)  # no write ever failed
        self.assertLess(s.sum("sluice_spool_disk_free_bytes"), 24 * MIB)
        self.assertEqual(d.get("/readyz")[0], 503)
        # Room again: mail is taken again, by itself.
        self.ns.free_filler()
        wait_until(lambda: d.get("/readyz")[0] == 200, 20, "/readyz 200 once space is back")
        self.assertEqual(d.scrape().sum("sluice_spool_disk_low"), 0)
        code, text = self.send(d, "after-room", 4096)
        self.assertEqual(code, 250, text)
        self.deliver_everything(d, acked + ["after-room"])

    def test_disk_full_write_error_then_the_spool_reopens_by_itself(self):
        """With the guard off (min_free_bytes = 0) the spool meets ENOSPC as
        it would if something filled the disk between two checks: the write
        fails (451), the process lives on, and once there is room the spool
        closes and reopens its database without a restart."""
        self.tokens_sent = []
        d = self.disk_daemon(min_free=0)
        self.ns.fill(leave=6 * MIB)
        acked, (code, text) = self.fill_up(d, 512 * 1024, (451, 421))
        self.assertTrue(d.running(), "sluiced died on ENOSPC:\n" + d.log_text()[-3000:])
        wait_until(lambda: d.scrape().sum("sluice_spool_healthy") == 0, 10,
                   "the spool to be marked unhealthy")
        self.assertEqual(d.get("/readyz")[0], 503)
        with RawSmtp.connect(d.port) as c:
            self.assertReply(c.reply(), 421, "4.3.0")
        self.ns.free_filler()
        wait_until(lambda: d.scrape().sum("sluice_spool_healthy") == 1, 30,
                   "the spool to reopen by itself")
        self.assertGreaterEqual(d.scrape().sum("sluice_spool_reopens_total"), 1)
        wait_until(lambda: d.get("/readyz")[0] == 200, 10, "/readyz 200")
        code, text = self.send(d, "after-reopen", 4096)
        self.assertEqual(code, 250, text)
        self.assertTrue(d.running())
        self.deliver_everything(d, acked + ["after-reopen"])
        self.assertNotIn("Assertion", d.log_text())

    def test_restart_on_a_nearly_full_disk(self):
        self.tokens_sent = []
        d = self.disk_daemon(min_free=24 * MIB)
        acked = []
        for i in range(20):
            token = f"before-restart-{i}"
            code, text = self.send(d, token, 256 * 1024)
            self.assertEqual(code, 250, text)
            acked.append(token)
        self.assertEqual(d.stop(), 0)
        self.ns.fill(leave=2 * MIB)
        d.start()  # replays the WAL without flushing it: almost no space needed
        self.assertEqual(d.queue_count(), 20)
        self.assertEqual(d.get("/readyz")[0], 503)  # below min_free_bytes: no new mail yet
        with RawSmtp.connect(d.port) as c:
            c.greet()
            self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 452, "4.3.1")
        self.ns.free_filler()
        wait_until(lambda: d.get("/readyz")[0] == 200, 20, "/readyz 200 once space is back")
        self.deliver_everything(d, acked)

    def test_no_room_to_start_says_what_to_free(self):
        self.tokens_sent = []
        d = self.disk_daemon(min_free=24 * MIB)
        for i in range(30):
            code, text = self.send(d, f"wal-{i}", 512 * 1024)
            self.assertEqual(code, 250, text)
        d.kill()  # the WAL is not flushed: a start has to replay 15 MB
        self.ns.fill(leave=0)
        with self.assertRaises(AssertionError):
            d.start(timeout=10)
        log = d.log_path.read_text()
        if "ready" in log and "cannot open spool" not in log:
            self.fail("expected the start to fail on a full disk:\n" + log[-2000:])
        self.assertIn("not enough free space to open it", log)
        self.assertRegex(log, r"free at least \d+ MiB there")
        # Room, and it starts with every message.
        self.ns.free_filler()
        d.start()
        self.assertEqual(d.queue_count(), 30)


if __name__ == "__main__":
    unittest.main()
