"""Shared pieces of the interop suite: Sluice against real third-party
software (Postfix's smtp-sink/smtp-source and a private Postfix, Dovecot,
dnsmasq, swaks) started by the tests on loopback.

Builds on tests/integration/harness.py (the sluiced wrapper, the raw SMTP
client, polling with deadlines). Every test gets a private temp dir; every
program it starts runs with its own config, queue and log under that dir, on
free loopback ports, and is stopped by PID in the test's cleanup, also when
the test fails. A missing program is a failure naming the Debian package to
install (scripts/install-deps --interop), never a skip.

Nothing sleeps to wait for a condition: waits poll with a deadline.
"""

import email
import email.policy
import os
import pwd
import grp
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

import harness  # noqa: E402
from harness import (  # noqa: E402,F401
    LOOPBACK, HOSTNAME, DaemonTestCase, Proc, RawSmtp, free_port, make_message, probe_greeting,
    queued_id, send_message, split_received, wait_until)

# Program → the Debian package that ships it.
PACKAGES = {
    "swaks": "swaks",
    "smtp-sink": "postfix",
    "smtp-source": "postfix",
    "postfix": "postfix",
    "postconf": "postfix",
    "sendmail": "postfix",
    "dovecot": "dovecot-core (plus dovecot-lmtpd, dovecot-imapd, dovecot-pop3d)",
    "dnsmasq": "dnsmasq-base",
}

SEARCH_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"


def require(program):
    """Absolute path of a third-party program; AssertionError naming the package if missing."""
    found = shutil.which(program, path=SEARCH_PATH)
    if not found:
        raise AssertionError(
            f"{program} not found: install the Debian package {PACKAGES.get(program, '?')} "
            f"(scripts/install-deps --interop)")
    return found


def require_file(path, package):
    if not Path(path).exists():
        raise AssertionError(f"{path} not found: install the Debian package {package} "
                             f"(scripts/install-deps --interop)")
    return str(path)


IS_ROOT = os.geteuid() == 0


def lf(data):
    """CRLF → LF: smtp-sink dumps, Postfix maildirs and imaplib differ in line ends."""
    return data.replace(b"\r\n", b"\n")


def crlf(data):
    return lf(data).replace(b"\n", b"\r\n")


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    state = stat[stat.rindex(b")") + 2:][:1]
    return state not in (b"Z", b"X")


# ---------------------------------------------------------------------------
# Processes


class InteropTestCase(DaemonTestCase):
    """DaemonTestCase (private temp dir, sluiced cleanup) plus third-party
    processes. The temp dir is made world-traversable: Postfix, Dovecot and
    smtp-sink drop privileges and must reach their files under it."""

    def setUp(self):
        super().setUp()
        os.chmod(self.workdir, 0o755)
        self.services = []  # anything with stop() and log_text(), stopped in reverse
        self.addCleanup(self._stop_services)

    def _stop_services(self):
        errors = []
        for s in reversed(self.services):
            try:
                s.stop()
            except Exception as e:  # keep stopping the others
                errors.append(f"{s.name}: {e}")
        if self.failed() or errors:
            for s in self.services:
                text = s.log_text()
                if text:
                    print(f"\n===== {s.name} log =====\n{text[-8000:]}")
            for d in self.daemons:
                print(f"\n===== sluiced log ({d.workdir}) =====\n{d.log_text()[-20000:]}")
        if errors:
            raise AssertionError(f"could not stop: {errors}")

    def failed(self):
        """Whether this test has failed so far. (Inside a cleanup,
        self._outcome.success is always True on Python 3.11: each cleanup
        runs in its own testPartExecutor; the result object knows.)"""
        result = getattr(self._outcome, "result", None)
        if result is None:
            return False
        return any(t is self for t, _ in list(result.errors) + list(result.failures))

    def spawn(self, name, argv, env=None):
        p = Proc(name, argv, self.workdir, env=env)
        self.services.append(p)
        return p

    def subdir(self, name, owner=None, mode=0o755):
        p = self.workdir / name
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, mode)
        if owner is not None and IS_ROOT:
            os.chown(p, *owner)
        return p

    # -- helpers used by several modules -----------------------------------

    def swaks(self, port, sender, recipients, data, protocol="ESMTP", extra=()):
        """Sends `data` (bytes, CRLF, ending in CRLF) with swaks; returns
        swaks' transcript. swaks ends DATA with CRLF "." CRLF after the file's
        last byte, so the file holds the message minus its final CRLF."""
        exe = require("swaks")
        if not data.endswith(b"\r\n"):
            raise ValueError("message must end with CRLF")
        msg = self.workdir / f"swaks.{time.monotonic_ns()}.eml"
        msg.write_bytes(data[:-2])
        argv = [exe, "--server", f"{LOOPBACK}:{port}", "--protocol", protocol,
                "--helo", "client.test", "--from", sender,
                "--to", ",".join(recipients), "--data", f"@{msg}", "--timeout", "30", *extra]
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
        if r.returncode != 0:
            raise AssertionError(f"swaks exited {r.returncode}:\n{out}")
        return out

    def wait_log(self, daemon, needle, count=1, timeout=60):
        """Polls sluiced's log until `needle` occurs `count` times."""
        return wait_until(lambda: daemon.log_text().count(needle) >= count, timeout,
                          f"{count}× {needle!r} in the sluiced log", interval=0.05)

    def wait_queue_empty(self, daemon, timeout=60):
        wait_until(lambda: daemon.queue_count() == 0, timeout, "an empty Sluice queue",
                   interval=0.1)


