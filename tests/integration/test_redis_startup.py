"""A node whose Redis is unreachable at startup still starts and listens, accepts connections,
answers chats with `unavailable` (never an ack), and recovers by itself once Redis appears on the
configured address: the same connection then gets acks and deliveries, with no client action."""

import asyncio
import subprocess
import tempfile
import time

import harness
from wsclient import Client, run


def start_redis(port):
    """A throw-away redis-server on loopback (no persistence; its files in a temp dir)."""
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--daemonize", "no",
                          "--dir", tempfile.mkdtemp(prefix="chat-redis-")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):  # bounded: 10 s
        if harness.port_accepts(port):
            return p
        time.sleep(0.05)
    p.terminate()
    p.wait(5)
    raise AssertionError("redis-server did not start")


def test_unreachable_redis_at_startup_then_recovery(gateway_factory):
    redis_port = harness.free_port()
    gw = gateway_factory("--redis-url", f"127.0.0.1:{redis_port}", "--redis-timeout", "1s")
    redis = None
    try:
        async def body():
            nonlocal redis
            a = await Client.open(gw, "/chat/boot")      # accepted although Redis is down
            b = await Client.open(gw, "/chat/boot")
            cid = await a.chat("during outage")
            err = await a.error("unavailable")
            assert err.get("cid") == cid and err.get("room") == "boot", err
            redis = start_redis(redis_port)
            deadline = time.monotonic() + 20 * harness.TIMEOUT_SCALE
            for _ in range(400):                         # bounded: retries until the node is up
                cid = await a.chat("after recovery")
                frames = []
                while True:
                    f = await a.recv(timeout=5)
                    frames.append(f)
                    if f.get("cid") == cid and f["type"] in ("ack", "error"):
                        break
                if frames[-1]["type"] == "ack":
                    break
                assert frames[-1]["code"] == "unavailable", frames
                assert time.monotonic() < deadline, "the node did not recover"
                await asyncio.sleep(0.2)
            ack = frames[-1]
            got = await b.recv_type("chat", skip=("system",))
            assert got["id"] == ack["id"] and got["text"] == "after recovery"
            await a.close()
            await b.close()
        run(body(), timeout=60)
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(10)
