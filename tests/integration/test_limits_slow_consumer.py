"""Connection safety, slow consumers (docs/limits.md): --send-queue-bytes (close 4002) and
--write-timeout (close 4003).

A raw-socket member with a small SO_RCVBUF joins a room and stops reading while a sender streams
2 KiB chats (as fast as acks allow) to the room and other members read normally. Checked:
- the slow one is closed: the others get its leave notice, and its socket sees EOF/reset
  within ~5 s of that, or when it resumes reading it finds the chats it had (a gap-free prefix:
  chats are never dropped silently) followed by a close frame with the expected code;
- every other member receives EVERY message, in order; the sender gets every ack;
- the gateway's RSS (VmRSS) stays under start + RSS_BOUND.

The loopback kernel buffers absorb several MiB (the gateway's send buffer autotunes up to
tcp_wmem max) before the gateway's own queue grows, so the stream runs until the leave notice
arrives (bounded by MAX_MESSAGES).
"""

import asyncio
import json
import time

import harness
from rawws import OP_CLOSE, OP_TEXT, TCP_ESTABLISHED, TCP_STATE_NAMES, RawWS
from wsclient import check_joined, Client, TIMEOUT, run

SCALE = harness.TIMEOUT_SCALE
TEXT_BYTES = 2048
MAX_MESSAGES = 4000  # ~8 MiB of text: far more than kernel buffers + queue
AFTER_LEAVE = 50  # messages still streamed after the slow one left
WINDOW = 16  # chats in flight (sent, not yet acked)
RSS_BOUND = 64 * 2 ** 20
CLOSE_DROP = 5.0  # docs: TCP dropped at most 5 s after the close frame
SLOW_RCVBUF = 4096
ROOM = "flood"
NO_LIMITS = ("--rate-limit", "0", "--user-rate-limit", "0")


class Stream:
    def __init__(self):
        self.sent = 0
        self.acked = 0
        self.leave_at = None
        self.done = False
        self.rss_max = 0


async def reader(c, chats, slow_user, st, leave_event):
    """Receives everything for a normal member (bounded); records chat texts and the time of
    the slow member's leave notice."""
    for _ in range(MAX_MESSAGES * 3 + 1000):
        f = await c.recv(timeout=TIMEOUT * 6)
        if f["type"] == "chat":
            chats.append(f["text"])
        elif f["type"] == "system":
            if f["event"] == "leave" and f["user"] == slow_user and not leave_event.is_set():
                st.leave_at = time.monotonic()
                leave_event.set()
        else:
            raise AssertionError(f"unexpected frame for a reader: {f}")


async def sender_loop(s, st, leave_event, pace=0.0):
    """Streams chats with at most WINDOW in flight until AFTER_LEAVE messages after the leave
    notice (or MAX_MESSAGES); waits for every ack and own copy."""
    texts = []
    copies = 0
    pad = "x" * (TEXT_BYTES - 12)
    stop_at = MAX_MESSAGES
    for _ in range(MAX_MESSAGES * 4 + 1000):
        if leave_event.is_set() and stop_at == MAX_MESSAGES:
            stop_at = min(MAX_MESSAGES, st.sent + AFTER_LEAVE)
        while st.sent - st.acked < WINDOW and st.sent < stop_at:
            t = f"{st.sent:08d}|{pad}"
            texts.append(t)
            await s.send({"type": "chat", "text": t, "cid": f"s{st.sent}"})
            st.sent += 1
            if pace:
                await asyncio.sleep(pace)
        if st.acked == st.sent and copies == st.sent:
            break
        f = await s.recv(timeout=TIMEOUT * 4)
        if f["type"] == "ack":
            assert f["cid"] == f"s{st.acked}", f"ack out of order: {f} (expected s{st.acked})"
            st.acked += 1
        elif f["type"] == "chat":
            assert f["text"] == texts[copies], "the sender's own copies are out of order"
            copies += 1
        else:
            assert f["type"] == "system", f"unexpected frame for the sender: {f}"
    st.done = True
    return texts


async def rss_sampler(gw, st):
    for _ in range(100000):
        st.rss_max = max(st.rss_max, gw.rss_bytes())
        if st.done:
            return
        await asyncio.sleep(0.1)


def parse_stream(data):
    """Splits what the slow client read into frames: returns (chat texts, close code or None,
    truncated?). Text frames must be JSON; a frame cut short at the end is reported as
    truncated."""
    texts, pos = [], 0
    for _ in range(100000):
        if pos == len(data):
            return texts, None, False
        if len(data) - pos < 2:
            return texts, None, True
        b0, b1 = data[pos], data[pos + 1]
        n, hl = b1 & 0x7F, 2
        if n == 126:
            if len(data) - pos < 4:
                return texts, None, True
            n, hl = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
        elif n == 127:
            if len(data) - pos < 10:
                return texts, None, True
            n, hl = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
        if len(data) - pos < hl + n:
            return texts, None, True
        op, payload = b0 & 0x0F, data[pos + hl:pos + hl + n]
        pos += hl + n
        if op == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            assert pos == len(data), f"{len(data) - pos} bytes after the close frame"
            return texts, code, False
        assert op == OP_TEXT, f"unexpected opcode {op}"
        f = json.loads(payload)
        if f["type"] == "chat":
            texts.append(f["text"])
        else:
            assert f["type"] in ("system", "typing"), f
    raise AssertionError("too many frames")