# ---------------------------------------------------------------------------
# smtp-sink


def sink_user():
    """smtp-sink refuses to run as root without -u; root keeps its rights."""
    return ["-u", pwd.getpwuid(os.geteuid()).pw_name] if IS_ROOT else []


class SmtpSink:
    """Postfix's smtp-sink on address:port. With dump=True every transaction
    is written to DUMPDIR/<minute>.<random>, one file per message."""

    def __init__(self, tc, name="sink", address=LOOPBACK, port=None, dump=True, extra=()):
        self.tc = tc
        self.name = name
        self.address = address
        self.port = port or free_port()
        self.dump_dir = tc.subdir(f"{name}.dump") if dump else None
        argv = [require("smtp-sink"), *sink_user(), "-h", f"{name}.test"]
        if dump:
            argv += ["-d", f"{self.dump_dir}/%M."]
        argv += [*extra, f"{address}:{self.port}", "256"]
        self.proc = tc.spawn(name, argv)
        wait_until(self._ready, 15, f"{name} greeting on {address}:{self.port}")

    def _ready(self):
        self.proc.check_running()
        try:
            with socket.create_connection((self.address, self.port), timeout=2) as s:
                c = RawSmtp(s)
                if c.reply()[0] != 220:
                    return False
                c.cmd("QUIT")
                return True
        except (OSError, harness.SmtpClosed):
            return False

    def dumps(self):
        return sorted(self.dump_dir.iterdir()) if self.dump_dir.exists() else []

    def wait_count(self, n, timeout=60):
        wait_until(lambda: len(self.dumps()) >= n, timeout,
                   f"{n} message(s) at {self.name}", interval=0.05)
        got = len(self.dumps())
        if got != n:
            raise AssertionError(f"{self.name} has {got} messages, expected {n}")

    def messages(self):
        return [SinkDump.parse(p.read_bytes(), p) for p in self.dumps()]


class SinkDump:
    """One smtp-sink dump: its X-* envelope lines, then its own three-line
    Received header, then the message as received (LF line ends), then an
    empty line."""

    def __init__(self, helo, sender, recipients, message, path):
        self.helo = helo
        self.sender = sender
        self.recipients = recipients
        self.message = message  # LF line ends
        self.path = path

    @classmethod
    def parse(cls, data, path=None):
        lines = data.split(b"\n")
        helo, sender, rcpts = None, None, []
        i = 0
        for i, line in enumerate(lines):
            if line.startswith(b"Received: from "):
                break
            key, _, value = line.partition(b": ")
            if key == b"X-Helo-Args":
                helo = value.decode()
            elif key == b"X-Mail-Args":
                sender = value.decode()
            elif key == b"X-Rcpt-Args":
                rcpts.append(value.decode())
            elif not key.startswith(b"X-"):
                raise AssertionError(f"{path}: unexpected sink line {line!r}")
        else:
            raise AssertionError(f"{path}: no smtp-sink Received header")
        if b"(smtp-sink)" not in lines[i + 1]:
            raise AssertionError(f"{path}: malformed smtp-sink Received header")
        body = b"\n".join(lines[i + 3:])
        if not body.endswith(b"\n\n"):
            raise AssertionError(f"{path}: incomplete dump (no trailing empty line)")
        return cls(helo, sender, rcpts, body[:-1], path)


