"""Close paths (docs/architecture.md, "Closing a session"): a send or a timer never tears a session
down in the middle of a walk; it records the close and the loop closes the session at one safe
point. These are the regressions of the fanout use-after-free and of the token-expiry linger.

- A slow member alone in a room overflows its send queue while the room's members are being walked
  (the sender left right after its chats): the gateway must not touch the freed room (ASan build:
  no report), must close the slow member with 4002, and keep serving everyone else.
- The same across two nodes on a real redis-server: the chats come from the other node.
- A client whose token expires and that never reads is gone within the close linger bound (5 s
  after the close), even though its session timer had other deadlines pending.
"""

import json
import subprocess
import time

import harness
import pytest
from ophelpers import readyz, scrape, wait_until
from rawws import RawWS, build_frame, tcp_state, TCP_CLOSE, TCP_CLOSE_WAIT
from test_redis_startup import start_redis
from wsclient import Client, run

SCALE = harness.TIMEOUT_SCALE
QUEUE = 4096
CHAT_TEXT = "y" * 3000
LINGER = 5.0  # docs/limits.md: the TCP connection is dropped at most 5 s after our close frame


def frame_json(obj):
    import json
    return build_frame(0x1, json.dumps(obj).encode())


def slow_member(port, room):
    """A member of `room` with a tiny receive buffer that will not read again."""
    ws = RawWS(port, rcvbuf=2048).open(f"/chat/{room}")
    assert ws.recv_json()["type"] == "welcome"
    assert ws.recv_json()["type"] == "joined"
    return ws


def dropped(ws):
    """True once the gateway closed or reset the TCP connection (FIN or RST seen)."""
    return tcp_state(ws.sock) in (TCP_CLOSE, TCP_CLOSE_WAIT)


def wait_dropped(ws, seconds):
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds * 50) + 10):
        if dropped(ws) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return dropped(ws)


def close_record(gw, pred, seconds=2 * LINGER * SCALE):
    """The first "connection closed" log record matching pred, waited for (bounded): a session
    is logged when it is freed, which may be up to the linger after its socket saw our FIN."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds * 20) + 10):
        recs = [r for r in gw.log_records() if r.get("msg") == "connection closed" and pred(r)]
        if recs or time.monotonic() > deadline:
            return recs[0] if recs else None
        time.sleep(0.05)
    return None


def still_serves(gw, room="after"):
    async def go():
        c = await Client.open(gw, f"/chat/{room}")
        ack, copy = await c.chat_confirmed("still here")
        await c.close()
        return copy["text"]

    assert run(go()) == "still here"


def send_burst_then_leave(port, room):
    """Joins room on a raw socket and sends three 3,000-byte chats and a leave in ONE write."""
    s = RawWS(port).open(f"/chat/{room}")
    assert s.recv_json()["type"] == "welcome"
    assert s.recv_json()["type"] == "joined"
    burst = b"".join(frame_json({"type": "chat", "text": CHAT_TEXT, "cid": f"b{i}"})
                     for i in range(3))
    burst += frame_json({"type": "leave", "room": room})
    s.sock.sendall(burst)
    return s


def numsub(port, channel):
    out = subprocess.run(["redis-cli", "-p", str(port), "PUBSUB", "NUMSUB", channel],
                         capture_output=True, text=True, timeout=5).stdout.split()
    return int(out[1]) if len(out) == 2 else -1


def sender_replies(sender):
    """The sender's frames until it has its `left` and the three acks (bounded)."""
    seen = []
    for _ in range(40):
        if "left" in seen and seen.count("ack") == 3:
            break
        seen.append(sender.recv_json()["type"])
    assert seen.count("ack") == 3, seen
    return seen


def test_slow_member_alone_overflows_during_fanout(gateway_factory):
    gw = gateway_factory("--send-queue-bytes", str(QUEUE), "--rate-limit", "0",
                         "--user-rate-limit", "0")
    slow = slow_member(gw.port, "r")
    sender = send_burst_then_leave(gw.port, "r")
    # The sender gets its acks and its `left`: the node went on with its work.
    seen = sender_replies(sender)
    assert "left" in seen, seen
    assert wait_dropped(slow, 2 * LINGER * SCALE), "the slow member was not dropped"
    assert gw.alive()
    still_serves(gw)
    sender.close()
    slow.close()
    assert close_record(gw, lambda r: r.get("code") == 4002), gw.stdout_text()[-3000:]


