"""Redis is a trust boundary (docs/scaling.md, "What a node relays"): whatever can PUBLISH to
<prefix>room:<room> must not reach members unless it is what a node would have published itself.

A member sits in a room on a gateway backed by a real redis-server; the test PUBLISHes crafted
broker messages with redis-cli. A well-formed message "from another node" is delivered (so the
path works); non-JSON text, invalid UTF-8, a 2 MiB body, a publish time of 2^63, a type that does
not match the kind, a room that is not the channel's, an unknown kind and a NUL in a string are
each dropped: the member receives nothing and stays connected, and chat_broker_rejected_total
counts each under its reason.
"""

import json
import subprocess
import time

import harness
from ophelpers import readyz, scrape, wait_until
from test_redis_startup import start_redis
from wsclient import Client, run

SCALE = harness.TIMEOUT_SCALE


def publish(port, channel, payload):
    """PUBLISH payload (bytes) with redis-cli -x (the payload is the last argument, from stdin);
    returns the number of subscribers that got it."""
    out = subprocess.run(["redis-cli", "-p", str(port), "-x", "PUBLISH", channel],
                         input=payload, capture_output=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[0])


def wire(kind, body, node="other-node", conn=7, ms=None, flags="-"):
    ms = int(time.time() * 1000) if ms is None else ms
    return f"CGW1 {kind} {flags} {node} {conn} {ms}\n".encode() + body


def chat_body(room, text="hello from elsewhere", user="bob", **over):
    env = {"type": "chat", "room": room, "id": "other-node-abc-1", "user": user, "text": text,
           "ts": int(time.time() * 1000)}
    env.update(over)
    return json.dumps(env, separators=(",", ":")).encode()


def test_only_what_a_node_would_publish_is_relayed(tmp_path, gateway_factory):
    rport = harness.free_port()
    redis = start_redis(rport)
    try:
        gw = gateway_factory("--redis-url", f"redis://127.0.0.1:{rport}", "--max-text-bytes",
                             "4096")
        wait_until(lambda: readyz(gw)[0] == 200, 10 * SCALE, "the node is ready")
        room = "trust"
        channel = f"chat:room:{room}"
        cases = {
            "json": wire("c", b"this is not json"),
            "utf8": wire("c", chat_body(room).replace(b"hello", b"he\xc3\x28lo")),
            "size": wire("c", b"{" + b" " * (2 * 2 ** 20) + b"}"),
            "header": wire("c", chat_body(room), ms=2 ** 63),
            "type": wire("c", chat_body(room, type="typing")),
            "room": wire("c", chat_body("elsewhere")),
            "kind": wire("z", chat_body(room)),
            "fields": wire("c", chat_body(room, text="a\x00b")),  # json.dumps: "a\u0000b"
        }

        async def body():
            c = await Client.open(gw, f"/chat/{room}")
            wait_until(lambda: numsub(rport, channel) == 1, 5 * SCALE, "subscribed")
            before = scrape(gw)
            # the control: a well-formed message from another node is delivered verbatim
            assert publish(rport, channel, wire("c", chat_body(room))) == 1
            got = await c.recv()
            assert got["type"] == "chat" and got["user"] == "bob", got
            for reason, payload in cases.items():
                assert publish(rport, channel, payload) == 1, reason
            # nothing of it reaches the member, which is still connected and served
            assert await c.recv_until_pong() == []
            after = scrape(gw)
            for reason in cases:
                d = after.get("chat_broker_rejected_total", reason=reason) - \
                    before.get("chat_broker_rejected_total", reason=reason)
                assert d == 1, f"{reason}: counted {d}"
            ack, copy = await c.chat_confirmed("still fine")
            assert copy["text"] == "still fine"
            await c.close()

        run(body(), timeout=60 * SCALE)
        dropped = [r for r in gw.log_records() if r.get("msg") == "broker message dropped"]
        assert dropped and dropped[0].get("room") == room, dropped
        # sampled: eight refusals in one burst are not eight records
        assert len(dropped) < len(cases), dropped
        gw.stop()
    finally:
        redis.terminate()
        redis.wait(5)


def numsub(port, channel):
    out = subprocess.run(["redis-cli", "-p", str(port), "PUBSUB", "NUMSUB", channel],
                         capture_output=True, text=True, timeout=5).stdout.split()
    return int(out[1]) if len(out) == 2 else -1
