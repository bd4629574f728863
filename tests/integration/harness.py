"""Shared harness for the Sluice integration tests (Python 3 stdlib only).

Every test gets a private temporary directory (config, spool, logs), free
loopback ports, its own sluiced process(es) and a cleanup that stops every
process it started by PID, also when the test fails.

Binaries: $SLUICED / $SLUICECTL (set by tests/meson.build), else
build/gateway/sluiced and build/admin/sluicectl under the repository root.

Every helper that more than one test module uses lives here: the daemon (with
its admin port and its JSON event log), SMTP over a raw socket, the scrape
parser, and the programs the TLS tests need. A test module keeps only what it
alone uses, and no test module imports another.

Nothing here sleeps to wait for a condition: every wait polls with a
deadline, and every loop is bounded in iterations and time.
"""

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

from sink import Sink

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
HOSTNAME = "test.sluice"

# The domain of the senders whose DSNs relay() delivers to a maildir.
SENDER_DOMAIN = "sender.test"

# The id in "250 2.0.0 Ok: queued as <ID>": Crockford base32, 26 characters.
QUEUED_RE = re.compile(rb"queued as ([0-9A-Z]{26})\b")
# The TLS clause of a Received header: "(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)".
RECEIVED_TLS_RE = re.compile(rb"\(using (TLSv1\.[23]) with cipher ([A-Za-z0-9_-]+)\)")

POLL_INTERVAL = 0.02  # between polls of a condition that has a deadline


# sluiced and sluicectl run with cwd = the test's temp dir: a relative $SLUICED
# (as in "SLUICED=../../build/gateway/sluiced") is made absolute while the cwd
# is still the one it is relative to.
for _var in ("SLUICED", "SLUICECTL", "SLUICE_BLAST"):
    if os.environ.get(_var):
        os.environ[_var] = os.path.abspath(os.environ[_var])


def _binary(env_name, relative):
    value = os.environ.get(env_name)
    if value:
        return Path(value)
    return REPO_ROOT / relative


def sluiced_path():
    return _binary("SLUICED", "build/gateway/sluiced")


def sluicectl_path():
    return _binary("SLUICECTL", "build/admin/sluicectl")


def blast_path():
    """sluice-blast, the project's load generator (bench/blast)."""
    return _binary("SLUICE_BLAST", "build/bench/blast/sluice-blast")


