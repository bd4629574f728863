"""The admin port's /metrics, /healthz and /readyz against a real sluiced:
the scrape is valid Prometheus text (promtool finds nothing to lint), the
counters count what the test did, a real Prometheus server scrapes it and
answers PromQL with the same numbers, and every metric that
deploy/prometheus/alerts.yml and deploy/grafana/sluice-dashboard.json use
exists in a live scrape.

Needs /usr/bin/promtool and /usr/bin/prometheus (or $PROMTOOL, $PROMETHEUS):
a missing binary fails the test, it never skips. The Prometheus started here
is our own process on a free loopback port with a private TSDB, stopped by
PID; the system service is never touched.
"""

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import urllib.parse
from pathlib import Path

import harness
from harness import (SENDER_DOMAIN, SLOW_RETRY_DELIVERY, DaemonTestCase, RawSmtp, http_get,
                     make_message, queued_id, scrape_excerpt, wait_until)

DEPLOY = harness.REPO_ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "sluice-dashboard.json"


def _tool(env_name, name):
    value = os.environ.get(env_name)
    if value:
        return value
    return shutil.which(name) or f"/usr/bin/{name}"


def require_tool(env_name, name):
    """A needed binary that is missing is a failure, never a skip."""
    path = _tool(env_name, name)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise AssertionError(f"{name} not found ({path}); install prometheus "
                             f"(Debian: apt-get install prometheus)")
    return path


# ---------------------------------------------------------------------------
# Metric names in PromQL

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "atan2", "inf", "nan", "start", "end",
}
# Series Prometheus makes itself, not the daemon.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
             "scrape_samples_post_metric_relabeling", "scrape_series_added", "ALERTS",
             "ALERTS_FOR_STATE"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def promql_metric_names(expr):
    """The metric names a PromQL expression selects: identifiers that are not
    functions (followed by "("), keywords, label names or strings."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    s = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", " ", s)   # Grafana variables
    s = re.sub(r"\{[^}]*\}", "{}", s)                               # label matchers
    s = re.sub(r"\[[^\]]*\]", "[]", s)                              # ranges, subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?!\w)(\s*\()?", s):
        ident, call = m.group(1), m.group(2)
        if call or ident.lower() in PROMQL_KEYWORDS:
            continue
        names.add(ident)
    return names


def rule_exprs(path):
    """[(alert name, expr)] from a rules file in the shape of deploy/prometheus:
    `expr: <one line>` or `expr: |` / `expr: >-` followed by a more indented
    block. Standard library only, so no YAML parser."""
    lines = Path(path).read_text().split("\n")
    out = []
    alert = None
    i = 0
    for _ in range(len(lines) + 1):
        if i >= len(lines):
            break
        line = lines[i]
        m = re.match(r"^\s*-\s*(alert|record):\s*(\S+)", line)
        if m:
            alert = m.group(2)
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest in ("|", "|-", ">", ">-", "|+", ">+", ""):
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip()
                                          or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                out.append((alert, "\n".join(block)))
                continue
            out.append((alert, rest.strip("'\"") if rest[:1] in "'\"" else rest))
        i += 1
    return out


def dashboard_exprs(dashboard):
    """[(panel title, expr)] over every panel, including panels nested in rows,
    and every query variable."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title"), t["expr"]))
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.match(r"^\s*label_values\(\s*(.*?)\s*,\s*[A-Za-z_]\w*\s*\)\s*$", q or "")
            out.append((f"variable {v['name']}", m.group(1) if m else q))
    return out


