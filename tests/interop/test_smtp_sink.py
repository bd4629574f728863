"""Sluice relaying to Postfix's smtp-sink (smarthost route), injected by swaks
(one message) and by Postfix's smtp-source (500 messages over 500 sessions,
10 at a time). The sink dumps every transaction; each dump must be exactly
our Received header followed by the bytes the client sent.

    cd tests/interop && python3 -m unittest -v test_smtp_sink
"""

import re
import subprocess
import unittest

from interop import (HOSTNAME, InteropTestCase, SinkDump, SmtpSink, check_relayed, crlf, lf,
                     make_message, require, smtp_addr)

ID_RE = re.compile(rb" id ([0-9A-Z]{26})")


class SmtpSinkTest(InteropTestCase):

    def relay_to(self, sink, **route):
        r = {"name": "sink", "domains": ["*"], "type": "smarthost", "host": "127.0.0.1",
             "port": sink.port}
        r.update(route)
        return self.daemon(delivery={"enabled": True, "retry_initial": 1, "idle_timeout": 1},
                           routes=[r])

    def test_one_message_from_swaks(self):
        sink = SmtpSink(self, "sink")
        d = self.relay_to(sink)
        sent = make_message("swaks-one", body_lines=[
            "first line", ".starts with a dot", "..two dots", ".", "  leading blanks",
            "tab\tinside", "last line"])
        out = self.swaks(d.port, "alice@client.test", ["bob@dest.test"], sent)
        self.assertRegex(out, r"<-  250 2\.0\.0 .*queued as [0-9A-Z]{26}")

        sink.wait_count(1)
        self.wait_queue_empty(d)
        (got,) = sink.messages()
        self.assertEqual(smtp_addr(got.sender), "alice@client.test")
        self.assertEqual([smtp_addr(r) for r in got.recipients], ["bob@dest.test"])
        self.assertEqual(got.helo, HOSTNAME)  # helo_name defaults to [server] hostname
        received = check_relayed(self, got.message, sent)
        self.assertIn(b"from client.test ([127.0.0.1])", received)
        self.assertIn(b"for <bob@dest.test>", received)
        self.wait_log(d, "delivered id=")

    def test_500_messages_from_smtp_source(self):
        smtp_source = require("smtp-source")
        sink = SmtpSink(self, "sink")
        control = SmtpSink(self, "control")  # smtp-source → smtp-sink directly
        d = self.relay_to(sink, max_connections=4, max_messages_per_connection=50)

        template = self.workdir / "message.txt"
        template.write_bytes(lf(make_message("smtp-source", body_lines=[
            "line one", ".dot line", "x" * 998, "end"])))

        def inject(port, count, sessions):
            r = subprocess.run(
                [smtp_source, "-s", str(sessions), "-m", str(count), "-c", "-F", str(template),
                 "-f", "from@x.test", "-t", "to@y.test", f"127.0.0.1:{port}"],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
            if r.returncode != 0:
                raise AssertionError(f"smtp-source exited {r.returncode}: "
                                     f"{r.stderr.decode(errors='replace')}")
            return r

        # What smtp-source puts on the wire for -F (it adds an empty line at
        # the end), as seen by the same sink program without Sluice between.
        inject(control.port, 1, 1)
        control.wait_count(1)
        (reference,) = control.messages()
        self.assertTrue(reference.message.startswith(template.read_bytes()))

        r = inject(d.port, 500, 10)
        self.assertIn(b"500", r.stdout.replace(b"\r", b"\n").split(),
                      f"smtp-source's counter did not reach 500: {r.stdout[-200:]!r}")
        sink.wait_count(500, timeout=120)
        self.wait_queue_empty(d, timeout=120)

        ids = set()
        for got in sink.messages():
            self.assertEqual(smtp_addr(got.sender), "from@x.test", got.path)
            self.assertEqual([smtp_addr(r) for r in got.recipients], ["to@y.test"], got.path)
            received = check_relayed(self, got.message, crlf(reference.message))
            ids.add(ID_RE.search(received).group(1))
        self.assertEqual(len(ids), 500, "every message has its own Sluice id")
        self.assertEqual(d.log_text().count("delivered id="), 500)


if __name__ == "__main__":
    unittest.main()
