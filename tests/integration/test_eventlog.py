"""The JSON event log ([server] event_log): one JSON object per line, "ts"
(RFC 3339 UTC, microseconds) and "event" first; received, rejected,
delivered, deferred, bounced and dsn events carry the ids, addresses, reply
texts and destinations of what really happened (through the scriptable sink);
the admin port's event log counters agree with the file; and SIGHUP after a
rename reopens the file at its path (logrotate without copytruncate).
"""

import json
import re
import signal

import harness
from harness import SENDER_DOMAIN, DaemonTestCase, RawSmtp, make_message, read_events, wait_until
from harness import find_events as find

ID_RE = re.compile(r"^[0-9A-Z]{26}$")


class EventLogTest(DaemonTestCase):

    def test_events_and_rotation(self):
        log = self.workdir / "events.jsonl"
        sink = self.sink(rules={"defer-*@": "451 4.2.0 try later",
                                "bad-*@": "550 5.1.1 no such user"})
        d = self.relay(sink.port, admin=True, server={"event_log": str(log)}, listeners=[
            {"name": "l0"},
            # 127.0.0.1 is not in 10.0.0.0/8: relaying through "public" is denied.
            {"name": "public", "mynetworks": ["10.0.0.0/8"],
             "relay_domains": ["allowed.example"]}])
        sender = "alice@" + SENDER_DOMAIN
        msg_ok = make_message("ev-ok")
        id_ok = self.send(d.port, sender, ["ok@dest.test"], msg_ok)
        id_defer = self.send(d.port, sender, ["defer-1@dest.test"], make_message("ev-defer"))
        id_bad = self.send(d.port, sender, ["bad-1@dest.test"], make_message("ev-bad"))
        with RawSmtp.connect(d.port_of("public")) as c:
            c.greet("public.client.test")
            c.expect(250, "MAIL FROM:<mallory@client.test>")
            code, text = c.cmd("RCPT TO:<victim@elsewhere.test>")
            self.assertEqual(code, 550, text)
            c.expect(221, "QUIT")

        def complete():
            ev = read_events(log)
            return (find(ev, "delivered", id=id_ok) and find(ev, "deferred", id=id_defer)
                    and find(ev, "bounced", id=id_bad) and find(ev, "dsn", for_id=id_bad)
                    and find(ev, "rejected") and ev)

        try:
            events = wait_until(complete, 30, "delivered, deferred, bounced, dsn and rejected "
                                "events", interval=0.1)
        except AssertionError:
            raise AssertionError("events so far:\n" + "\n".join(
                json.dumps(e) for e in read_events(log))) from None
        dump = "\n".join(json.dumps(e) for e in events)
        # Each group of checks is a subTest: one wrong field does not hide the others.

        with self.subTest("received"):
            for qid, rcpt in ((id_ok, "ok@dest.test"), (id_defer, "defer-1@dest.test"),
                              (id_bad, "bad-1@dest.test")):
                got = find(events, "received", id=qid)
                self.assertEqual(len(got), 1, f"received events for {qid}:\n{dump}")
                e = got[0]
                self.assertEqual(e.get("sender"), sender)
                self.assertEqual(e.get("recipients"), [rcpt])
                self.assertIsInstance(e.get("size"), int)
                self.assertEqual(e.get("client_ip"), harness.LOOPBACK)
                self.assertEqual(e.get("helo"), "client.test")
                self.assertEqual(e.get("listener"), "l0")
            # size is what the spool holds: the client's bytes plus our Received header.
            self.assertGreaterEqual(find(events, "received", id=id_ok)[0]["size"], len(msg_ok))

        with self.subTest("delivered"):
            [e] = find(events, "delivered", id=id_ok)
            self.assertEqual(e.get("sender"), sender)
            self.assertEqual(e.get("recipient"), "ok@dest.test")
            self.assertEqual(e.get("destination"), "sink")
            self.assertIn(harness.LOOPBACK, e.get("remote", ""))
            self.assertIn("250 2.0.0 Ok: stored", e.get("reply", ""))
            self.assertEqual(e.get("attempts"), 1)
            self.assertIsInstance(e.get("delay_s"), (int, float))
            self.assertGreaterEqual(e["delay_s"], 0)

        with self.subTest("deferred"):
            [e] = find(events, "deferred", id=id_defer)
            self.assertEqual(e.get("sender"), sender)
            self.assertEqual(e.get("recipient"), "defer-1@dest.test")
            self.assertEqual(e.get("destination"), "sink")
            self.assertIn(harness.LOOPBACK, e.get("remote", ""))
            self.assertIn("451 4.2.0 try later", e.get("reply", ""))
            self.assertEqual(e.get("attempts"), 1)
            self.assertEqual(find(events, "delivered", id=id_defer), [])
            self.assertEqual(find(events, "bounced", id=id_defer), [])
            # Next attempt in retry_initial = 60 s (with jitter).
            self.assertIn("next_attempt_s", e, f"deferred event without next_attempt_s: {e}")
            self.assertIsInstance(e["next_attempt_s"], (int, float))
            self.assertGreater(e["next_attempt_s"], 30)
            self.assertLessEqual(e["next_attempt_s"], 130)

        with self.subTest("bounced"):
            [e] = find(events, "bounced", id=id_bad)
            self.assertEqual(e.get("sender"), sender)
            self.assertEqual(e.get("recipient"), "bad-1@dest.test")
            self.assertEqual(e.get("destination"), "sink")
            self.assertIn("550 5.1.1 no such user", e.get("reply", ""))
            self.assertEqual(e.get("attempts"), 1)

        dsn_id = None
        with self.subTest("dsn"):
            [dsn] = find(events, "dsn", for_id=id_bad)
            dsn_id = dsn.get("id")
            self.assertRegex(dsn_id or "", ID_RE)
            self.assertNotIn(dsn_id, (id_ok, id_defer, id_bad))
            self.assertEqual(dsn.get("to"), sender)
            self.assertIn("action", dsn, f"dsn event without action: {dsn}")
            self.assertEqual(dsn["action"], "failed")

        with self.subTest("dsn delivered"):
            self.assertIsNotNone(dsn_id)
            got = wait_until(lambda: find(read_events(log), "delivered", id=dsn_id), 20,
                             "the DSN delivered to the maildir route")
            [e] = got
            self.assertEqual(e.get("recipient"), sender)
            self.assertEqual(e.get("destination"), "senders")
            self.assertEqual(e.get("sender"), "")  # a DSN has the null reverse-path

        with self.subTest("rejected"):
            [e] = find(events, "rejected")
            self.assertEqual(e.get("stage"), "rcpt")
            self.assertEqual(e.get("code"), 550)
            self.assertIn("5.7.1", e.get("reply", ""))
            self.assertEqual(e.get("client_ip"), harness.LOOPBACK)
            self.assertEqual(e.get("sender"), "mallory@client.test")
            self.assertEqual(e.get("recipient"), "victim@elsewhere.test")
            self.assertEqual(e.get("listener"), "public")

        with self.subTest("counters"):
            # The admin port counts the same lines.
            self.wait_scrape(d, lambda s: s.sum("sluice_eventlog_events_written_total")
                             == len(read_events(log)), 10, "written_total == lines in the file")
            self.assertEqual(d.scrape().sum("sluice_eventlog_events_dropped_total"), 0)

        # Rotation: rename, SIGHUP, and the next events go to a new file at the path.
        rotated = self.workdir / "events.jsonl.1"
        log.rename(rotated)
        before = read_events(rotated)
        d.signal(signal.SIGHUP)
        # The writer opens the path anew (creating the file) before its next batch,
        # within its flush interval, whether or not there is an event to write; every
        # event queued after that goes to the new file. Once the file is there, the
        # next event's file is certain.
        wait_until(log.exists, 10, "the event log reopened at its path", interval=0.05)
        id_after = self.send(d.port, sender, ["ok-2@dest.test"], make_message("ev-after"))
        after = wait_until(lambda: find(read_events(log), "delivered", id=id_after)
                           and read_events(log), 20, "events in a fresh file at the path",
                           interval=0.1)
        self.assertTrue(d.running(), "sluiced died on SIGHUP")
        self.assertEqual(len(find(after, "received", id=id_after)), 1)
        old = read_events(rotated)
        self.assertEqual([e for e in old if e.get("id") == id_after], [],
                         "events after SIGHUP went to the renamed file")
        self.assertEqual(old[:len(before)], before)

        # Nothing lost across the rotation: the counter equals both files' lines.
        self.wait_scrape(d, lambda s: s.sum("sluice_eventlog_events_written_total")
                         == len(read_events(rotated)) + len(read_events(log)), 10,
                         "written_total == lines in both files")
        self.assertEqual(d.stop(), 0)
        read_events(log)  # still whole lines after shutdown
        read_events(rotated)


if __name__ == "__main__":
    import unittest
    unittest.main()
