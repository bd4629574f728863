"""Ingest: what a client sends is what the spool holds, and the SMTP dialogue
follows RFC 5321 (sequencing, parameters, pipelining, CHUNKING)."""

import smtplib
import subprocess
import unittest

import harness
from harness import DaemonTestCase, RawSmtp, queued_id, make_message, send_message

CRLF = b"\r\n"


def swaks_data_lines(transcript):
    """The DATA lines swaks sent (still dot-stuffed), from its transcript:
    every " -> " line after the 354 up to the lone "." line."""
    lines = transcript.split("\n")
    out = []
    in_data = False
    for line in lines:
        line = line.rstrip("\r")
        if not in_data:
            if line.startswith("<-  354"):
                in_data = True
            continue
        if not line.startswith(" -> "):
            raise AssertionError(f"unexpected transcript line in DATA: {line!r}")
        text = line[4:]
        if text == ".":
            return out
        out.append(text)
    raise AssertionError("no DATA section in swaks transcript:\n" + transcript)


def unstuff(lines):
    return b"".join((l[1:] if l.startswith(".") else l).encode() + CRLF for l in lines)


class IngestTest(DaemonTestCase):

    def setUp(self):
        super().setUp()
        harness.require_sluicectl()
        self.d = self.daemon()

    def only_message(self):
        spool = self.d.export_spool()
        self.assertEqual(len(spool), 1, f"spool: {spool}")
        return next(iter(spool.values()))

    def test_smtplib_sendmail_byte_exact(self):
        msg = make_message("smtplib-1", body_lines=[
            "Hello,", ".starts with a dot", "..two dots", ".", " leading space",
            "\ttab", "8bit: @E9@", "", "end"])
        msg = msg.replace(b"@E9@", "caf\u00e9".encode())  # 8-bit octets pass unchanged
        with smtplib.SMTP(harness.LOOPBACK, self.d.port, timeout=15) as s:
            refused = s.sendmail("alice@client.test", ["bob@dest.test"], msg)
            self.assertEqual(refused, {})
        m = self.only_message()
        self.assertEqual(m.message, msg)
        self.assertEqual(m.sender, "alice@client.test")
        self.assertEqual(m.recipients, ["bob@dest.test"])
        self.assertTrue(m.received.startswith(b"Received: from "), m.received)
        self.assertIn(b"for <bob@dest.test>", m.received)
        self.assertTrue(m.received.endswith(CRLF))
        for line in m.received.split(CRLF)[1:-1]:
            self.assertTrue(line.startswith(b"\t"), f"fold without TAB: {m.received!r}")

    def test_queued_id_matches_spool_id(self):
        msg = make_message("smtplib-id")
        with smtplib.SMTP(harness.LOOPBACK, self.d.port, timeout=15) as s:
            self.assertEqual(s.ehlo("client.test")[0], 250)
            self.assertEqual(s.mail("alice@client.test")[0], 250)
            self.assertEqual(s.rcpt("bob@dest.test")[0], 250)
            code, text = s.data(msg)
        self.assertEqual(code, 250, text)
        self.assertTrue(text.startswith(b"2.0.0 Ok: queued as "), text)
        qid = queued_id(text.decode())
        m = self.only_message()
        self.assertEqual(m.id, qid)
        self.assertEqual(m.envelope.get("id", qid), qid)
        self.assertIn(f" id {qid}".encode(), m.received)
        self.assertEqual(m.message, msg)

    def run_swaks(self, *args):
        r = subprocess.run(["swaks", "--server", f"{harness.LOOPBACK}:{self.d.port}",
                            "--helo", "swaks.test", *args],
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        out = r.stdout.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out + r.stderr.decode(errors="replace"))
        return out

    def test_swaks_body(self):
        out = self.run_swaks("--from", "sw@client.test", "--to", "rc@dest.test",
                             "--body", "swaks body line\n.dot line\nlast")
        sent = unstuff(swaks_data_lines(out))
        self.assertIn(b"swaks body line\r\n", sent)
        m = self.only_message()
        self.assertEqual(m.message, sent)
        self.assertEqual(m.sender, "sw@client.test")
        self.assertEqual(m.recipients, ["rc@dest.test"])
        self.assertIn(f"queued as {m.id}", out)

    def test_swaks_data_file_dot_unstuffing(self):
        content = (b"Subject: dots\nX-Test: swaks-data\n\n.hidden line\n..two dots\n.\n"
                   b". space after dot\nnormal\n...three\n")
        path = self.workdir / "data.eml"
        path.write_bytes(content)
        out = self.run_swaks("--from", "sw@client.test", "--to", "rc@dest.test",
                             "--data", f"@{path}")
        lines = swaks_data_lines(out)
        # swaks stuffed every line that starts with a dot.
        self.assertIn("..hidden line", lines)
        self.assertIn("..", lines)
        sent = unstuff(lines)
        self.assertTrue(sent.startswith(content.replace(b"\n", CRLF)), sent)
        m = self.only_message()
        self.assertEqual(m.message, sent)
        self.assertIn(b"\r\n.hidden line\r\n..two dots\r\n.\r\n. space", m.message)

    def test_multiple_recipients(self):
        c = self.client(self.d.port)
        rcpts = ["one@dest.test", "two@dest.test", "three@other.test"]
        msg = make_message("multi")
        r = send_message(c, "from@client.test", rcpts, msg)
        self.assertReply(r, 250, "2.0.0")
        m = self.only_message()
        self.assertEqual(m.id, queued_id(r[1]))
        self.assertEqual(sorted(m.recipients), sorted(rcpts))
        self.assertEqual(m.message, msg)
        self.assertNotIn(b"for <", m.received)

    def test_null_sender(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<>")
        c.expect(250, "RCPT TO:<bounce@dest.test>")
        c.expect(354, "DATA")
        msg = make_message("null-sender")
        c.send(harness.dot_stuff(msg) + b".\r\n")
        self.assertReply(c.reply(), 250)
        m = self.only_message()
        self.assertEqual(m.sender, "")
        self.assertEqual(m.message, msg)

    def test_two_messages_one_connection(self):
        c = self.client(self.d.port)
        a, b = make_message("first"), make_message("second")
        ida = queued_id(send_message(c, "a@client.test", ["x@dest.test"], a)[1])
        idb = queued_id(send_message(c, "b@client.test", ["y@dest.test"], b)[1])
        self.assertNotEqual(ida, idb)
        spool = self.d.export_spool()
        self.assertEqual(set(spool), {ida, idb})
        self.assertEqual(spool[ida].message, a)
        self.assertEqual(spool[idb].message, b)
        self.assertEqual(spool[idb].sender, "b@client.test")

    def test_bdat_two_chunks(self):
        c = self.client(self.d.port)
        msg = make_message("bdat-2", body_lines=["chunk one", ".dot is literal in BDAT", "x"])
        part1, part2 = msg[:37], msg[37:]
        c.expect(250, "MAIL FROM:<bd@client.test>")
        c.expect(250, "RCPT TO:<rc@dest.test>")
        c.send(f"BDAT {len(part1)}\r\n".encode() + part1)
        r = c.reply()
        self.assertReply(r, 250)
        self.assertIn(f"{len(part1)} octets", r[1][0])
        c.send(f"BDAT {len(part2)} LAST\r\n".encode() + part2)
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        m = self.only_message()
        self.assertEqual(m.id, queued_id(r[1]))
        # BDAT has no dot-stuffing: the octets are stored as sent.
        self.assertEqual(m.message, msg)
        self.assertEqual(m.recipients, ["rc@dest.test"])

    def test_bdat_zero_last(self):
        c = self.client(self.d.port)
        msg = make_message("bdat-0")
        c.expect(250, "MAIL FROM:<bd@client.test>")
        c.expect(250, "RCPT TO:<rc@dest.test>")
        c.send(f"BDAT {len(msg)}\r\n".encode() + msg)
        self.assertReply(c.reply(), 250)
        r = c.cmd("BDAT 0 LAST")
        self.assertReply(r, 250, "2.0.0")
        m = self.only_message()
        self.assertEqual(m.id, queued_id(r[1]))
        self.assertEqual(m.message, msg)
        # The session is usable afterwards.
        c.expect(250, "NOOP")

    def test_bdat_all_pipelined(self):
        """Both chunks and QUIT in one send: replies come in order."""
        c = self.client(self.d.port)
        msg = make_message("bdat-pipe")
        c.send(b"MAIL FROM:<bd@client.test>\r\nRCPT TO:<rc@dest.test>\r\n"
               + f"BDAT 10\r\n".encode() + msg[:10]
               + f"BDAT {len(msg) - 10} LAST\r\n".encode() + msg[10:] + b"QUIT\r\n")
        codes = [r[0] for r in c.replies_until_close()]
        self.assertEqual(codes, [250, 250, 250, 250, 221])
        self.assertEqual(self.only_message().message, msg)

    def test_pipelined_transaction(self):
        c = self.client(self.d.port, greet=False)
        c.expect(220)
        c.send(b"EHLO pipe.test\r\nMAIL FROM:<p@client.test>\r\nRCPT TO:<r1@dest.test>\r\n"
               b"RCPT TO:<r2@dest.test>\r\nDATA\r\n")
        ehlo = c.reply()
        self.assertReply(ehlo, 250)
        self.assertIn("PIPELINING", ehlo[1])
        self.assertReply(c.reply(), 250, "2.1.0")
        self.assertReply(c.reply(), 250, "2.1.5")
        self.assertReply(c.reply(), 250, "2.1.5")
        self.assertReply(c.reply(), 354)
        msg = make_message("pipelined")
        c.send(harness.dot_stuff(msg))
        c.send(b".\r\nQUIT\r\n")
        final = c.reply()
        self.assertReply(final, 250, "2.0.0")
        self.assertReply(c.reply(), 221)
        c.wait_closed()
        m = self.only_message()
        self.assertEqual(m.id, queued_id(final[1]))
        self.assertEqual(m.message, msg)
        self.assertEqual(sorted(m.recipients), ["r1@dest.test", "r2@dest.test"])
        self.assertIn(b"from pipe.test", m.received)

    def test_housekeeping_commands(self):
        c = self.client(self.d.port)
        self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        self.assertReply(c.cmd("VRFY postmaster"), 252, "2.5.0")
        self.assertReply(c.cmd("HELP"), 214)
        self.assertReply(c.cmd("FROBNICATE now"), 500, "5.5.2")
        self.assertReply(c.cmd("EXPN list"), 502)
        # RSET ends the transaction: RCPT afterwards needs a new MAIL.
        c.expect(250, "MAIL FROM:<a@client.test>")
        self.assertReply(c.cmd("RSET"), 250, "2.0.0")
        self.assertReply(c.cmd("RCPT TO:<b@dest.test>"), 503, "5.5.1")
        c.expect(250, "MAIL FROM:<a@client.test>")
        self.assertReply(c.cmd("QUIT"), 221)
        c.wait_closed()
        self.assertEqual(self.d.export_spool(), {})

    def test_empty_message(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.expect(354, "DATA")
        c.send(b".\r\n")
        r = c.reply()
        self.assertReply(r, 250)
        m = self.only_message()
        self.assertEqual(m.id, queued_id(r[1]))
        self.assertEqual(m.message, b"")

    def test_dot_stuffed_first_line_and_edges(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.expect(354, "DATA")
        # Stuffed lines at the very start, in the middle and last.
        c.send(b"..first\r\nX: y\r\n\r\n..\r\n...\r\n. \r\n.x.\r\nend\r\n..last\r\n.\r\n")
        self.assertReply(c.reply(), 250)
        self.assertEqual(self.only_message().message,
                         b".first\r\nX: y\r\n\r\n.\r\n..\r\n \r\nx.\r\nend\r\n.last\r\n")

    def test_body_split_across_packets(self):
        """The end marker and stuffed dots split over several send() calls."""
        c = self.client(self.d.port)
        msg = make_message("split", body_lines=[".a", "b", "..c", ""])
        wire = harness.dot_stuff(msg) + b".\r\n"
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.expect(354, "DATA")
        head, tail = wire[:-12], wire[-12:]
        for i in range(0, len(head), 37):
            c.send(head[i:i + 37])
        for i in range(len(tail)):
            c.send(tail[i:i + 1])  # the last octets one at a time
        self.assertReply(c.reply(), 250)
        self.assertEqual(self.only_message().message, msg)

    def test_received_header_format(self):
        c = self.client(self.d.port, greet=False)
        c.expect(220)
        c.expect(250, "HELO plain.test")
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.expect(354, "DATA")
        c.send(b"Subject: helo\r\n\r\nx\r\n.\r\n")
        r = c.reply()
        self.assertReply(r, 250)
        m = self.only_message()
        qid = queued_id(r[1])
        rec = m.received.decode()
        self.assertTrue(rec.startswith("Received: from plain.test ([127.0.0.1])\r\n"), rec)
        self.assertIn(f"\tby {harness.HOSTNAME} (Sluice) with SMTP id {qid}", rec)
        self.assertIn("for <b@dest.test>; ", rec)
        self.assertEqual(m.message, b"Subject: helo\r\n\r\nx\r\n")

    def test_smtputf8(self):
        c = self.client(self.d.port)
        self.assertReply(c.cmd("MAIL FROM:<j\u00f6rg@b\u00fccher.test>".encode()), 553, "5.6.7")
        c.expect(250, "MAIL FROM:<j\u00f6rg@b\u00fccher.test> SMTPUTF8".encode())
        c.expect(250, "RCPT TO:<\u00e9l\u00e8ve@\u00e9cole.test>".encode())
        c.expect(354, "DATA")
        msg = "Subject: =?utf-8?q?x?=\r\nFrom: j\u00f6rg@b\u00fccher.test\r\n\r\nGr\u00fc\u00dfe\r\n".encode()
        c.send(msg + b".\r\n")
        self.assertReply(c.reply(), 250)
        m = self.only_message()
        self.assertEqual(m.sender, "j\u00f6rg@b\u00fccher.test")
        self.assertEqual(m.recipients, ["\u00e9l\u00e8ve@\u00e9cole.test"])
        self.assertEqual(m.message, msg)

    def test_lower_case_verbs(self):
        c = self.client(self.d.port)
        c.expect(250, "mail from:<a@client.test>")
        c.expect(250, "rcpt to:<b@dest.test>")
        c.expect(354, "data")
        c.send(b"Subject: lc\r\n\r\nx\r\n.\r\n")
        self.assertReply(c.reply(), 250)
        self.assertEqual(self.only_message().message, b"Subject: lc\r\n\r\nx\r\n")

    def test_ehlo_resets_transaction(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<first@client.test>")
        c.expect(250, "RCPT TO:<gone@dest.test>")
        c.expect(250, "EHLO again.test")
        self.assertReply(c.cmd("DATA"), 503)
        r = send_message(c, "second@client.test", ["kept@dest.test"], b"Subject: s\r\n\r\nx\r\n")
        self.assertReply(r, 250)
        m = self.only_message()
        self.assertEqual(m.sender, "second@client.test")
        self.assertEqual(m.recipients, ["kept@dest.test"])
        self.assertIn(b"from again.test", m.received)

    def test_bdat_then_rcpt_and_data_refused(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.send(b"BDAT 6\r\nSubjec")
        self.assertReply(c.reply(), 250)
        self.assertReply(c.cmd("RCPT TO:<c@dest.test>"), 503)
        self.assertReply(c.cmd("DATA"), 503)
        c.send(b"BDAT 11 LAST\r\nt: b\r\n\r\nx\r\n")
        r = c.reply()
        self.assertReply(r, 250)
        m = self.only_message()
        self.assertEqual(m.message, b"Subject: b\r\n\r\nx\r\n")
        self.assertEqual(m.recipients, ["b@dest.test"])

    def test_bdat_syntax_error_closes(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.send(b"BDAT ten LAST\r\n")
        codes = [r[0] for r in c.replies_until_close()]
        self.assertEqual(codes, [501, 421])
        self.assertEqual(self.d.export_spool(), {})

    def test_rset_discards_bdat_chunks(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.send(b"BDAT 9\r\nDISCARDED")
        self.assertReply(c.reply(), 250)
        c.expect(250, "RSET")
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.send(b"BDAT 8 LAST\r\nX: y\r\n\r\n")
        self.assertReply(c.reply(), 250)
        self.assertEqual(self.only_message().message, b"X: y\r\n\r\n")

    def large_message(self, size):
        line = b"L" * 76 + b"\r\n"
        lines = [b"%08d " % i + line[9:] for i in range(size // len(line))]
        lines[1::97] = [b"." + l[1:] for l in lines[1::97]]  # some stuffed lines
        return b"Subject: large\r\n\r\n" + b"".join(lines)

    def test_large_message_data(self):
        """4 MB through DATA: more than the receive buffers, so the server
        must keep reading while it stores."""
        msg = self.large_message(4 << 20)
        # A stalled reader shows up as 421 4.4.2 after data_timeout.
        self.d = self.daemon(listeners=[{"name": "big", "data_timeout": 10}])
        c = RawSmtp.connect(self.d.port, timeout=30)
        self.addCleanup(c.close)
        c.greet()
        r = send_message(c, "big@client.test", ["b@dest.test"], msg)
        self.assertReply(r, 250, "2.0.0")
        m = self.only_message()
        self.assertEqual(m.id, queued_id(r[1]))
        self.assertEqual(len(m.message), len(msg))
        self.assertTrue(m.message == msg, "stored body differs")

    def test_large_message_bdat(self):
        msg = self.large_message(4 << 20)
        # A stalled reader shows up as 421 4.4.2 after data_timeout.
        self.d = self.daemon(listeners=[{"name": "big", "data_timeout": 10}])
        c = RawSmtp.connect(self.d.port, timeout=30)
        self.addCleanup(c.close)
        c.greet()
        c.expect(250, "MAIL FROM:<big@client.test>")
        c.expect(250, "RCPT TO:<b@dest.test>")
        half = len(msg) // 2
        c.send(f"BDAT {half}\r\n".encode() + msg[:half])
        self.assertReply(c.reply(), 250)
        c.send(f"BDAT {len(msg) - half} LAST\r\n".encode() + msg[half:])
        r = c.reply()
        self.assertReply(r, 250, "2.0.0")
        m = self.only_message()
        self.assertTrue(m.message == msg, "stored body differs")


class SequenceTest(DaemonTestCase):
    """No spool needed: only replies."""

    def setUp(self):
        super().setUp()
        self.d = self.daemon()

    def test_mail_before_ehlo(self):
        c = self.client(self.d.port, greet=False)
        c.expect(220)
        self.assertReply(c.cmd("MAIL FROM:<a@client.test>"), 503, "5.5.1")

    def test_rcpt_before_mail(self):
        c = self.client(self.d.port)
        self.assertReply(c.cmd("RCPT TO:<b@dest.test>"), 503, "5.5.1")

    def test_data_before_rcpt(self):
        c = self.client(self.d.port)
        self.assertReply(c.cmd("DATA"), 503, "5.5.1")
        c.expect(250, "MAIL FROM:<a@client.test>")
        self.assertReply(c.cmd("DATA"), 503, "5.5.1")
        # The transaction survives: it can still complete.
        c.expect(250, "RCPT TO:<b@dest.test>")
        c.expect(354, "DATA")
        c.send(b"Subject: x\r\n\r\nok\r\n.\r\n")
        self.assertReply(c.reply(), 250)

    def test_bdat_before_rcpt(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        c.send(b"BDAT 5 LAST\r\nhello")
        self.assertReply(c.reply(), 503, "5.5.1")
        self.assertReply(c.cmd("NOOP"), 250)  # the 5 octets were skipped

    def test_nested_mail(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        self.assertReply(c.cmd("MAIL FROM:<b@client.test>"), 503, "5.5.1")

    def test_unknown_mail_parameter(self):
        c = self.client(self.d.port)
        self.assertReply(c.cmd("MAIL FROM:<a@client.test> FROBNICATE=yes"), 555)

    def test_unknown_rcpt_parameter(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test>")
        self.assertReply(c.cmd("RCPT TO:<b@dest.test> FROBNICATE=yes"), 555)

    def test_mail_parameters_need_ehlo(self):
        c = self.client(self.d.port, greet=False)
        c.expect(220)
        c.expect(250, "HELO old.test")
        self.assertReply(c.cmd("MAIL FROM:<a@client.test> SIZE=100"), 555)

    def test_known_parameters_accepted(self):
        c = self.client(self.d.port)
        c.expect(250, "MAIL FROM:<a@client.test> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=abc")
        c.expect(250, "RCPT TO:<b@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@dest.test")

    def test_syntax_errors(self):
        c = self.client(self.d.port)
        self.assertReply(c.cmd("MAIL FROM:<a@client.test"), 501)
        self.assertReply(c.cmd("MAIL FROM:<not an address>"), 501)
        self.assertReply(c.cmd("MAIL FROM:<a@client.test> SIZE=abc"), 501)
        c.expect(250, "MAIL FROM:<a@client.test>")
        self.assertReply(c.cmd("RCPT TO:<@@>"), 501)
        self.assertReply(c.cmd("RCPT TO:"), 501)
        c.expect(250, "RCPT TO:<b@dest.test>")
        self.assertReply(c.cmd("DATA now"), 501, "5.5.4")
        self.assertReply(c.cmd("EHLO"), 501)

    def test_ehlo_keywords(self):
        c = self.client(self.d.port, greet=False)
        c.expect(220)
        code, lines = c.cmd("EHLO kw.test")
        self.assertEqual(code, 250)
        self.assertTrue(lines[0].startswith(harness.HOSTNAME), lines)
        keywords = {l.split()[0] for l in lines[1:]}
        for kw in ["PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
                   "CHUNKING", "DSN"]:
            self.assertIn(kw, keywords, lines)
        size = [l for l in lines if l.startswith("SIZE")][0]
        self.assertEqual(size, f"SIZE {50 << 20}")
        self.assertNotIn("STARTTLS", keywords)

    def test_greeting(self):
        c = self.client(self.d.port, greet=False)
        code, lines = c.reply()
        self.assertEqual(code, 220)
        self.assertTrue(lines[0].startswith(harness.HOSTNAME + " "), lines)

    def test_helo_then_quit(self):
        c = self.client(self.d.port, greet=False)
        c.expect(220)
        self.assertEqual(c.cmd("HELO old.test"), (250, [harness.HOSTNAME]))
        self.assertReply(c.cmd("QUIT"), 221, "2.0.0")
        c.wait_closed()


if __name__ == "__main__":
    unittest.main()
