"""Reconnect churn without credentials (docs/limits.md, "New connections per address"; docs/scaling.md).

One client looping connect, join 128 rooms, close drove about 10,800 Redis commands a second:
every cycle subscribed and unsubscribed 128 channels and published 256 join/leave notices into
rooms nobody else was in. Now:
- a node publishes no notice into a room nobody else is in (no other local member, and the
  room's last notice reached this node only), and a room stays subscribed for --room-linger after
  its last member, so the loop costs Redis (almost) nothing after its first cycle (counted from
  Redis' own INFO commandstats);
- new connections are rate-limited per client address (--connect-rate-per-ip, with the
  --trusted-proxies rules): 429 with Retry-After and a JSON body beyond the burst, counted in
  chat_handshake_rejected_total{status="429"}; another address is not affected.
"""

import asyncio
import subprocess
import time

import harness
import rawws
from ophelpers import delta, readyz, scrape, wait_until
from test_redis_startup import start_redis
from wsclient import Client, run

SCALE = harness.TIMEOUT_SCALE
ROOMS = 128
CHURN_SECONDS = 3.0


def commandstats(port):
    """{command: calls} from INFO commandstats."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                         capture_output=True, text=True, timeout=5).stdout
    calls = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[len("cmdstat_"):].partition(":")
            fields = dict(kv.split("=") for kv in rest.split(","))
            calls[name] = int(fields["calls"])
    return calls


async def cycle(gw, prefix):
    c = await Client.open(gw, "/ws")
    for i in range(ROOMS):
        await c.send({"type": "join", "room": f"{prefix}-{i}"})
    for _ in range(ROOMS):
        f = await c.recv_type("joined", skip=("system",))
        assert f["room"].startswith(prefix), f
    await c.close()


def test_churn_in_rooms_nobody_else_is_in_costs_no_redis_commands(gateway_factory):
    rport = harness.free_port()
    redis = start_redis(rport)
    try:
        gw = gateway_factory("--redis-url", f"redis://127.0.0.1:{rport}")
        wait_until(lambda: readyz(gw)[0] == 200, 10 * SCALE, "the node is ready")

        async def body():
            await cycle(gw, "churn")  # the first cycle subscribes and learns the rooms are empty
            await asyncio.sleep(0.2)
            before, t0 = commandstats(rport), time.monotonic()
            n = 0
            while time.monotonic() - t0 < CHURN_SECONDS and n < 1000:
                await cycle(gw, "churn")
                n += 1
            return n, before, time.monotonic() - t0

        n, before, secs = run(body(), timeout=60 * SCALE)
        after = commandstats(rport)
        used = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        per_s = sum(used.values()) / secs
        print(f"churn: {n} cycles of {ROOMS} joins in {secs:.1f} s, Redis commands {used}, "
              f"{per_s:.0f}/s")
        assert n >= 3, n
        # what remains is the node's own canary (one PUBLISH a second) and INFO itself
        assert used.get("publish", 0) <= secs + 2, used
        assert used.get("subscribe", 0) == 0 and used.get("unsubscribe", 0) == 0, used
        gw.stop()
    finally:
        redis.terminate()
        redis.wait(5)


def test_notices_still_reach_others(gateway_factory):
    """The skipping never hides a join or leave from someone who is there: a member on another
    node, and a local member, both hear the newcomer."""
    rport = harness.free_port()
    redis = start_redis(rport)
    try:
        url = f"redis://127.0.0.1:{rport}"
        a = gateway_factory("--redis-url", url, node_id="na")
        b = gateway_factory("--redis-url", url, node_id="nb")
        for gw in (a, b):
            wait_until(lambda: readyz(gw)[0] == 200, 10 * SCALE, "the node is ready")

        async def body():
            # u1 alone on node a: its room learns nobody else is in it
            u1 = await Client.open(a, "/chat/seen")
            await asyncio.sleep(0.3)
            # u2 joins on node b: node b does not know a yet, publishes, u1 hears it
            u2 = await Client.open(b, "/chat/seen")
            f = await u1.recv_type("system")
            assert f["event"] == "join" and f["user"] == u2.user, f
            # u3 joins on node a: there is someone else now (u1 locally, u2 remotely)
            u3 = await Client.open(a, "/chat/seen")
            for c in (u1, u2):
                f = await c.recv_type("system")
                assert f["event"] == "join" and f["user"] == u3.user, f
            await u3.close()
            for c in (u1, u2):
                f = await c.recv_type("system")
                assert f["event"] == "leave" and f["user"] == u3.user, f
            await u1.close()
            f = await u2.recv_type("system")
            assert f["event"] == "leave" and f["user"] == u1.user, f
            await u2.close()

        run(body(), timeout=30 * SCALE)
    finally:
        redis.terminate()
        redis.wait(5)


def test_connect_rate_per_address(gateway_factory):
    gw = gateway_factory("--connect-rate-per-ip", "2", "--connect-burst-per-ip", "5",
                         "--trusted-proxies", "127.0.0.0/8")
    m0 = scrape(gw)

    def upgrade(xff):
        req = rawws.upgrade_request("/ws", port=gw.port,
                                    extra=(f"X-Forwarded-For: {xff}",))
        s = rawws.RawWS(gw.port)
        s.sock.sendall(req)
        head = s._read_until(b"\r\n\r\n")
        status = rawws.parse_head(head)[0]
        if status != 101:
            resp = rawws.Response(*rawws.parse_head(head), s.buf, True)
            s.close()
            return status, resp
        s.close()
        return status, None

    results = [upgrade("198.51.100.1") for _ in range(8)]
    ok = [r for r in results if r[0] == 101]
    refused = [r for r in results if r[0] == 429]
    # the burst (5), and at most one more refilled while the loop ran (2 a second)
    assert 5 <= len(ok) <= 6 and len(ok) + len(refused) == 8, [r[0] for r in results]
    resp = refused[0][1]
    assert resp.header("retry-after") == "1", resp
    assert b'"error":"rate_limited"' in resp.body, resp
    # another client address has a bucket of its own
    assert upgrade("198.51.100.2")[0] == 101
    time.sleep(1.2)  # 2 tokens a second: the first address may connect again
    assert upgrade("198.51.100.1")[0] == 101
    m1 = scrape(gw)
    assert delta(m1, m0, "chat_handshake_rejected_total", status="429") == len(refused)
