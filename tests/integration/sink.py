"""A scriptable SMTP/LMTP sink for the delivery tests (Python 3 stdlib only).

    sink = Sink(rules={"defer-*@": "451 4.2.0 try later",
                       "bad-*@": "550 5.1.1 no such user",
                       "flaky@*": ("451 4.2.0 not yet", 2)})   # 451 twice, then 250
    sink.start()            # 127.0.0.1, a free port (sink.port); same port on restart
    ...
    sink.stop()             # closes the listener and every session; start() again to come back

One thread accepts, one thread per session. Every socket has a short timeout
so that stop() is prompt, and every loop is bounded in count and time.

ESMTP (EHLO: PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, DSN) or, with
lmtp=True, LMTP (LHLO; one reply per accepted recipient after the final dot,
RFC 2033 §4.2). Commands are answered strictly in the order they arrive, so a
pipelined command group gets its replies in order.

How replies go out: by default each reply is its own send() on a socket with
Nagle's algorithm on (RFC 896), as many real servers write them: the replies to
a pipelined group leave in one segment each, the second one only once the
client has acknowledged the first. batch_replies=True holds the replies until
the input read so far is used up and sends them in one write, as Postfix's
smtpd and smtp-sink do (RFC 2920 §3.2 asks for that, with a SHOULD).
pipelining=False does not advertise PIPELINING; a client that pipelines
anyway is recorded in protocol_errors.

Rules map an address pattern to a reply. A pattern is an fnmatch pattern
matched case-insensitively against the whole address; a pattern ending in "@"
matches any domain ("bad-*@" = "bad-*@*"). The reply is "CODE text", or
(reply, n): that reply for the first n attempts at that address (counted per
address across sessions), then 250. The first matching rule wins. In ESMTP
mode the rule answers RCPT; in LMTP mode RCPT gets 250 and the rule answers
after the dot, per recipient. The reply "DROP" accepts the recipient and then
closes the connection after the final dot without answering it (a lost
reply: the message is not recorded as delivered).

Every message that had at least one recipient accepted (after the dot in LMTP)
is recorded as a Delivery: envelope sender, the accepted recipients, the MAIL
and RCPT parameters, and the DATA bytes after dot-unstuffing.
"""

import collections
import fnmatch
import re
import select
import socket
import threading
import time

LOOPBACK = "127.0.0.1"

ACCEPT_POLL = 0.05      # the accept loop's timeout, so stop() is noticed
RECV_POLL = 0.1         # a session's recv timeout, ditto
SESSION_IDLE = 60.0     # a session silent this long is dropped
MAX_LINE = 1 << 20      # a command or data line longer than this ends the session
MAX_HOLD = 60.0         # hold() never blocks a reply longer than this

TOKEN_RE = re.compile(rb"^X-Test-Token: (\S+)\r?$", re.M)


class Delivery:
    def __init__(self, session, sender, recipients, data, mail_params, rcpt_params):
        self.session = session          # index of the session that carried it
        self.sender = sender
        self.recipients = recipients    # the accepted ones, in RCPT order
        self.data = data                # bytes after dot-unstuffing, final CRLF included
        self.mail_params = mail_params  # "SIZE=123 BODY=8BITMIME"
        self.rcpt_params = rcpt_params  # {address: "NOTIFY=NEVER ..."}
        self.time = time.monotonic()

    @property
    def token(self):
        m = TOKEN_RE.search(self.data)
        return m.group(1).decode() if m else None

    def __repr__(self):
        return f"<Delivery from={self.sender!r} to={self.recipients!r} {len(self.data)} bytes>"


class _Stopped(Exception):
    pass


