"""Memory amplification without credentials (docs/limits.md, "Memory per connection"): what a
client sends must not cost the gateway more memory than the documented bounds, whatever the
framing. The gateway's resident set size is read from /proc/<pid>/status (harness.rss_bytes()).

- Fragments: 50 connections each start a text message with "{" (FIN=0) and send 65,436 one-byte
  continuation frames (458 KB on the wire each, the message never finished, always under the
  64 KiB limit). The gateway must stay under start + ONE_TIME + 50 x (max-message-bytes + FIXED),
  and every connection must still answer a ping (nothing was refused).
- Pongs: 20 connections with a tiny receive buffer never read and send 300,000 empty pings each
  (one read of the gateway holds 10,922 of them). The gateway must stay under start + ONE_TIME +
  20 x (send-queue-bytes + FIXED), and what it holds must agree with chat_send_queue_bytes: the
  growth of its RSS is at most what that gauge shows plus fixed state.

Under AddressSanitizer every allocation carries redzones and shadow memory, and freed memory sits
in the allocator quarantine (16 MiB in the tests, harness.ASAN_TEST_OPTIONS) before it is reused.
The quarantine counts the bytes asked for, not the chunks holding them (a header and redzones of
at least 16 bytes each): for the small allocations of a ping flood (a pong's buffer is 18 bytes)
the chunks are up to 4 times larger. So under ASan the bounds are doubled, plus 4 x 16 MiB.
"""

import fcntl
import struct
import termios
import time

import harness
from ophelpers import scrape
from rawws import OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, build_frame

SCALE = harness.TIMEOUT_SCALE
KIB, MIB = 1024, 1024 * 1024
MAX_MESSAGE = 65536  # --max-message-bytes default
SEND_QUEUE = MIB  # --send-queue-bytes default
# docs/limits.md: the fixed state of an open connection (session, wslay's context with its two
# 4 KiB buffers, the handles) is about 12 KiB; the bound is 16 KiB. ONE_TIME: what the first
# connections cost once (the loop-wide 64 KiB read buffer, the allocator's arenas).
FIXED = 16 * KIB
ONE_TIME = 4 * MIB
ASAN_QUARANTINE = 16 * MIB
ASAN_QUARANTINE_FOOTPRINT = 4 * ASAN_QUARANTINE  # small chunks: up to 4x the bytes counted
MASK = b"\x01\x02\x03\x04"

FRAG_CONNS = 50
FRAGMENTS = 65436  # "{" + 65,436 bytes = 65,437 < 65,536: never over the limit
PING_CONNS = 20
PINGS = 300000
TINY_RCVBUF = 4096


def bound(conns, per_conn):
    """What docs/limits.md allows above the start: fixed state plus per_conn per connection;
    doubled plus the quarantine's footprint under ASan."""
    b = ONE_TIME + conns * (per_conn + FIXED)
    return 2 * b + ASAN_QUARANTINE_FOOTPRINT if harness.ASAN else b


def mib(n):
    return f"{n / MIB:.1f} MiB"


def bound_text(conns, per_conn, name):
    text = f"{conns} x ({name} {per_conn} + {FIXED // KIB} KiB) + {mib(ONE_TIME)}"
    if harness.ASAN:
        text = f"2 x ({text}) + {mib(ASAN_QUARANTINE_FOOTPRINT)} under ASan"
    return text


def open_ws(gw, rcvbuf=None):
    ws = RawWS(gw.port, rcvbuf=rcvbuf).open("/ws")
    assert ws.recv_json()["type"] == "welcome"
    return ws