def test_slow_member_overflow_from_another_node(tmp_path, gateway_factory):
    """The chats come from node b through Redis; the slow member is alone in the room on node a.
    Kernel buffers absorb the first MiBs, so b streams (acks pace it) until a drops the member."""
    redis_port = harness.free_port()
    redis = start_redis(redis_port)
    try:
        url = f"redis://127.0.0.1:{redis_port}"
        a = gateway_factory("--redis-url", url, "--send-queue-bytes", str(QUEUE),
                            "--rate-limit", "0", "--user-rate-limit", "0", node_id="na")
        b = gateway_factory("--redis-url", url, "--rate-limit", "0", "--user-rate-limit", "0",
                            node_id="nb")
        for gw in (a, b):
            wait_until(lambda: readyz(gw)[0] == 200, 10 * SCALE, "the node is ready")
        slow = slow_member(a.port, "x")
        wait_until(lambda: numsub(redis_port, "chat:room:x") == 1, 5 * SCALE,
                   "node a subscribed the room")

        async def stream():
            c = await Client.open(b, "/chat/x")
            window = 8
            for i in range(0, 4000, window):  # at most 12 MB
                for k in range(window):
                    await c.chat(CHAT_TEXT, cid=f"s{i + k}")
                for _ in range(2 * window):   # the acks and own copies
                    await c.recv()
                if dropped(slow):
                    break
            await c.close()
            return dropped(slow)

        assert run(stream(), timeout=120 * SCALE) or wait_dropped(slow, 2 * LINGER * SCALE), \
            "the slow member on node a was not dropped"
        assert a.alive() and b.alive()
        still_serves(a)
        slow.close()
        assert close_record(a, lambda r: r.get("code") == 4002), a.stdout_text()[-3000:]
        a.stop()
        b.stop()
    finally:
        redis.terminate()
        redis.wait(5)


async def fill_queue_to(gw, sender, room, limit, headroom):
    """Streams chats from `sender` (a reading Client in `room`) until the non-reading member's
    send queue holds between limit - headroom and limit bytes (read from chat_send_queue_bytes:
    the other connections' queues are empty whenever the sender has its ack and copy). Kernel
    buffers absorb the first MiBs; after that every chat adds exactly its frame to the queue."""
    big = MAX_TEXT - 100
    overhead = None
    for _ in range(2000):
        q = int(scrape(gw).get("chat_send_queue_bytes"))
        left = limit - q
        if q and left <= headroom:
            return q
        if overhead is None or q == 0 or left > big + overhead + 200:
            n = big
        else:
            # frame = 4-byte header + the envelope: size the last chat to leave headroom/2
            n = left - headroom // 2 - overhead - 4
            assert n > 0, (q, left, overhead)
        ack, copy = await sender.chat_confirmed("z" * n, room=room)
        overhead = len(json.dumps(copy, separators=(",", ":")).encode()) - len(copy["text"])
    raise AssertionError("the send queue never filled")


MAX_TEXT = 60000
SENDQ = 262144


def test_expiry_warning_overflow_keeps_the_close_linger(gateway_factory, auth_keys):
    """token_expiring is sent to a client whose queue is full (it never reads): that send closes
    the session (4002), and the session timer must then keep the close linger: the TCP connection
    is gone 5 s later, not left open until some later deadline."""
    ttl = 20 * SCALE
    window = ttl / 2
    gw = gateway_factory(*auth_keys.args(pub=()), "--jwt-leeway", "0s",
                         "--jwt-refresh-window", f"{int(window)}s",
                         "--send-queue-bytes", str(SENDQ), "--max-text-bytes", str(MAX_TEXT),
                         "--rate-limit", "0", "--user-rate-limit", "0",
                         "--ping-interval", "60s", "--write-timeout", "120s")
    tok = auth_keys.mint(sub="exp-user", exp=int(time.time() + ttl))
    ws = RawWS(gw.port, rcvbuf=4096)
    req = (f"GET /chat/e?token={tok} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n"
           "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode()
    ws.open(request=req)
    assert ws.recv_json()["type"] == "welcome"
    assert ws.recv_json()["type"] == "joined"
    sender_tok = auth_keys.mint(sub="sender", ttl=600)

    async def fill():
        sender = await Client.open(gw, f"/chat/e?token={sender_tok}")
        # The expiring client never reads from here on. token_expiring (about 60 bytes) is due
        # at exp - window: fill its queue to within 30 bytes of the bound before that.
        q = await fill_queue_to(gw, sender, "e", SENDQ, 30)
        return sender, q

    sender, q = run(fill())
    assert q <= SENDQ
    # The warning overflows the queue at exp - window: 4002, then the linger bound.
    deadline = time.monotonic() + window + LINGER + 4 * SCALE
    for _ in range(2000):
        if dropped(ws) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert dropped(ws), "the client was not dropped within the close linger after its 4002"
    ws.close()
    sender.abort()
    rec = close_record(gw, lambda r: r.get("user") == "exp-user")
    assert rec and rec.get("code") == 4002, gw.stdout_text()[-3000:]