def missing_metrics(names, scrape):
    """Names with no sample in the scrape. A histogram name used with
    _bucket/_count/_sum must be a histogram family."""
    missing = []
    for name in sorted(names - SYNTHETIC):
        if name in scrape.names:
            base = next((name[:-len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
            if base and scrape.types.get(base) != "histogram" and name not in scrape.types:
                missing.append(f"{name} (no histogram family {base})")
            continue
        missing.append(name)
    return missing


# ---------------------------------------------------------------------------
# A DNS stub: NXDOMAIN for every question (UDP), so MX routes make lookups


class NxdomainDns:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((harness.LOOPBACK, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dns-stub", daemon=True)
        self._thread.start()

    def _run(self):
        for _ in range(100_000_000):
            if self._stop.is_set():
                return
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(data) < 12:
                continue
            qid, flags = struct.unpack("!HH", data[:4])
            pos = 12
            for _ in range(128):  # the question name: labels up to a zero byte
                if pos >= len(data) or data[pos] == 0:
                    break
                pos += 1 + data[pos]
            question = data[12:pos + 5]
            rd = flags & 0x0100
            reply = struct.pack("!HHHHHH", qid, 0x8000 | rd | 0x0080 | 3, 1, 0, 0, 0) + question
            self.queries += 1
            try:
                self.sock.sendto(reply, peer)
            except OSError:
                pass

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


# ---------------------------------------------------------------------------
# A Prometheus server of our own


class PrometheusServer:
    def __init__(self, workdir, targets, rule_files=(), interval="1s"):
        self.binary = require_tool("PROMETHEUS", "prometheus")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = harness.free_port()
        self.config = self.dir / "prometheus.yml"
        rules = "".join(f"  - {json.dumps(str(p))}\n" for p in rule_files)
        self.config.write_text(
            "global:\n"
            f"  scrape_interval: {interval}\n"
            f"  evaluation_interval: {interval}\n"
            + (f"rule_files:\n{rules}" if rules else "")
            + "scrape_configs:\n"
            "  - job_name: sluice\n"
            f"    scrape_interval: {interval}\n"
            f"    scrape_timeout: {interval}\n"
            "    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n")
        self.proc = None

    def start(self, timeout=60):
        self.proc = harness.Proc(
            "prometheus",
            [self.binary, f"--config.file={self.config}",
             f"--storage.tsdb.path={self.dir / 'tsdb'}",
             f"--web.listen-address={harness.LOOPBACK}:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            self.dir)

        def ready():
            self.proc.check_running()
            try:
                return http_get(self.port, "/-/ready", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout, "prometheus /-/ready", interval=0.1)
        return self

    def log_text(self):
        return self.proc.log_text()[-10000:] if self.proc is not None else ""

    def api(self, path, **params):
        qs = ("?" + urllib.parse.urlencode(params)) if params else ""
        status, _, body = http_get(self.port, path + qs)
        if status != 200:
            raise AssertionError(f"GET {path}{qs}: {status} {body[:300]!r}")
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise AssertionError(f"GET {path}{qs}: {doc}")
        return doc["data"]

    def query_scalar(self, expr):
        """The single value of an instant vector query, or None if empty."""
        data = self.api("/api/v1/query", query=expr)
        result = data["result"]
        if data["resultType"] != "vector" or len(result) != 1:
            return None
        return float(result[0]["value"][1])

    def stop(self, timeout=30):
        if self.proc is not None:
            self.proc.stop(timeout)


# ---------------------------------------------------------------------------


class MetricsTest(DaemonTestCase):

    N = 25

    def promtool(self, *args, stdin=None):
        r = subprocess.run([require_tool("PROMTOOL", "promtool"), *args], input=stdin,
                           capture_output=True, timeout=60)
        return r.returncode, (r.stdout + r.stderr).decode(errors="replace")

    def ingest(self, d, n=None):
        """n messages with 2 recipients each over one connection; returns the ids."""
        n = n or self.N
        ids = []
        with RawSmtp.connect(d.port) as c:
            c.greet()
            for i in range(n):
                code, text = harness.send_message(
                    c, "sender@client.test", [f"a{i}@dest.test", f"b{i}@dest.test"],
                    make_message(f"m-{i:02d}"))
                self.assertEqual(code, 250, text)
                ids.append(queued_id(text))
            c.expect(221, "QUIT")
        self.assertEqual(len(set(ids)), n)
        return ids

    # 1 ---------------------------------------------------------------------
    def test_scrape_is_clean_and_counts_ingest(self):
        d = self.daemon(admin=True)
        self.ingest(d)
        n = self.N
        s = self.wait_scrape(
            d, lambda s: s.sum("sluice_smtpd_messages_received_total") >= n
            and s.sum("sluice_spool_commit_duration_seconds_count") >= n,
            10, f"{n} messages in the counters")

        ctype = {k.lower(): v for k, v in s.headers.items()}.get("content-type", "")
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        self.assertTrue(s.text.endswith("\n"), "the last line must end with \\n")

        path = self.workdir / "scrape.txt"
        path.write_text(s.text)
        rc, out = self.promtool("check", "metrics", stdin=s.text.encode())
        self.assertEqual((rc, out), (0, ""), f"promtool check metrics on {path}")

        self.assertEqual(s.sum("sluice_smtpd_messages_received_total"), n)
        self.assertEqual(s.sum("sluice_smtpd_messages_received_total", listener="l0"), n)
        self.assertEqual(s.sum("sluice_spool_commit_duration_seconds_count"), n)
        self.assertEqual(s.sum("sluice_smtpd_recipients_total"), 2 * n)
        self.assertGreaterEqual(s.sum("sluice_smtpd_received_bytes_total"),
                                n * len(make_message("m-00")))
        # Every message was made durable in exactly one group.
        self.assertEqual(s.sum("sluice_spool_commit_group_messages_sum"), n)
        self.assertEqual(s.sum("sluice_smtpd_transaction_duration_seconds_count"), n)
        self.assertGreaterEqual(s.sum("sluice_smtpd_connections_total", listener="l0",
                                      result="accepted"), 1)
        self.assertEqual(s.sum("sluice_spool_healthy"), 1)
        self.assertEqual(s.sum("sluice_spool_failed_messages_total"), 0)
        # Exported (the SluiceBug alert reads it), and nothing of ours broke while relaying.
        self.assertEqual(len(s.series("sluice_bugs_total")), 1)
        self.assertEqual(s.sum("sluice_bugs_total"), 0)
        [(labels, v)] = s.series("sluice_build_info")
        self.assertEqual(v, 1)
        self.assertTrue(labels.get("version") and labels.get("revision"), labels)
        self.assertGreater(s.sum("process_start_time_seconds"), 1.6e9)

        status, _, body = d.get("/healthz")
        self.assertEqual((status, body.strip()), (200, b"ok"))
        status, _, body = d.get("/readyz")
        self.assertEqual((status, body.strip()), (200, b"ready"))
        status, _, _ = d.get("/no-such-page")
        self.assertEqual(status, 404)

    # 2 ---------------------------------------------------------------------
    def test_real_prometheus_scrapes_and_queries(self):
        d = self.daemon(admin=True)
        self.ingest(d)
        n = self.N
        prom = PrometheusServer(self.workdir / "prometheus",
                                [f"{harness.LOOPBACK}:{d.admin_port}"],
                                rule_files=[ALERTS])
        self.addCleanup(prom.stop)
        try:
            prom.start()

            def target_up():
                targets = prom.api("/api/v1/targets")["activeTargets"]
                return len(targets) == 1 and targets[0]["health"] == "up" and targets[0]

            try:
                wait_until(target_up, 30, "the sluice target up", interval=0.2)
            except AssertionError:
                raise AssertionError(f"target not up: {prom.api('/api/v1/targets')}")

            for expr in ("sum(sluice_smtpd_messages_received_total)",
                         "sum(sluice_spool_commit_duration_seconds_count)"):
                got = wait_until(lambda: prom.query_scalar(expr) == n and [n], 30,
                                 f"{expr} == {n} in Prometheus", interval=0.2)
                self.assertEqual(got, [n])
            self.assertEqual(prom.query_scalar("sum(sluice_smtpd_recipients_total)"), 2 * n)

            # Every alerting rule evaluates against the live data without an error.
            def rules_evaluated():
                groups = prom.api("/api/v1/rules")["groups"]
                rules = [r for g in groups for r in g["rules"]]
                return rules and all(r.get("lastEvaluation", "").startswith("20")
                                     and not r["lastEvaluation"].startswith("0001")
                                     for r in rules) and rules

            rules = wait_until(rules_evaluated, 30, "every rule evaluated once", interval=0.2)
            bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules
                   if r.get("health") != "ok"]
            self.assertEqual(bad, [])

            # Every dashboard query is valid PromQL (Grafana's variables filled in).
            errors = []
            for title, expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
                q = (expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
                     .replace("$instance", ".*"))
                try:
                    prom.api("/api/v1/query", query=q)
                except AssertionError as e:
                    errors.append(f"{title}: {e}")
            self.assertEqual(errors, [])
        except BaseException:
            print(f"\n===== prometheus log =====\n{prom.log_text()}")
            raise
        finally:
            prom.stop()

    # 3 ---------------------------------------------------------------------
    def test_deploy_files_use_existing_metrics(self):
        # Static checks first: rule syntax, config, dashboard shape.
        for path in (ALERTS,):
            rc, out = self.promtool("check", "rules", str(path))
            self.assertEqual(rc, 0, out)
        rc, out = self.promtool("check", "config", str(PROMETHEUS_YML))
        self.assertEqual(rc, 0, out)

        alert_exprs = rule_exprs(ALERTS)
        self.assertEqual(len(alert_exprs), ALERTS.read_text().count("- alert:"),
                         "an alert whose expr was not extracted")
        dashboard = json.loads(DASHBOARD.read_text())
        self.assertGreaterEqual(dashboard.get("schemaVersion", 0), 36)
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        self.assertEqual(variables["DS_PROMETHEUS"]["type"], "datasource")
        self.assertEqual(variables["DS_PROMETHEUS"]["query"], "prometheus")
        self.assertIn("instance", variables)
        dash_exprs = dashboard_exprs(dashboard)
        self.assertGreater(len(dash_exprs), 20)
        ids = []

        def walk(panels):
            for p in panels:
                ids.append(p["id"])
                if p.get("type") != "row":
                    self.assertEqual(p.get("datasource", {}).get("uid"), "${DS_PROMETHEUS}",
                                     p.get("title"))
                    for t in p.get("targets", []):
                        self.assertIn("$instance", t["expr"], p.get("title"))
                walk(p.get("panels", []))

        walk(dashboard["panels"])
        self.assertEqual(len(ids), len(set(ids)), "duplicate panel ids")

        names = {}  # metric name → where it is used
        for where, exprs in (("alerts.yml", alert_exprs), ("dashboard", dash_exprs)):
            for title, expr in exprs:
                for name in promql_metric_names(expr):
                    names.setdefault(name, []).append(f"{where}: {title}")
        self.assertGreater(len(names), 40)

        # A daemon with delivery ON, so that the delivery, queue, DNS and DSN
        # series exist: one delivered, one deferred (451), one bounced (550,
        # whose DSN goes to the maildir route), one to a route whose host is
        # down (connection failure) and one through an MX route whose DNS says
        # NXDOMAIN.
        sink = self.sink(rules={"defer-*@": "451 4.2.0 try later",
                                "bad-*@": "550 5.1.1 no such user"})
        dns = NxdomainDns()
        self.addCleanup(dns.stop)
        closed_port = harness.free_port({sink.port})
        # The event log on too: its counters exist only when it is configured.
        d = self.relay(sink.port, delivery={"dns_servers": [f"{harness.LOOPBACK}:{dns.port}"]},
                       admin=True, event_log=True,
                       extra_routes=[
                           {"name": "down", "domains": ["down.test"], "type": "smarthost",
                            "host": harness.LOOPBACK, "port": closed_port},
                           {"name": "nx", "domains": ["nx.test"], "type": "mx"}])
        for rcpt in ("ok@dest.test", "defer-1@dest.test", "bad-1@dest.test",
                     "someone@down.test", "someone@nx.test"):
            self.send(d.port, "alice@" + SENDER_DOMAIN, [rcpt], make_message(rcpt))
        wanted = set(names)
        last = [None]

        def all_there():
            last[0] = d.scrape()
            return not missing_metrics(wanted, last[0])

        try:
            wait_until(all_there, 30, "every metric the deploy files use", interval=0.2)
        except AssertionError:
            missing = missing_metrics(wanted, last[0])
            detail = "\n".join(f"  {m}: used by {sorted(set(names.get(m.split()[0], [])))[:3]}"
                               for m in missing)
            self.fail(f"{len(missing)} metric(s) used by deploy/ are not in the scrape "
                      f"(DNS stub answered {dns.queries} queries):\n{detail}\n"
                      f"scrape:\n{scrape_excerpt(last[0])}")

    # 4 ---------------------------------------------------------------------
    def test_delivery_and_queue_metrics(self):
        sink = self.sink(rules={"defer-*@": "451 4.2.0 try later",
                                "bad-*@": "550 5.1.1 no such user"})
        d = self.relay(sink.port, admin=True)
        sender = "alice@" + SENDER_DOMAIN
        self.send(d.port, sender, ["ok@dest.test"], make_message("ok"))
        self.send(d.port, sender, ["defer-1@dest.test"], make_message("defer"))
        self.send(d.port, sender, ["bad-1@dest.test"], make_message("bad"))

        # ok → sink; bad → bounced, its DSN → the senders maildir; defer → 451
        # once, next attempt in retry_initial (60 s), so it waits in the queue.
        expected = {("sink", "delivered"): 1, ("sink", "deferred"): 1, ("sink", "bounced"): 1,
                    ("senders", "delivered"): 1}

        def settled(s):
            got = {k: v for k, v in s.by("sluice_delivery_attempts_total",
                                          "destination", "result").items() if v}
            return got == expected and s.sum("sluice_queue_messages", state="deferred") == 1 \
                and s.sum("sluice_queue_messages", state="scheduled") == 0 \
                and s.sum("sluice_queue_messages", state="in_flight") == 0

        s = self.wait_scrape(d, settled, 30, "1 delivered + 1 DSN, 1 deferred, 1 bounced")
        self.assertEqual(sink.delivered_count(), 1)
        by_result = s.by("sluice_delivery_attempts_total", "result")
        self.assertEqual(by_result.get(("delivered",)), 2)
        self.assertEqual(by_result.get(("deferred",)), 1)
        self.assertEqual(by_result.get(("bounced",)), 1)
        self.assertEqual(s.sum("sluice_dsn_generated_total", action="failed"), 1)
        self.assertEqual(s.sum("sluice_dsn_generated_total"), 1)
        self.assertEqual(s.sum("sluice_delivery_duration_seconds_count"), 2)
        self.assertEqual(s.sum("sluice_queue_messages"), 1)
        self.assertEqual(s.sum("sluice_queue_destination_messages", destination="sink"), 1)
        self.assertEqual(s.sum("sluice_queue_destination_messages"), 1)

        # The deferred message ages while it waits.
        s = self.wait_scrape(d, lambda s: s.sum("sluice_queue_oldest_message_age_seconds") > 0,
                             10, "sluice_queue_oldest_message_age_seconds > 0")
        self.assertEqual(s.sum("sluice_queue_messages", state="deferred"), 1)
        self.assertGreater(s.sum("sluice_queue_destination_oldest_message_age_seconds",
                                 destination="sink"), 0)
        self.assertLess(s.sum("sluice_queue_oldest_message_age_seconds"), 60)

    def test_body_cache_is_bounded_and_released(self):
        """First attempts are sent from memory within delivery.body_cache_bytes;
        the gauge never passes the bound, the rest is read back from the
        spool, everything arrives byte-exact, and the budget is given back."""
        sink = self.sink()
        sink.hold()  # every transaction waits at its final dot
        bound = 25000
        conf = dict(SLOW_RETRY_DELIVERY, body_cache_bytes=bound)
        # One connection: the first message is held at the sink, the others
        # wait their turn, so no first attempt ends before the scrape.
        d = self.daemon(admin=True, delivery=conf, routes=[
            {"name": "sink", "domains": ["*"], "type": "smarthost", "host": harness.LOOPBACK,
             "port": sink.port, "max_connections": 1}])
        line = "x" * 78
        messages = {f"cache-{i}": make_message(f"cache-{i}", body_lines=[line] * 125)
                    for i in range(6)}  # ~10 KB each: at most two fit
        for token, msg in messages.items():
            self.send(d.port, "a@" + SENDER_DOMAIN, [f"{token}@dest.test"], msg)
        wait_until(lambda: sink.payloads_count() >= 1, 20, "the first transaction held")
        s = d.scrape()
        self.assertEqual(sink.payloads_count(), 1)
        cached = s.sum("sluice_delivery_body_cache_bytes")
        size = len(next(iter(d.export_spool().values())).body)
        self.assertGreater(size, bound // 3)
        # The gauge counts the allocations (at least the bodies' lengths): one
        # or two of the six fit, never more than the bound.
        self.assertGreaterEqual(cached, size, scrape_excerpt(s))
        self.assertLessEqual(cached, bound, scrape_excerpt(s))
        sink.release()
        s = self.wait_scrape(d, lambda s: s.sum("sluice_delivery_attempts_total",
                                                  result="delivered") == 6,
                             20, "six deliveries")
        self.assertEqual(s.sum("sluice_delivery_body_cache_bytes"), 0)
        got = {dl.recipients[0].split("@")[0]: dl.data for dl in sink.deliveries}
        self.assertEqual(sorted(got), sorted(messages))
        for token, msg in messages.items():
            self.assertEqual(harness.split_received(got[token])[1], msg, token)

    def test_idle_destinations_are_dropped_from_memory(self):
        """A destination queue is made for every site mail goes to; once idle
        (nothing queued, no connection, no back-off) for
        delivery.destination_idle_expiry it is dropped, and the next message
        makes a new one."""
        sink = self.sink()
        d = self.relay(sink.port, delivery={"destination_idle_expiry": 1, "idle_timeout": 1},
                       admin=True, extra_routes=[{"name": "other", "domains": ["other.test"],
                                      "type": "smarthost", "host": harness.LOOPBACK,
                                      "port": sink.port}])
        self.send(d.port, "alice@" + SENDER_DOMAIN, ["a@dest.test"], make_message("q1"))
        self.send(d.port, "alice@" + SENDER_DOMAIN, ["b@other.test"], make_message("q2"))
        self.wait_scrape(d, lambda s: s.sum("sluice_delivery_destinations") == 2
                         and sink.delivered_count() == 2, 20, "two destinations, two deliveries")
        self.wait_scrape(d, lambda s: s.sum("sluice_delivery_destinations") == 0, 20,
                         "idle destinations dropped")
        self.send(d.port, "alice@" + SENDER_DOMAIN, ["c@dest.test"], make_message("q3"))
        self.wait_scrape(d, lambda s: sink.delivered_count() == 3, 20, "a third delivery")
        self.assertEqual(sorted(dl.token for dl in sink.deliveries), ["q1", "q2", "q3"])

    # 5 ---------------------------------------------------------------------
    def test_connection_rejection_counted(self):
        d = self.daemon(admin=True, listeners=[{"name": "mx", "max_connections_per_ip": 1}])
        # The readiness probe's connection must be gone before we fill the slot.
        self.wait_scrape(d, lambda s: s.has("sluice_smtpd_connections", listener="mx")
                         and s.sum("sluice_smtpd_connections", listener="mx") == 0,
                         10, "no open connection on listener mx")
        first = RawSmtp.connect(d.port)
        self.addCleanup(first.close)
        self.assertEqual(first.reply()[0], 220)
        second = RawSmtp.connect(d.port)
        self.addCleanup(second.close)
        code, text = second.reply()
        self.assertEqual(code, 421, text)
        second.wait_closed()

        s = self.wait_scrape(
            d, lambda s: s.sum("sluice_smtpd_connections_total", result="rejected") >= 1,
            10, "a rejected connection counted")
        self.assertEqual(s.sum("sluice_smtpd_connections_total", listener="mx",
                               result="rejected", reason="max_connections_per_ip"), 1)
        self.assertEqual(s.sum("sluice_smtpd_connections_total", result="rejected"), 1)
        self.assertEqual(s.sum("sluice_smtpd_connections", listener="mx"), 1)
        # The probe and `first`, at least; the probe may have been retried.
        self.assertGreaterEqual(s.sum("sluice_smtpd_connections_total", listener="mx",
                                      result="accepted", reason="none"), 2)
        first.expect(221, "QUIT")


if __name__ == "__main__":
    import unittest
    unittest.main()