def test_one_byte_fragments_cost_at_most_the_message_limit(gateway_factory):
    gw = gateway_factory()
    time.sleep(0.2)
    start = gw.rss_bytes()
    conns = []
    try:
        for _ in range(FRAG_CONNS):
            conns.append(open_ws(gw))
        for ws in conns:
            ws.send_frame(OP_TEXT, b"{", fin=False)
        # Round-robin, 1,000 fragments (7,000 bytes) per connection per turn: all the messages
        # grow together.
        block = build_frame(OP_CONT, b"a", fin=False, key=MASK) * 1000
        left = FRAGMENTS
        peak = 0
        for _ in range(FRAGMENTS // 1000 + 1):
            if left == 0:
                break
            k = min(1000, left)
            for ws in conns:
                ws.sock.sendall(block[:7 * k])
            left -= k
            peak = max(peak, gw.rss_bytes())
        # A ping between fragments is answered: the gateway read everything before it, and
        # refused nothing (every message is still under the limit).
        for ws in conns:
            ws.send_frame(OP_PING, b"here")
        for ws in conns:
            fin, rsv, op, payload = ws.recv_frame(timeout=10 * SCALE)
            assert (op, payload) == (OP_PONG, b"here"), (op, payload)
        peak = max(peak, gw.rss_bytes())
        limit = bound(FRAG_CONNS, MAX_MESSAGE)
        assert peak - start <= limit, (
            f"{FRAG_CONNS} connections holding unfinished messages of one-byte fragments took "
            f"the gateway's RSS from {mib(start)} to {mib(peak)}: +{mib(peak - start)}, over the "
            f"documented bound of +{mib(limit)}: "
            f"{bound_text(FRAG_CONNS, MAX_MESSAGE, '--max-message-bytes')}")
        print(f"fragments: RSS +{mib(peak - start)} (bound +{mib(limit)})")
    finally:
        for ws in conns:
            ws.close()


def unsent_bytes(sock):
    """Bytes this client socket has not handed to the peer yet (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def gateway_rx_backlog(port):
    """Bytes received but not yet read by the gateway, over its connections on `port`
    (rx_queue of /proc/net/tcp for the sockets whose local port is the gateway's)."""
    total = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, queues = fields[1], fields[4]
            if int(local.rsplit(":", 1)[1], 16) == port:
                total += int(queues.split(":")[1], 16)
    return total


def test_ping_flood_from_non_readers_is_bounded_by_the_send_queue(gateway_factory):
    # The write timeout is out of the way: the gateway must hold the non-readers as long as
    # the test measures (under ASan this takes longer than the default 30 s).
    gw = gateway_factory("--write-timeout", "600s")
    time.sleep(0.2)
    start = gw.rss_bytes()
    conns = []
    try:
        for _ in range(PING_CONNS):
            conns.append(open_ws(gw, rcvbuf=TINY_RCVBUF))
        block = build_frame(OP_PING, b"", key=MASK) * 1000  # 6,000 bytes
        for ws in conns:
            ws.sock.setblocking(False)
        sent = [0] * PING_CONNS
        peak = 0
        deadline = time.monotonic() + 60 * SCALE
        stalled_since = None
        for _ in range(10 ** 6):
            progress = False
            for i, ws in enumerate(conns):
                want = min(len(block), (PINGS - sent[i]) * 6)
                if want == 0:
                    continue
                try:
                    n = ws.sock.send(block[:want])
                except BlockingIOError:
                    continue
                sent[i] += n // 6  # whole pings: every slice of block is a multiple of 6
                progress = progress or n > 0
            peak = max(peak, gw.rss_bytes())
            if all(s >= PINGS for s in sent) or time.monotonic() > deadline:
                break
            if progress:
                stalled_since = None
            elif stalled_since is None:
                stalled_since = time.monotonic()
            elif time.monotonic() - stalled_since > 2 * SCALE:
                break  # the gateway stopped reading (its queue is full): measure now
            else:
                time.sleep(0.01)
        # Until the gateway has read everything it will read: nothing unsent on our side and
        # nothing unread on its side, or no progress for 2 s (reading paused).
        last, last_change = None, time.monotonic()
        for _ in range(10 ** 5):
            backlog = sum(unsent_bytes(ws.sock) for ws in conns) + gateway_rx_backlog(gw.port)
            peak = max(peak, gw.rss_bytes())
            if backlog == 0 or time.monotonic() > deadline:
                break
            if backlog != last:
                last, last_change = backlog, time.monotonic()
            elif time.monotonic() - last_change > 2 * SCALE:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        held = gw.rss_bytes()
        queued = scrape(gw).get("chat_send_queue_bytes")
        peak = max(peak, held)
        limit = bound(PING_CONNS, SEND_QUEUE)
        assert peak - start <= limit, (
            f"{PING_CONNS} non-readers sending {sum(sent)} empty pings took the gateway's RSS "
            f"from {mib(start)} to {mib(peak)}: +{mib(peak - start)}, over the documented bound "
            f"of +{mib(limit)}: {bound_text(PING_CONNS, SEND_QUEUE, '--send-queue-bytes')}")
        print(f"pings: {sum(sent)} sent, RSS peak +{mib(peak - start)} (bound +{mib(limit)}), "
              f"held +{mib(held - start)} with {queued:.0f} bytes queued")
        agree = queued + bound(PING_CONNS, 0)
        assert held - start <= agree, (
            f"the gateway holds +{mib(held - start)} after the ping flood while "
            f"chat_send_queue_bytes shows {queued:.0f} bytes: more than the queues plus fixed "
            f"state (+{mib(agree)}); pongs are held outside the send queue's count")
        assert gw.alive()
        # The connection is still open (nothing here was a reason to close it): once it
        # reads, it finds pongs, and the answer to a last ping.
        ws = conns[0]
        ws.sock.setblocking(True)
        ws.send_frame(OP_PING, b"last")
        end = time.monotonic() + 30 * SCALE
        for _ in range(PINGS + 200):
            fin, rsv, op, payload = ws.recv_frame(timeout=max(0.1, end - time.monotonic()))
            assert op == OP_PONG, f"expected pongs, got opcode {op} {payload!r}"
            if payload == b"last":
                break
        else:
            raise AssertionError("no pong for the last ping")
    finally:
        for ws in conns:
            ws.close()