def drain(ws, limit):
    """Reads the slow socket until EOF/reset or `limit` seconds. Returns (data, how it ended:
    'eof' | 'reset' | 'open')."""
    data = bytearray(ws.buf)
    deadline = time.monotonic() + limit
    for _ in range(1000000):
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(data), "open"
        ws.sock.settimeout(left)
        try:
            chunk = ws.sock.recv(1 << 20)
        except TimeoutError:
            return bytes(data), "open"
        except ConnectionResetError:
            return bytes(data), "reset"
        if not chunk:
            return bytes(data), "eof"
        data += chunk
    raise AssertionError("too much data")


async def watch_state(ws, bound):
    """Polls the slow socket's TCP state without reading; returns (state, seconds) when it
    leaves ESTABLISHED, or (ESTABLISHED, bound)."""
    t0 = time.monotonic()
    for _ in range(100000):
        st = ws.tcp_state()
        if st != TCP_ESTABLISHED:
            return st, time.monotonic() - t0
        if time.monotonic() - t0 > bound:
            return st, bound
        await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


def run_flood(gw, expected_code, readers=3, pace=0.0, timeout=150, resume_at_once=False):
    """resume_at_once: the slow client starts reading again as soon as the stream is over
    (within the gateway's 5 s close linger) instead of first waiting to see the drop."""
    async def body():
        members = [await Client.open(gw, f"/chat/{ROOM}") for _ in range(readers)]
        sender = await Client.open(gw, f"/chat/{ROOM}")
        slow = await asyncio.to_thread(lambda: RawWS(gw.port, rcvbuf=SLOW_RCVBUF)
                                       .open(f"/chat/{ROOM}"))
        welcome = slow.recv_json()
        assert welcome["type"] == "welcome"
        check_joined(slow.recv_json(), ROOM)
        slow_user = welcome["user"]
        # from here on the slow client never reads until the end
        st = Stream()
        st.rss_max = rss_start = gw.rss_bytes()
        leave_event = asyncio.Event()
        chats = [[] for _ in members]
        # the notices of the members' own joins (in order of connection) come first
        for i, m in enumerate(members):
            for _ in range(readers - i):  # later readers + sender
                assert (await m.recv_type("system"))["event"] == "join"
            assert (await m.recv_type("system"))["user"] == slow_user
        assert (await sender.recv_type("system"))["user"] == slow_user
        tasks = [asyncio.create_task(reader(m, chats[i], slow_user, st, leave_event))
                 for i, m in enumerate(members)]
        sampler = asyncio.create_task(rss_sampler(gw, st))
        t0 = time.monotonic()
        try:
            texts = await sender_loop(sender, st, leave_event, pace=pace)
            took = time.monotonic() - t0
            # the readers get every message (bounded)
            for _ in range(int(60 * SCALE / 0.05)):
                if all(len(c) >= len(texts) for c in chats) or any(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.05)
            for t in tasks:
                if t.done():
                    t.result()  # re-raises a reader's failure
            if not leave_event.is_set():
                await asyncio.wait_for(leave_event.wait(), CLOSE_DROP + 3 * SCALE)
        finally:
            st.done = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, sampler, return_exceptions=True)
        print(f"streamed {len(texts)} chats of {TEXT_BYTES} B in {took:.1f}s; slow member "
              f"left {st.leave_at - t0:.1f}s in; RSS {rss_start / 2**20:.1f} -> max "
              f"{st.rss_max / 2**20:.1f} MiB")
        assert st.sent < MAX_MESSAGES or st.leave_at is not None
        for i, c in enumerate(chats):
            assert len(c) == len(texts), \
                f"member {i} received {len(c)} of {len(texts)} chats"
            assert c == texts, f"member {i} received the chats out of order or altered"
        assert st.rss_max <= rss_start + RSS_BOUND, \
            f"gateway RSS went from {rss_start / 2**20:.1f} to {st.rss_max / 2**20:.1f} MiB " \
            f"(bound: start + {RSS_BOUND / 2**20:.0f} MiB)"

        if resume_at_once:
            state, waited = TCP_ESTABLISHED, time.monotonic() - st.leave_at
        else:
            # the slow socket: EOF/reset seen within ~5 s of the close (without reading) ...
            bound = st.leave_at + CLOSE_DROP + 2 * SCALE - time.monotonic()
            state, waited = await watch_state(slow, max(0.1, bound))
            waited = time.monotonic() - st.leave_at
        # ... or, reading now, a close frame with the code after the data
        data, end = await asyncio.to_thread(drain, slow, CLOSE_DROP + 3 * SCALE)
        end_after = time.monotonic() - st.leave_at
        slow.close()
        got, code, truncated = parse_stream(data)
        print(f"slow socket: resumed reading {waited:.1f}s after the leave notice, stream ended "
              f"({end}) {end_after:.1f}s after it")
        print(f"slow socket: TCP {TCP_STATE_NAMES.get(state, state)} {waited:.1f}s after the "
              f"leave notice; "
              f"read {len(data)} bytes, {len(got)} chats, close code {code}, end {end}, "
              f"truncated {truncated}")
        assert got == texts[:len(got)], \
            "the slow member's chats are not a gap-free prefix of what was sent " \
            "(a chat was dropped silently)"
        assert len(got) < len(texts), "the slow member got everything: it was never cut off"
        if code is not None:
            assert code == expected_code, f"close code {code}, expected {expected_code}"
        assert end != "open", \
            f"the slow member's TCP connection was still open {CLOSE_DROP + 3 * SCALE:.0f}s " \
            "after it resumed reading"
        if resume_at_once:
            assert code == expected_code or end_after <= CLOSE_DROP + 2 * SCALE, (
                f"reading from right after the stream, the slow member found no close frame "
                f"{expected_code} and the connection ended only {end_after:.1f}s after its "
                f"leave notice ({end})")
        else:
            assert state != TCP_ESTABLISHED or code == expected_code, (
                f"the slow member neither saw EOF/reset within {CLOSE_DROP + 2 * SCALE:.0f}s "
                f"of its leave notice (TCP still ESTABLISHED) nor found a close frame "
                f"{expected_code} when it resumed reading (it read {len(got)} chats, then "
                f"{end}{', a cut frame' if truncated else ''})")

        await asyncio.gather(*(m.close() for m in members), sender.close())

    run(body(), timeout=timeout)