def run_blast(port, *args, timeout=300):
    """Runs sluice-blast against a loopback port; returns its JSON report."""
    p = blast_path()
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise AssertionError(f"sluice-blast not built ({p})")
    out = Path(tempfile.mkdtemp(prefix="blast.")) / "report.json"
    try:
        r = subprocess.run([str(p), "--target", f"{LOOPBACK}:{port}", "--json", str(out),
                            *[str(a) for a in args]],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        if not out.exists():
            raise AssertionError(f"sluice-blast wrote no report (exit {r.returncode}): "
                                 f"{r.stdout.decode(errors='replace')}"
                                 f"{r.stderr.decode(errors='replace')}")
        return json.loads(out.read_text())
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def have_sluicectl():
    p = sluicectl_path()
    return p.is_file() and os.access(p, os.X_OK)


def require_sluicectl():
    """Spool assertions need sluicectl; a missing binary is a failure, never a skip."""
    if not have_sluicectl():
        raise AssertionError(f"sluicectl not built ({sluicectl_path()})")


def free_port(exclude=()):
    """A loopback port that was free a moment ago: bind port 0, read it, close."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port
    raise RuntimeError("no free loopback port")


def wait_until(predicate, timeout, what, interval=POLL_INTERVAL):
    """Polls predicate() until it returns a true value or the deadline passes."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---------------------------------------------------------------------------
# Programs the tests run

# program → the Debian package that installs it
PROGRAMS = {"swaks": "swaks", "curl": "curl", "openssl": "openssl", "mkpasswd": "whois",
            "htpasswd": "apache2-utils"}


def require_program(name):
    """A needed program that is missing is a failure, never a skip."""
    path = shutil.which(name)
    if not path:
        pkg = PROGRAMS[name]
        raise AssertionError(f"{name} not found on PATH; install the Debian package {pkg} "
                             f"(apt-get install {pkg})")
    return path


def run_program(args, timeout=60, input=None):
    """A client program with a bounded run time: (exit status, stdout+stderr as text)."""
    try:
        r = subprocess.run([str(a) for a in args], input=input, capture_output=True,
                           timeout=timeout, stdin=None if input is not None else
                           subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:  # run() has killed and reaped it
        raise AssertionError(f"{args[0]} did not finish within {timeout} s: {e.output!r}")
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


def make_dev_certs(directory):
    """scripts/dev-cert DIR: ecdsa.{key,crt} (P-256) and rsa.{key,crt} (2048 bits) for
    localhost and 127.0.0.1, self-signed. Returns the directory."""
    require_program("openssl")
    directory = Path(directory)
    rc, out = run_program([REPO_ROOT / "scripts" / "dev-cert", directory])
    if rc != 0:
        raise AssertionError(f"scripts/dev-cert failed: {out}")
    for f in ("ecdsa.key", "ecdsa.crt", "rsa.key", "rsa.crt"):
        if not (directory / f).is_file():
            raise AssertionError(f"dev-cert did not write {f}")
    return directory


class Proc:
    """A program we started (a child): output to a log file, stopped by PID."""

    def __init__(self, name, argv, workdir, env=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(workdir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=workdir, env=env)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc.poll() is None

    def check_running(self):
        if not self.running():
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n"
                                 + self.log_text())

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        if self._log:
            self._log.close()
            self._log = None


# ---------------------------------------------------------------------------
# Configuration


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string here
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def render_config(server, spool, listeners, delivery=None, routes=()):
    lines = ["[server]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in server.items()]
    lines += ["", "[spool]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in spool.items()]
    for listener in listeners:
        lines += ["", "[[listener]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in listener.items()]
    if delivery:
        lines += ["", "[delivery]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in delivery.items()]
    for route in routes:
        lines += ["", "[[route]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in route.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# The daemon


class Daemon:
    """One sluiced on a private spool. Listeners are dicts of listener keys;
    "port" is filled in with a free port unless given. The config is written
    once, so restarts reuse the same spool and ports."""

    def __init__(self, workdir, listeners=None, server=None, spool=None, delivery=None,
                 routes=None):
        self.workdir = Path(workdir)
        self.spool_path = self.workdir / "spool"
        self.config_path = self.workdir / "sluice.toml"
        self.proc = None
        self.starts = 0
        self._log = None
        self.nofile = None  # (soft, hard) RLIMIT_NOFILE to start sluiced with; None: inherit
        # argv prefix for sluiced and sluicectl (e.g. nsenter into a private mount namespace)
        self.wrapper = []
        self.server = {"hostname": HOSTNAME, "shards": 2, "shutdown_grace": 5,
                       "log_level": "info"}
        self.server.update(server or {})
        # A test spool is tiny: refuse mail only when the disk is nearly full, not below
        # the production default (1 GiB), so the suite runs on machines short of space too.
        self.spool = {"path": str(self.spool_path), "min_free_bytes": 16 << 20}
        self.spool.update(spool or {})
        # Delivery is off unless a test asks for it: ingest tests inspect the
        # spool, and nothing may try to reach the outside world.
        self.delivery = {"enabled": False} if delivery is None else dict(delivery)
        self.routes = list(routes or [])
        self.listeners = []
        used = set()
        for i, spec in enumerate(listeners or [{}]):
            listener = {"name": f"l{i}", "address": LOOPBACK,
                        "mynetworks": ["127.0.0.0/8"]}
            listener.update(spec)
            if "port" not in listener:
                listener["port"] = free_port(used)
            used.add(listener["port"])
            self.listeners.append(listener)
        self.write_config()

    @property
    def port(self):
        return self.listeners[0]["port"]

    def port_of(self, name):
        for listener in self.listeners:
            if listener["name"] == name:
                return listener["port"]
        raise KeyError(name)

    def write_config(self):
        self.config_path.write_text(render_config(self.server, self.spool, self.listeners,
                                                  self.delivery, self.routes))

    @property
    def log_path(self):
        return self.workdir / f"sluiced.{self.starts}.log"

    def log_text(self):
        """The human log (stderr) of every start. Tests learn outcomes from the
        event log (events()), not from this text."""
        out = []
        for i in range(1, self.starts + 1):
            p = self.workdir / f"sluiced.{i}.log"
            if p.exists():
                out.append(f"--- sluiced start #{i} ---\n" + p.read_text(errors="replace"))
        return "\n".join(out)

    @property
    def event_log_path(self):
        """The [server] event_log file, or None when this daemon writes none to a file."""
        path = self.server.get("event_log")
        return Path(path) if path and path != "-" else None

    def events(self, kind=None, **fields):
        """The JSON event log so far: every event, or those of one kind whose
        fields have the given values. The writer flushes within 200 ms, so a
        test polls for the events it waits for (wait_events)."""
        if self.event_log_path is None:
            raise AssertionError("this daemon writes no event log (daemon(event_log=True))")
        events = read_events(self.event_log_path)
        return events if kind is None else find_events(events, kind, **fields)

    def wait_events(self, kind, count=1, timeout=20, **fields):
        """Polls until at least `count` events of `kind` with these field values
        are in the event log; returns them."""
        def enough():
            got = self.events(kind, **fields)
            return got if len(got) >= count else None

        return wait_until(enough, timeout, f"{count} {kind} event(s) {fields} in the event log",
                          interval=0.05)

    def start(self, timeout=20):
        """Starts sluiced and waits until every listener answers 220."""
        assert not self.running(), "already running"
        self.starts += 1
        self._log = open(self.log_path, "wb")
        nofile = self.nofile

        def limits():
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
        self.proc = subprocess.Popen(
            [*self.wrapper, str(sluiced_path()), "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.workdir, preexec_fn=limits if nofile is not None else None)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        for listener in self.listeners:
            port = listener["port"]

            implicit_tls = listener.get("tls") == "implicit"

            def greeted():
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"sluiced exited with {self.proc.returncode} during startup:\n"
                        + self.log_text())
                if implicit_tls:
                    # The greeting comes after the TLS handshake: a TCP
                    # connection is the sign of life here.
                    try:
                        socket.create_connection((LOOPBACK, port), timeout=1).close()
                        return True
                    except OSError:
                        return False
                return probe_greeting(port)

            wait_until(greeted, max(0.1, deadline - time.monotonic()),
                       f"220 greeting on port {port}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        if self.running():
            os.kill(self.proc.pid, sig)

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"sluiced did not exit {timeout} s after SIGTERM:\n"
                                 + self.log_text())
        self._close_log()
        return rc

    def kill(self):
        """SIGKILL by PID and reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        self._close_log()

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- spool inspection through sluicectl --------------------------------

    def sluicectl(self, *args, check=True, timeout=60):
        require_sluicectl()
        r = subprocess.run([*self.wrapper, str(sluicectl_path()), "--config",
                            str(self.config_path), *args],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                           cwd=self.workdir)
        if check and r.returncode != 0:
            raise AssertionError(f"sluicectl {' '.join(args)} exited {r.returncode}: "
                                 f"{r.stderr.decode(errors='replace')}")
        return r

    def export_spool(self):
        """{id: SpooledMessage} for every message in the spool."""
        require_sluicectl()
        out = Path(tempfile.mkdtemp(prefix="export.", dir=self.workdir))
        self.sluicectl("queue", "export", str(out))
        messages = {}
        for meta in sorted(out.glob("*.json")):
            mid = meta.stem
            env = json.loads(meta.read_text())
            body = (out / f"{mid}.eml").read_bytes()
            messages[mid] = SpooledMessage(mid, env, body)
        stray = {p.stem for p in out.glob("*.eml")} - set(messages)
        if stray:
            raise AssertionError(f"export wrote bodies without envelopes: {sorted(stray)}")
        shutil.rmtree(out, ignore_errors=True)
        return messages

    def queue_count(self):
        r = self.sluicectl("queue", "count")
        return int(r.stdout.split()[0])


def _address(a):
    """Envelope addresses as plain strings, whatever shape sluicectl gives them."""
    if isinstance(a, dict):
        a = a.get("address", "")
    a = a or ""
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1]
    return a


class SpooledMessage:
    def __init__(self, mid, envelope, body):
        self.id = mid
        self.envelope = envelope
        self.body = body

    @property
    def sender(self):
        return _address(self.envelope.get("sender"))

    @property
    def recipients(self):
        return [_address(r) for r in self.envelope.get("recipients", [])]

    @property
    def received(self):
        return split_received(self.body)[0]

    @property
    def message(self):
        """The stored body minus our Received header: what the client sent."""
        return split_received(self.body)[1]

    def __repr__(self):
        return f"<SpooledMessage {self.id} from={self.sender!r} to={self.recipients!r}>"


def split_received(body):
    """(our Received header, rest). The header starts with "Received: from ",
    its folded lines start with TAB, and it ends before the first line that
    starts with neither TAB nor space."""
    if not body.startswith(b"Received: from "):
        raise AssertionError(f"stored body does not start with our Received header: "
                             f"{body[:80]!r}")
    pos = body.index(b"\r\n") + 2
    for _ in range(len(body)):
        if pos < len(body) and body[pos:pos + 1] in (b"\t", b" "):
            pos = body.index(b"\r\n", pos) + 2
        else:
            break
    return body[:pos], body[pos:]


# ---------------------------------------------------------------------------
# The admin port: /metrics, /healthz, /readyz


class AdminDaemon(Daemon):
    """A Daemon plus an [admin] table on a free loopback port."""

    def __init__(self, workdir, admin=True, **kw):
        self.admin = None
        if admin:
            used = {l.get("port") for l in kw.get("listeners") or [] if l.get("port")}
            self.admin = {"address": LOOPBACK, "port": free_port(used)}
        super().__init__(workdir, **kw)

    @property
    def admin_port(self):
        return self.admin["port"]

    def write_config(self):
        text = render_config(self.server, self.spool, self.listeners, self.delivery,
                             self.routes)
        if self.admin:
            text += "\n[admin]\n" + "".join(
                f"{k} = {_toml_value(v)}\n" for k, v in self.admin.items())
        self.config_path.write_text(text)

    def start(self, timeout=20):
        super().start(timeout)
        if self.admin:
            try:
                wait_until(lambda: self._healthz_ok(), timeout, "the admin port's /healthz",
                           interval=0.05)
            except BaseException:
                self.kill()
                raise
        return self

    def _healthz_ok(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"sluiced exited with {self.proc.returncode}:\n"
                                 + self.log_text())
        try:
            return http_get(self.admin_port, "/healthz")[0] == 200
        except OSError:
            return False

    def get(self, path):
        return http_get(self.admin_port, path)

    def scrape(self):
        status, headers, body = self.get("/metrics")
        if status != 200:
            raise AssertionError(f"GET /metrics: {status} {body[:200]!r}")
        return Scrape(body.decode("utf-8"), headers)


def http_get(port, path, timeout=10.0):
    """(status, headers, body) of GET http://127.0.0.1:port/path."""
    url = f"http://{LOOPBACK}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# The Prometheus text format (what /metrics serves), parsed strictly enough to find our samples.
_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?$")
_LABEL_RE = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*,?')


def _unescape(v):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


class Scrape:
    def __init__(self, text, headers=None):
        self.text = text
        self.headers = headers or {}
        self.samples = []   # (name, {label: value}, float)
        self.types = {}     # family name → counter|gauge|histogram|summary|untyped
        for line in text.split("\n"):
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip()
                continue
            m = _SAMPLE_RE.match(line)
            if not m:
                raise AssertionError(f"unparsable sample line {line!r}")
            labels = {}
            body = m.group(2) or ""
            pos = 0
            for _ in range(len(body) + 1):
                if pos >= len(body):
                    break
                lm = _LABEL_RE.match(body, pos)
                if not lm:
                    raise AssertionError(f"unparsable labels in {line!r}")
                labels[lm.group(1)] = _unescape(lm.group(2))
                pos = lm.end()
            self.samples.append((m.group(1), labels, float(m.group(3))))

    @property
    def names(self):
        return {name for name, _, _ in self.samples}

    def series(self, name, **match):
        return [(labels, v) for n, labels, v in self.samples
                if n == name and all(labels.get(k) == val for k, val in match.items())]

    def has(self, name, **match):
        return bool(self.series(name, **match))

    def sum(self, name, **match):
        """Sum over the matching series; 0 when there is none."""
        return sum(v for _, v in self.series(name, **match))

    def by(self, name, *keys, **match):
        """{(label values...): value} for the matching series."""
        out = {}
        for labels, v in self.series(name, **match):
            k = tuple(labels.get(key, "") for key in keys)
            out[k] = out.get(k, 0) + v
        return out


def scrape_excerpt(scrape, limit=200):
    """The samples of a scrape without comments and buckets, for a failure message."""
    if scrape is None:
        return "(none)"
    lines = [l for l in scrape.text.split("\n") if l and not l.startswith("#")
             and "_bucket{" not in l]
    return "\n".join(lines[:limit])


# ---------------------------------------------------------------------------
# The JSON event log ([server] event_log; metrics/event_log.h)

EVENT_TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def read_events(path):
    """[event dict] of a JSON-lines file; every line must be a whole JSON
    object (the last line too: the writer writes whole lines)."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        raise AssertionError(f"{path}: last line is incomplete: {text[-200:]!r}")
    out = []
    for n, line in enumerate(text.split("\n")[:-1], 1):
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"{path}:{n}: not JSON ({e}): {line!r}") from None
        if not isinstance(obj, dict):
            raise AssertionError(f"{path}:{n}: not an object: {line!r}")
        keys = list(obj)
        if keys[:2] != ["ts", "event"]:
            raise AssertionError(f"{path}:{n}: first fields are {keys[:2]}, not ts, event")
        if not EVENT_TS_RE.match(obj["ts"]):
            raise AssertionError(f"{path}:{n}: ts {obj['ts']!r} is not RFC 3339 UTC with µs")
        out.append(obj)
    return out


def find_events(events, kind, **fields):
    """The events of one kind whose fields have the given values."""
    return [e for e in events if e["event"] == kind
            and all(e.get(k) == v for k, v in fields.items())]


# ---------------------------------------------------------------------------
# SMTP over a raw socket


def probe_greeting(port, timeout=2.0):
    """True if the port accepts and greets with 220 (then QUIT and wait for close)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
            c = RawSmtp(s)
            code, _ = c.reply()
            if code != 220:
                return False
            c.send(b"QUIT\r\n")
            c.reply()
            c.wait_closed(timeout)
            return True
    except (OSError, SmtpClosed, AssertionError):
        return False


class SmtpClosed(Exception):
    pass


class RawSmtp:
    """A minimal SMTP client over a socket: send raw bytes, read replies."""

    MAX_REPLY_LINES = 100

    def __init__(self, sock, timeout=15.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""

    @classmethod
    def connect(cls, port, timeout=15.0, source=None):
        """source: a local address to connect from (any of 127.0.0.0/8 is this
        host on Linux), to appear as another client."""
        addr = (source, 0) if source else None
        return cls(socket.create_connection((LOOPBACK, port), timeout=timeout,
                                            source_address=addr), timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self):
        for _ in range(100000):
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SmtpClosed(f"connection closed; unparsed {self.buf!r}")
            self.buf += chunk
        raise AssertionError("reply line too long")

    def reply(self):
        """(code, [text lines]) of the next (possibly multi-line) reply."""
        lines = []
        for _ in range(self.MAX_REPLY_LINES):
            line = self._line()
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b""):
                raise AssertionError(f"malformed reply line {line!r}")
            lines.append(line[4:].decode(errors="replace"))
            if line[3:4] != b"-":
                return int(line[:3]), lines
        raise AssertionError("reply with too many lines")

    def cmd(self, line):
        self.send(line.encode() + b"\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply()

    def expect(self, code, line=None):
        if line is not None:
            got = self.cmd(line)
        else:
            got = self.reply()
        if got[0] != code:
            raise AssertionError(f"{line!r}: expected {code}, got {got}")
        return got

    def replies_until_close(self, limit=50):
        """Every reply until the server closes (bounded)."""
        out = []
        for _ in range(limit):
            try:
                out.append(self.reply())
            except (SmtpClosed, ConnectionResetError):
                return out
        raise AssertionError(f"server did not close after {limit} replies: {out}")

    def wait_closed(self, timeout=10.0):
        """Asserts the server closes the connection (EOF or reset) within timeout;
        returns any bytes received before."""
        deadline = time.monotonic() + timeout
        data = self.buf
        self.buf = b""
        for _ in range(10000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk
        raise AssertionError(f"server did not close the connection within {timeout} s "
                             f"(received {data!r})")

    def greet(self, helo="client.test"):
        self.expect(220)
        return self.expect(250, f"EHLO {helo}")


def queued_id(reply_text):
    """The id from a 250 reply's text (str or list of lines)."""
    if isinstance(reply_text, list):
        reply_text = "\n".join(reply_text)
    m = QUEUED_RE.search(reply_text.encode())
    if not m:
        raise AssertionError(f"no 'queued as ID' in {reply_text!r}")
    return m.group(1).decode()


def dot_stuff(message):
    """DATA transparency (RFC 5321 §4.5.2) for a CRLF message."""
    assert message.endswith(b"\r\n")
    lines = message.split(b"\r\n")
    return b"\r\n".join((b"." + l if l.startswith(b".") else l) for l in lines)


def send_message(client, sender, recipients, message, rcpt_params=""):
    """A whole transaction on an open, greeted RawSmtp; returns the final reply.
    rcpt_params: ESMTP parameters for every RCPT (e.g. "NOTIFY=NEVER")."""
    client.expect(250, f"MAIL FROM:<{sender}>")
    for r in recipients:
        client.expect(250, f"RCPT TO:<{r}>" + (f" {rcpt_params}" if rcpt_params else ""))
    client.expect(354, "DATA")
    client.send(dot_stuff(message) + b".\r\n")
    return client.reply()


def make_message(token, extra_headers=(), body_lines=None, subject=None):
    headers = [f"From: <sender@client.test>", f"To: <rcpt@dest.test>",
               f"Subject: {subject or 'test ' + token}", f"Message-ID: <{token}@client.test>",
               f"X-Test-Token: {token}", *extra_headers]
    if body_lines is None:
        body_lines = [f"token {token}", "second line", ".a line that starts with a dot",
                      "..two dots", "last line"]
    return ("\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(body_lines) + "\r\n").encode()


# ---------------------------------------------------------------------------
# Test case base

# Shrunk delivery timings, except that a deferred message waits a minute before
# its next attempt: a test looks at it while it waits, and exact counts do not
# move under it.
SLOW_RETRY_DELIVERY = {
    "enabled": True,
    "retry_initial": 60,
    "retry_max": 120,
    "destination_backoff": 1,
    "idle_timeout": 1,
    "connect_timeout": 2,
    "command_timeout": 10,
    "data_timeout": 10,
}


class DaemonTestCase(unittest.TestCase):
    """Gives each test a private temp dir and stops every daemon it made."""

    maxDiff = 4000

    def setUp(self):
        if not (sluiced_path().is_file() and os.access(sluiced_path(), os.X_OK)):
            self.fail(f"sluiced not built ({sluiced_path()}); run ninja -C build")
        self.workdir = Path(tempfile.mkdtemp(prefix="sluice-it."))
        self.daemons = []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        # Every daemon still running is stopped the way an operator would, and
        # must exit 0: a crash, a hang or a sanitizer report at exit fails the
        # test even if everything before looked fine.
        bad_exits = []
        for d in self.daemons:
            if d.running():
                try:
                    rc = d.stop()
                except AssertionError as e:
                    rc = str(e)
                if rc != 0:
                    bad_exits.append((str(d.workdir), rc))
            d.kill()
        failed = self._test_failed()
        keep = os.environ.get("SLUICE_KEEP_TMP")
        if failed:
            for d in self.daemons:
                text = d.log_text()
                if text:
                    print(f"\n===== sluiced log ({d.workdir}) =====\n{text[-20000:]}")
                path = d.event_log_path
                if path is not None and path.exists():
                    events = path.read_text(errors="replace")
                    print(f"\n===== event log ({path}) =====\n{events[-20000:]}")
        if bad_exits:
            for d in self.daemons:
                print(f"\n===== sluiced log ({d.workdir}) =====\n{d.log_text()[-20000:]}")
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if bad_exits:
            raise AssertionError(f"sluiced did not exit 0 after SIGTERM: {bad_exits}")

    def _test_failed(self):
        # Python 3.11 runs each cleanup in its own part executor, which resets
        # _outcome.success; look at the recorded errors and failures instead.
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        result = getattr(outcome, "result", None)
        if result is None:
            return not outcome.success
        mine = [t for t, _ in list(result.errors) + list(result.failures) if t is self]
        return bool(mine) or not outcome.success

    def daemon(self, listeners=None, server=None, spool=None, start=True, subdir=None,
               delivery=None, routes=None, admin=False, event_log=False):
        """A daemon in its own directory under the test's. admin: with an admin
        port (an AdminDaemon). event_log: writing the JSON event log to
        events.jsonl there (unless `server` names another event_log)."""
        wd = self.workdir / (subdir or f"d{len(self.daemons)}")
        wd.mkdir()
        server = dict(server or {})
        if event_log:
            server.setdefault("event_log", str(wd / "events.jsonl"))
        kind = AdminDaemon if admin else Daemon
        d = kind(wd, listeners=listeners, server=server, spool=spool, delivery=delivery,
                 routes=routes)
        self.daemons.append(d)
        if start:
            d.start()
        return d

    def sink(self, **kw):
        """A scriptable SMTP/LMTP sink (sink.py), stopped at cleanup."""
        s = Sink(**kw).start()
        self.addCleanup(s.stop)
        return s

    def relay(self, sink_port, delivery=None, timings=SLOW_RETRY_DELIVERY, route=None,
              extra_routes=(), lmtp=False, **daemon_kw):
        """A daemon with delivery on: SENDER_DOMAIN mail (the DSNs) goes to the
        maildir self.maildir, `extra_routes` next, and every other domain to the
        sink (route "sink", SMTP or LMTP, updated with `route`). The [delivery]
        table is `timings` updated with `delivery`."""
        conf = dict(timings)
        conf.update(delivery or {})
        self.maildir = self.workdir / "senders-maildir"
        last = {"name": "sink", "domains": ["*"], "type": "lmtp" if lmtp else "smarthost",
                "host": LOOPBACK, "port": sink_port}
        last.update(route or {})
        routes = [{"name": "senders", "domains": [SENDER_DOMAIN], "type": "maildir",
                   "path": str(self.maildir)}, *extra_routes, last]
        return self.daemon(delivery=conf, routes=routes, **daemon_kw)

    def send(self, port, sender, recipients, message, rcpt_params=""):
        """One transaction on a new connection, which must be accepted; returns the queued id."""
        with RawSmtp.connect(port) as c:
            c.greet()
            code, text = send_message(c, sender, recipients, message, rcpt_params)
            self.assertEqual(code, 250, text)
            c.expect(221, "QUIT")
            return queued_id(text)

    def wait_scrape(self, d, predicate, timeout, what):
        """Scrapes an AdminDaemon until predicate(scrape) is true; returns that
        scrape. On a timeout the last scrape's samples are in the message."""
        last = [None]

        def check():
            last[0] = d.scrape()
            return predicate(last[0])

        try:
            wait_until(check, timeout, what, interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}; last scrape:\n{scrape_excerpt(last[0])}") from None
        return last[0]

    def client(self, port, greet=True, helo="client.test", source=None):
        c = RawSmtp.connect(port, source=source)
        self.addCleanup(c.close)
        if greet:
            c.greet(helo)
        return c

    def assertReply(self, got, code, enhanced=None):
        self.assertEqual(got[0], code, f"reply {got}")
        if enhanced is not None:
            self.assertTrue(got[1][-1].startswith(enhanced + " ") or got[1][-1] == enhanced,
                            f"expected enhanced code {enhanced} in {got}")
