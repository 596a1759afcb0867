"""CPU amplification without credentials (docs/limits.md, "What a message may cost").

A client floods 64 KB envelopes each holding a 32,000-element array, far over its rate limit,
at a fixed pace. Before the fix every one of them was parsed into a cJSON tree (about 2.2 ms
each) before the rate limit refused it, which held the loop at 100%. Now the bucket is taken
before any parse (a refused message costs one scan of its bytes) and an array of more than 64
elements is refused before a tree is built. Checked from /proc/<pid>/stat: the gateway's CPU
time over the flood stays under FLOOD_CPU_SHARE of the wall time, and another client's ping
round trips stay short.
"""

import asyncio
import json
import os
import statistics
import time

import harness
from wsclient import Client, run

SCALE = harness.TIMEOUT_SCALE
FLOOD_SECONDS = 4.0
FLOOD_RATE = 150            # messages per second, each about 64 KB
FLOOD_CPU_SHARE = 0.35      # of one core, over the flood (documented in docs/limits.md)
PING_P50_MS = 10.0 * SCALE  # the other client's median ping round trip


def cpu_seconds(pid):
    """utime + stime of pid, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def big_array_message():
    body = {"type": "chat", "text": "x", "a": [1] * 32000}
    msg = json.dumps(body, separators=(",", ":"))
    assert 60000 < len(msg) <= 65536, len(msg)
    return msg


def test_rate_limited_big_arrays_cost_no_parse(gateway_factory):
    gw = gateway_factory()
    msg = big_array_message()

    async def body():
        flooder = await Client.open(gw, "/chat/cpu")
        other = await Client.open(gw, "/chat/cpu2")
        stop = asyncio.Event()

        async def drain():  # read the flooder's errors so that its queue never fills
            while not stop.is_set():
                try:
                    await flooder.recv(timeout=0.5)
                except asyncio.TimeoutError:
                    pass

        async def flood():
            n = 0
            start = time.monotonic()
            while time.monotonic() - start < FLOOD_SECONDS and n < FLOOD_RATE * FLOOD_SECONDS:
                await flooder.ws.send(msg)
                n += 1
                ahead = n / FLOOD_RATE - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            return n

        async def pings():
            rtts = []
            for _ in range(int(FLOOD_SECONDS * 20)):
                if stop.is_set():
                    break
                t = time.monotonic()
                await other.send({"type": "ping"})
                f = await other.recv_type("pong", skip=("system",))
                assert f == {"type": "pong"}
                rtts.append((time.monotonic() - t) * 1000)
                await asyncio.sleep(0.05)
            return rtts

        drainer = asyncio.ensure_future(drain())
        cpu0, t0 = cpu_seconds(gw.pid), time.monotonic()
        pinger = asyncio.ensure_future(pings())
        sent = await flood()
        cpu1, t1 = cpu_seconds(gw.pid), time.monotonic()
        stop.set()
        rtts = await pinger
        await drainer
        await flooder.close()
        await other.close()
        return sent, (cpu1 - cpu0) / (t1 - t0), rtts

    sent, share, rtts = run(body(), timeout=60 * SCALE)
    assert sent >= FLOOD_RATE * FLOOD_SECONDS * 0.8, sent
    p50 = statistics.median(rtts)
    print(f"flood: {sent} messages of 64 KB, gateway CPU {share:.1%}, ping p50 {p50:.2f} ms "
          f"max {max(rtts):.2f} ms")
    assert share < FLOOD_CPU_SHARE * (2 if harness.ASAN else 1), \
        f"the gateway used {share:.0%} of a core for a rate-limited flood"
    assert p50 < PING_P50_MS, f"another client's ping took {p50:.1f} ms (median) during a flood"