def test_slow_consumer_is_closed_4002_others_get_everything(gateway_factory):
    harness.require_options("--send-queue-bytes")
    gw = gateway_factory("--send-queue-bytes", "262144", *NO_LIMITS)
    run_flood(gw, 4002)


def test_slow_consumer_resuming_at_once_sees_4002_or_the_drop(gateway_factory):
    """Same flood; the slow client reads again right after it: it finds its gap-free prefix of
    chats, then the 4002 close frame, or at least the end of the connection within ~5 s."""
    harness.require_options("--send-queue-bytes")
    gw = gateway_factory("--send-queue-bytes", "262144", *NO_LIMITS)
    run_flood(gw, 4002, resume_at_once=True)


def test_write_timeout_closes_4003(gateway_factory):
    """A queue big enough never to overflow here (64 MiB), a 1 s write timeout: the stalled
    connection is closed with 4003. The stream is paced (~1 MB/s) so that the queue grows slowly
    once the kernel buffers are full."""
    harness.require_options("--send-queue-bytes", "--write-timeout")
    gw = gateway_factory("--send-queue-bytes", str(64 * 2 ** 20), "--write-timeout", "1s",
                         *NO_LIMITS)
    run_flood(gw, 4003, readers=1, pace=0.002)


def test_reading_members_are_not_closed_by_the_queue_limit(gateway_factory):
    """Members that read normally stay connected however much traffic flows: 4 MiB through a
    room with a 64 KiB queue limit."""
    harness.require_options("--send-queue-bytes")
    gw = gateway_factory("--send-queue-bytes", "65536", *NO_LIMITS)

    async def body():
        members = [await Client.open(gw, f"/chat/{ROOM}") for _ in range(3)]
        sender = members[0]
        for i, m in enumerate(members):
            for _ in range(2 - i):
                await m.recv_type("system")
        pad = "y" * (TEXT_BYTES - 12)
        n = 2000
        chats = [[] for _ in members[1:]]

        async def read(m, out):
            for _ in range(n * 2):
                f = await m.recv(timeout=TIMEOUT * 4)
                assert f["type"] == "chat", f
                out.append(f["text"])
                if len(out) == n:
                    return

        tasks = [asyncio.create_task(read(m, chats[i])) for i, m in enumerate(members[1:])]
        texts = [f"{i:08d}|{pad}" for i in range(n)]
        acked = copies = sent = 0
        for _ in range(n * 4):
            while sent - acked < WINDOW and sent < n:
                await sender.send({"type": "chat", "text": texts[sent], "cid": f"r{sent}"})
                sent += 1
            if acked == n and copies == n:
                break
            f = await sender.recv(timeout=TIMEOUT * 4)
            if f["type"] == "ack":
                acked += 1
            else:
                assert f["type"] == "chat" and f["text"] == texts[copies], f
                copies += 1
        await asyncio.gather(*tasks)
        assert all(c == texts for c in chats)
        for m in members:
            assert m.ws.open
        await asyncio.gather(*(m.close() for m in members))
    run(body(), timeout=120)