def smtp_addr(arg):
    """'<a@b> SIZE=12 BODY=8BITMIME' → 'a@b'."""
    first = arg.split(" ")[0]
    return first[1:-1] if first.startswith("<") and first.endswith(">") else first


def check_relayed(tc, got_lf, sent, by=HOSTNAME):
    """got_lf (LF line ends) must be exactly one Received header added by
    Sluice followed by the sent message byte for byte (modulo CRLF → LF)."""
    received, rest = split_received(crlf(got_lf))
    tc.assertEqual(rest, crlf(sent), "message bytes changed in transit")
    tc.assertIn(f"by {by}".encode(), received, f"not our Received header: {received!r}")
    tc.assertEqual(lf(received).count(b"Received:"), 1)
    return received


# ---------------------------------------------------------------------------
# Maildirs and DSNs


def maildir_messages(root):
    """Bytes of every message in root/new and root/cur, oldest name first."""
    root = Path(root)
    out = []
    for sub in ("new", "cur"):
        d = root / sub
        if d.is_dir():
            out += [p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()]
    return out


def wait_maildir(root, n, timeout=60, what=None):
    wait_until(lambda: len(maildir_messages(root)) >= n, timeout,
               what or f"{n} message(s) in maildir {root}", interval=0.05)
    msgs = maildir_messages(root)
    if len(msgs) != n:
        raise AssertionError(f"maildir {root} has {len(msgs)} messages, expected {n}")
    return msgs


class Dsn:
    """A parsed RFC 3464 bounce."""

    def __init__(self, raw):
        self.raw = raw
        self.msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        if self.msg.get_content_type() != "multipart/report":
            raise AssertionError(f"not a multipart/report: {self.msg.get_content_type()}\n"
                                 f"{raw[:2000]!r}")
        self.report_type = self.msg.get_param("report-type")
        parts = self.msg.get_payload()
        self.text = parts[0].get_payload(decode=True) or b""
        status = [p for p in parts if p.get_content_type() in
                  ("message/delivery-status", "message/global-delivery-status")]
        if len(status) != 1:
            raise AssertionError(f"expected one delivery-status part, got {len(status)}")
        # compat32 parses message/delivery-status as a list of header blocks.
        blocks = status[0].get_payload()
        self.per_message = dict(blocks[0].items())
        self.recipients = [dict(b.items()) for b in blocks[1:]]
        originals = [p for p in parts if p.get_content_type() in
                     ("message/rfc822", "text/rfc822-headers", "message/global",
                      "message/global-headers")]
        self.original = originals[0] if originals else None

    def recipient(self, address):
        for r in self.recipients:
            if address.lower() in r.get("Final-Recipient", "").lower():
                return r
        raise AssertionError(f"no DSN recipient block for {address}: {self.recipients}")


# ---------------------------------------------------------------------------
# dnsmasq


def dns_query(port, name, qtype=15, timeout=1.0):
    """One UDP query to 127.0.0.1:port; returns the rcode, or None on timeout."""
    qid = os.getpid() & 0xFFFF
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (LOOPBACK, port))
        try:
            data, _ = s.recvfrom(4096)
        except socket.timeout:
            return None
    if len(data) < 12 or struct.unpack(">H", data[:2])[0] != qid:
        return None
    return data[3] & 0x0F


class Dnsmasq:
    """dnsmasq authoritative for *.test on 127.0.0.1:port (UDP and TCP), no
    upstream, no /etc/hosts; `records` are extra dnsmasq options
    (--mx-host=..., --host-record=...)."""

    def __init__(self, tc, records, probe_name):
        exe = require_file("/usr/sbin/dnsmasq", "dnsmasq-base")
        self.port = free_udp_tcp_port()
        argv = [exe, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                "--no-hosts", "--pid-file=", "--listen-address=127.0.0.1", "--bind-interfaces",
                f"--port={self.port}", "--log-facility=-", "--log-queries", "--local=/test/"]
        if IS_ROOT:
            argv += ["--user=root", "--group=root"]
        argv += list(records)
        self.proc = tc.spawn("dnsmasq", argv)

        def ready():
            self.proc.check_running()
            return dns_query(self.port, probe_name, timeout=0.2) == 0

        wait_until(ready, 15, f"dnsmasq answering on port {self.port}")