class Sink:
    def __init__(self, rules=None, lmtp=False, data_delay=0.0, hostname="sink.test",
                 size_limit=100 * 1024 * 1024, dsn=True, port=0, host=LOOPBACK,
                 greeting=None, pipelining=True, batch_replies=False):
        self.lmtp = lmtp
        self.pipelining = pipelining
        self.batch_replies = batch_replies
        self.host = host  # "::1" listens on IPv6
        self.greeting = greeting  # e.g. "421 4.3.2 busy": said instead of 220, then close
        self.hostname = hostname
        self.size_limit = size_limit
        self.dsn = dsn
        self.data_delay = data_delay  # seconds before the reply to the final dot
        self.port = port
        self._rules = []
        for pattern, reply in (rules or {}).items():
            self.add_rule(pattern, reply)
        self._lock = threading.Lock()
        self._deliveries = []
        self._payloads = []  # every DATA payload that reached the final dot, accepted or not
        self._attempts = collections.Counter()  # per address: RCPTs (ESMTP) / dots (LMTP)
        self._sessions_total = 0
        self.refused_greetings = 0  # sessions answered with `greeting` instead of 220
        self._sessions_current = 0
        self._sessions_max = 0
        self._sent_ahead = 0  # final dots with the client's next bytes already behind them
        self._transcript_errors = []
        self._listener = None
        self._stop = threading.Event()
        self._released = threading.Event()
        self._released.set()
        self._accept_thread = None
        self._threads = []
        self._conns = set()

    # -- configuration -----------------------------------------------------

    def add_rule(self, pattern, reply):
        if pattern.endswith("@"):
            pattern += "*"
        if isinstance(reply, tuple):
            text, first_n = reply
        else:
            text, first_n = reply, None
        code = 0 if text == "DROP" else int(text[:3])
        self._rules.append((pattern.lower(), code, text, first_n))

    def hold(self):
        """Replies to final dots wait until release() (or stop(), or MAX_HOLD)."""
        self._released.clear()

    def release(self):
        self._released.set()

    # -- life cycle ---------------------------------------------------------

    def start(self):
        assert self._listener is None, "already running"
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(128)
        s.settimeout(ACCEPT_POLL)
        self.port = s.getsockname()[1]
        self._listener = s
        self._stop = threading.Event()
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(s, self._stop),
                                               name=f"sink-accept-{self.port}", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self, timeout=10.0):
        """Stops listening and ends every open session (the port refuses connections
        until start())."""
        if self._listener is None:
            return
        self._stop.set()
        self._accept_thread.join(timeout)
        try:
            self._listener.close()
        except OSError:
            pass
        self._listener = None
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
        if alive:
            raise AssertionError(f"sink sessions did not end: {alive}")

    def running(self):
        return self._listener is not None

    # -- observations -------------------------------------------------------

    @property
    def deliveries(self):
        with self._lock:
            return list(self._deliveries)

    def payloads_count(self):
        """DATA payloads that reached the final dot (before hold/delay/reply)."""
        with self._lock:
            return len(self._payloads)

    @property
    def payloads(self):
        with self._lock:
            return list(self._payloads)

    def delivered_count(self):
        with self._lock:
            return len(self._deliveries)

    def tokens(self):
        """Counter: X-Test-Token value → how many deliveries carried it (per recipient
        the message was accepted for)."""
        c = collections.Counter()
        for d in self.deliveries:
            c[d.token] += len(d.recipients)
        return c

    def for_recipient(self, address):
        return [d for d in self.deliveries if address in d.recipients]

    def attempts(self, address):
        with self._lock:
            return self._attempts[address.lower()]

    @property
    def sessions_total(self):
        with self._lock:
            return self._sessions_total

    @property
    def sessions_current(self):
        with self._lock:
            return self._sessions_current

    @property
    def sent_ahead(self):
        """How many times the client's next command had arrived before our
        reply to its final dot went out."""
        with self._lock:
            return self._sent_ahead

    @property
    def sessions_max(self):
        with self._lock:
            return self._sessions_max

    @property
    def protocol_errors(self):
        """Things a correct client never does (a command out of sequence, a bad line)."""
        with self._lock:
            return list(self._transcript_errors)

    # -- internals ------------------------------------------------------------

    def _accept_loop(self, listener, stop):
        for _ in range(100_000_000):
            if stop.is_set():
                return
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                if stop.is_set():
                    conn.close()
                    return
                self._sessions_total += 1
                index = self._sessions_total
                self._sessions_current += 1
                self._sessions_max = max(self._sessions_max, self._sessions_current)
                self._conns.add(conn)
                t = threading.Thread(target=self._session, args=(conn, index, stop),
                                     name=f"sink-session-{index}", daemon=True)
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)
            t.start()

    def _rule_for(self, address):
        addr = address.lower()
        with self._lock:
            self._attempts[addr] += 1
            n = self._attempts[addr]
        for pattern, code, text, first_n in self._rules:
            if fnmatch.fnmatchcase(addr, pattern):
                if first_n is None or n <= first_n:
                    return code, text
                return None
        return None

    def _error(self, what):
        with self._lock:
            self._transcript_errors.append(what)

    def _session(self, conn, index, stop):
        session = None
        try:
            session = _Session(self, conn, index, stop)
            session.run()
        except (_Stopped, OSError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self._lock:
                if session is None or not session.counted_out:
                    self._sessions_current -= 1
                self._conns.discard(conn)

    def _count_out(self, session):
        """A session that said QUIT is over before we answer it: the client
        may open its next connection as soon as it reads the 221, possibly
        before this thread gets to run again."""
        with self._lock:
            if not session.counted_out:
                session.counted_out = True
                self._sessions_current -= 1


class _Session:
    def __init__(self, sink, conn, index, stop):
        self.sink = sink
        self.conn = conn
        self.index = index
        self.stop = stop
        self.counted_out = False  # the sink stopped counting it as open (QUIT)
        self.buf = b""
        self.out = b""  # replies held for one write (batch_replies)
        conn.settimeout(RECV_POLL)
        self.reset()
        self.greeted = False

    def reset(self):
        self.sender = None
        self.mail_params = ""
        self.rcpts = []          # accepted (ESMTP) / all RCPTed (LMTP)
        self.rcpt_params = {}
        self.drop = False        # a DROP rule matched: no reply to the final dot

    def send(self, text):
        self.write(text.encode() + b"\r\n")

    def write(self, data):
        if self.sink.batch_replies:
            self.out += data
        else:
            self.conn.sendall(data)  # a send() per reply

    def flush(self):
        if self.out:
            out, self.out = self.out, b""
            self.conn.sendall(out)

    def lock_step_check(self, what):
        """Without PIPELINING the client must wait for each reply (RFC 2920 §3.1)."""
        if not self.sink.pipelining and (self.buf or self._pending_bytes()):
            self.sink._error(f"session {self.index}: pipelined after {what} "
                             f"without PIPELINING")

    def _pending_bytes(self):
        # A zero-timeout poll, not recv(MSG_DONTWAIT): on a socket with a timeout Python waits
        # for readability first, so that recv would hold every reply for RECV_POLL when the
        # client sent nothing ahead.
        try:
            if not select.select([self.conn], [], [], 0)[0]:
                return False
            return bool(self.conn.recv(1, socket.MSG_PEEK))  # readable: does not wait
        except (OSError, ValueError):
            return False

    def line(self):
        deadline = time.monotonic() + SESSION_IDLE
        for _ in range(1_000_000):
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            if len(self.buf) > MAX_LINE:
                self.sink._error(f"session {self.index}: line too long")
                raise _Stopped()
            if self.stop.is_set() or time.monotonic() > deadline:
                raise _Stopped()
            self.flush()  # all input so far is answered: the held replies go out together
            try:
                chunk = self.conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise _Stopped()
            self.buf += chunk
        raise _Stopped()

    def run(self):
        hello = "LHLO" if self.sink.lmtp else "EHLO"
        proto = "LMTP" if self.sink.lmtp else "ESMTP"
        if self.sink.greeting:
            with self.sink._lock:
                self.sink.refused_greetings += 1
            self.send(self.sink.greeting)
            self.flush()
            return
        self.send(f"220 {self.sink.hostname} {proto} sink")
        for _ in range(1_000_000):
            raw = self.line()
            cmd_line = raw.decode("utf-8", errors="replace")
            verb = cmd_line.split(" ", 1)[0].upper()
            arg = cmd_line[len(verb) + 1:] if " " in cmd_line else ""
            self.lock_step_check(verb)
            if verb == hello:
                self.greeted = True
                self.reset()
                caps = [f"SIZE {self.sink.size_limit}", "8BITMIME", "ENHANCEDSTATUSCODES"]
                if self.sink.pipelining:
                    caps.insert(0, "PIPELINING")
                if self.sink.dsn:
                    caps.append("DSN")
                lines = [self.sink.hostname] + caps
                out = [f"250-{l}" for l in lines[:-1]] + [f"250 {lines[-1]}"]
                self.write(("\r\n".join(out) + "\r\n").encode())
            elif verb in ("EHLO", "HELO", "LHLO"):
                self.send(f"500 5.5.1 this is {proto}: use {hello}")
            elif verb == "QUIT":
                self.sink._count_out(self)
                self.send("221 2.0.0 bye")
                self.flush()
                return
            elif verb == "RSET":
                self.reset()
                self.send("250 2.0.0 ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 ok")
            elif verb == "MAIL":
                if not self.greeted or self.sender is not None:
                    self.sink._error(f"session {self.index}: MAIL out of sequence")
                    self.send("503 5.5.1 bad sequence")
                    continue
                m = re.match(r"(?i)FROM:<([^>]*)>\s*(.*)$", arg)
                if not m:
                    self.sink._error(f"session {self.index}: bad MAIL {cmd_line!r}")
                    self.send("501 5.5.4 syntax")
                    continue
                self.sender, self.mail_params = m.group(1), m.group(2)
                self.send("250 2.1.0 sender ok")
            elif verb == "RCPT":
                if self.sender is None:
                    self.send("503 5.5.1 need MAIL")
                    continue
                m = re.match(r"(?i)TO:<([^>]*)>\s*(.*)$", arg)
                if not m:
                    self.sink._error(f"session {self.index}: bad RCPT {cmd_line!r}")
                    self.send("501 5.5.4 syntax")
                    continue
                addr = m.group(1)
                rule = None if self.sink.lmtp else self.sink._rule_for(addr)
                if rule is not None and rule[0] >= 300:
                    self.send(rule[1])
                    continue
                if rule is not None and rule[0] == 0:
                    self.drop = True
                self.rcpts.append(addr)
                self.rcpt_params[addr] = m.group(2)
                self.send("250 2.1.5 recipient ok")
            elif verb == "DATA":
                if self.sender is None or not self.rcpts:
                    self.send("554 5.5.1 no valid recipients")
                    continue
                self.send("354 end with <CRLF>.<CRLF>")
                self.data()
            else:
                self.sink._error(f"session {self.index}: unknown command {cmd_line!r}")
                self.send("502 5.5.2 not implemented")
        raise _Stopped()

    def data(self):
        parts = []
        size = 0
        for _ in range(100_000_000):
            line = self.line()
            if line == b".":
                break
            if line.startswith(b"."):
                line = line[1:]
            parts.append(line + b"\r\n")
            size += len(line) + 2
            if size > self.sink.size_limit:
                raise _Stopped()
        else:
            raise _Stopped()
        data = b"".join(parts)
        with self.sink._lock:
            self.sink._payloads.append(data)
        if self.sink.data_delay > 0:
            self.stop.wait(self.sink.data_delay)
        if not self.sink._released.is_set():
            deadline = time.monotonic() + MAX_HOLD
            for _ in range(int(MAX_HOLD / 0.05) + 2):
                if self.sink._released.wait(0.05) or self.stop.is_set():
                    break
                if time.monotonic() > deadline:
                    break
        if self.stop.is_set():
            raise _Stopped()  # down: the message was not accepted
        if self.drop:
            raise _Stopped()
        if self.sink.lmtp:
            replies = []
            accepted = []
            for addr in self.rcpts:
                rule = self.sink._rule_for(addr)
                if rule is not None and rule[0] == 0:
                    raise _Stopped()
                if rule is not None and rule[0] >= 300:
                    replies.append(rule[1])
                else:
                    replies.append(f"250 2.0.0 <{addr}> delivered")
                    accepted.append(addr)
        else:
            replies = ["250 2.0.0 Ok: stored"]
            accepted = list(self.rcpts)
        if self.buf or self._pending_bytes():
            # The client sent more (the next MAIL) behind the final dot, before it could
            # see this reply: RFC 2920 pipelining across the end of data.
            with self.sink._lock:
                self.sink._sent_ahead += 1
            self.lock_step_check("the final dot")
        if accepted:
            d = Delivery(self.index, self.sender, accepted, data, self.mail_params,
                         {a: self.rcpt_params.get(a, "") for a in accepted})
            # Recorded before the reply is sent: once the client can see 250 the
            # delivery is visible here (a lost reply is a duplicate, never a loss).
            with self.sink._lock:
                self.sink._deliveries.append(d)
        self.write(("\r\n".join(replies) + "\r\n").encode())
        self.reset()
