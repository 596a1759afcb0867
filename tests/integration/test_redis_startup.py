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


def test_two_nodes_retry_redis_at_different_times(gateway_factory):
    """The reconnect jitter comes from a generator seeded per process, node and link: two nodes
    that lost the same Redis at the same moment do not retry in the same millisecond (an
    unseeded rand() gave every process the same sequence, so a whole fleet retried in lockstep).
    The first two retry delays of each link, from the `redis link failed` records, differ
    between the nodes (equal by chance: about 1 in 500,000)."""
    dead = harness.free_port()  # nothing listens there
    nodes = [gateway_factory("--redis-url", f"127.0.0.1:{dead}", "--redis-timeout", "1s",
                             node_id=n) for n in ("ja", "jb")]

    def retries(gw):
        out = {}
        for r in gw.log_records():
            if r.get("msg") == "redis link failed":
                link = r["link"].rsplit(":", 1)[1]  # chat-gateway:<node>:pub -> pub
                out.setdefault(link, []).append(r["retry_ms"])
        return out

    deadline = time.monotonic() + 10 * harness.TIMEOUT_SCALE
    for _ in range(500):  # bounded: the second failure comes after about 1 + 1 s at most
        got = [retries(gw) for gw in nodes]
        if all(len(g.get(k, [])) >= 2 for g in got for k in ("pub", "sub")) or \
                time.monotonic() > deadline:
            break
        time.sleep(0.05)
    a, b = got
    for link in ("pub", "sub"):
        assert len(a.get(link, [])) >= 2 and len(b.get(link, [])) >= 2, got
        assert a[link][:2] != b[link][:2], f"{link}: both nodes retried after {a[link][:2]} ms"
        # each delay is the backoff with jitter: within [d/2, d] for d = 1000, 2000 ms
        for gw_retries in (a, b):
            for d, got_ms in zip((1000, 2000), gw_retries[link][:2]):
                assert d // 2 <= got_ms <= d, (link, gw_retries[link])
    assert a["pub"][:2] != a["sub"][:2], "the two links of one node share their jitter"