def free_udp_tcp_port():
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((LOOPBACK, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free for both UDP and TCP")


# ---------------------------------------------------------------------------
# A private Postfix instance


POSTFIX_MASTER_CF = """\
{smtpd_address}:{smtpd_port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A private Postfix instance under tc.workdir/<name>: its own main.cf and
    master.cf (no chroot), queue, data dir and maillog file; smtpd on
    127.0.0.1:smtpd_port. `settings` are extra main.cf parameters.

    What a private instance needs (Postfix 3.7, as root):
      - queue_directory and data_directory exist (data owned by mail_owner);
        the postfix command exits 1 silently if it cannot chdir to the queue;
      - maillog_file under one of maillog_file_prefixes (default /var,
        /dev/stdout: a file elsewhere is refused, silently, because the
        refusal itself cannot be logged);
      - every path component traversable by mail_owner (the temp dir is 0755);
      - no chroot in master.cf (Debian's stock master.cf chroots smtpd).
    Started with `postfix -c DIR start` (master daemonizes; its PID is read
    from queue/pid/master.pid), stopped with `postfix -c DIR stop`, then
    SIGKILL to the master's process group if it has not gone by the deadline.
    """

    def __init__(self, tc, name, settings, smtpd_port=None):
        self.tc = tc
        self.name = name
        self.postfix = require("postfix")
        require("postconf")
        self.root = tc.subdir(name)
        self.conf = tc.subdir(f"{name}/conf")
        self.queue = tc.subdir(f"{name}/queue")
        data_owner = None
        if IS_ROOT:
            pw = pwd.getpwnam("postfix")
            data_owner = (pw.pw_uid, pw.pw_gid)
        self.data = tc.subdir(f"{name}/data", owner=data_owner, mode=0o700)
        self.maillog = self.root / "maillog"
        self.smtpd_port = smtpd_port or free_port()
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": f"{name}.postfix.test",
            "mydomain": "postfix.test",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "alias_maps": "",
            "alias_database": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtputf8_enable": "no",
            "smtp_dns_support_level": "disabled",
            "biff": "no",
            # Do not add Date:/Message-ID: to mail from 127.0.0.1: tests
            # compare message bytes end to end.
            "local_header_rewrite_clients": "",
        }
        main.update(settings)
        (self.conf / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in main.items()))
        (self.conf / "master.cf").write_text(POSTFIX_MASTER_CF.format(
            smtpd_address=LOOPBACK, smtpd_port=self.smtpd_port))
        self.master_pid = None
        self.tc.services.append(self)

    def run(self, *args, check=True, input=None):
        r = subprocess.run([self.postfix, "-c", str(self.conf), *args], input=input,
                           capture_output=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"postfix {' '.join(args)} exited {r.returncode}: "
                                 f"{r.stderr.decode(errors='replace')}\n{self.log_text()}")
        return r

    def start(self):
        self.run("check")
        self.run("start")
        pidfile = self.queue / "pid" / "master.pid"

        def master():
            try:
                return int(pidfile.read_text().split()[0])
            except (FileNotFoundError, ValueError, IndexError):
                return None

        self.master_pid = wait_until(master, 15, f"{self.name} master.pid")
        wait_until(lambda: probe_greeting(self.smtpd_port), 20,
                   f"{self.name} smtpd on port {self.smtpd_port}")
        return self

    def stop(self):
        if self.master_pid is None or not pid_alive(self.master_pid):
            return
        self.run("stop", check=False)
        try:
            wait_until(lambda: not pid_alive(self.master_pid), 20,
                       f"{self.name} master {self.master_pid} to exit", interval=0.05)
        except AssertionError:
            os.killpg(self.master_pid, signal.SIGKILL)  # master runs setsid: its own group
            raise

    def log_text(self):
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sendmail(self, sender, recipients, message):
        """Local submission through this instance's sendmail/postdrop/pickup."""
        exe = require("sendmail")
        r = subprocess.run([exe, "-C", str(self.conf), "-f", sender, "-i", "--", *recipients],
                           input=message, capture_output=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"sendmail exited {r.returncode}: "
                                 f"{r.stderr.decode(errors='replace')}\n{self.log_text()}")


def nobody_ids():
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


def group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False
