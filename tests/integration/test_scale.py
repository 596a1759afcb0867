"""Many connections at once, and memory over many connection cycles."""

import asyncio
import collections
import os
import resource

import harness
from wsclient import Client, TIMEOUT, run

# ---- 300 connections in 30 rooms ------------------------------------------------------------

ROOMS = 30
PER_ROOM = 10
MSGS_PER_CONN = 3
SCALE_TIMEOUT = 60.0  # the whole scenario, seconds (multiplied by TIMEOUT_SCALE under ASan)
CONNECT_CONCURRENCY = 50  # handshakes in flight at once (stays below any listen backlog)


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def test_300_connections_30_rooms_exact_ordered_delivery(gateway):
    raise_nofile(4096)

    async def body():
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def open_member(room):
            async with sem:
                return await Client.open(gateway, f"/chat/{room}")

        rooms = [f"load-{r:02d}" for r in range(ROOMS)]
        members = [(room, i) for room in rooms for i in range(PER_ROOM)]
        clients = await asyncio.gather(*(open_member(room) for room, _ in members))
        try:
            conns = [c.conn for c in clients]
            assert len(set(conns)) == len(conns), "connection ids are not unique"
            assert len({c.user for c in clients}) == len(clients), "users are not unique"

            expected_per_room = PER_ROOM * MSGS_PER_CONN

            async def member(c, room, idx):
                for k in range(MSGS_PER_CONN):
                    await c.send({"type": "chat", "room": room, "text": f"{room}|{c.user}|{k}",
                                  "cid": f"{idx}-{k}"})
                chats, acks = [], []
                for _ in range(expected_per_room * 4 + 100):  # bounded: chats, acks, notices
                    if len(chats) >= expected_per_room and len(acks) >= MSGS_PER_CONN:
                        break
                    f = await c.recv(timeout=TIMEOUT * 4)
                    if f["type"] == "chat":
                        assert f["room"] == room, f"member of {room} got a chat of {f['room']}"
                        chats.append(f)
                    elif f["type"] == "ack":
                        acks.append(f)
                    else:  # join notices of members that connected later
                        assert f["type"] == "system" and f["event"] == "join", f
                        assert f["room"] == room, f
                # nothing more than that may be pending
                tail = await c.recv_until_pong(timeout=TIMEOUT * 4)
                extra = [f for f in tail if f["type"] != "system"]
                assert extra == [], f"{c.user} got more than expected: {extra[:5]}"
                assert [a["cid"] for a in acks] == [f"{idx}-{k}" for k in range(MSGS_PER_CONN)]
                return chats, acks

            results = await asyncio.gather(*(member(c, room, i)
                                             for i, (c, (room, _)) in
                                             enumerate(zip(clients, members))))

            by_room = collections.defaultdict(list)
            for (room, _), (chats, acks) in zip(members, results):
                by_room[room].append((chats, acks))
            senders_of = collections.defaultdict(set)
            for c, (room, _) in zip(clients, members):
                senders_of[room].add(c.user)

            for room, lists in by_room.items():
                reference = [f["id"] for f in lists[0][0]]
                assert len(reference) == expected_per_room
                assert len(set(reference)) == expected_per_room, f"{room}: duplicate ids"
                for chats, acks in lists:
                    assert [f["id"] for f in chats] == reference, \
                        f"{room}: members disagree on the order of messages"
                    assert {a["id"] for a in acks} <= set(reference)
                texts = [f["text"] for f in lists[0][0]]
                expected = {f"{room}|{u}|{k}" for u in senders_of[room]
                            for k in range(MSGS_PER_CONN)}
                assert set(texts) == expected, f"{room}: wrong set of messages"
                for f in lists[0][0]:
                    assert f["text"].split("|")[1] == f["user"], f"{room}: user mismatch {f}"
                # each sender's messages in the order it sent them
                for u in senders_of[room]:
                    ks = [t.split("|")[2] for t in texts if t.split("|")[1] == u]
                    assert ks == [str(k) for k in range(MSGS_PER_CONN)], f"{room}/{u}: {ks}"
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    run(body(), timeout=SCALE_TIMEOUT)


# ---- memory over connection cycles ----------------------------------------------------------

CYCLES = 2000
# Cycles before the first RSS reading, so that the allocator's pools are at their steady size.
# Under ASan freed memory first fills the allocator quarantine (16 MiB, harness.ASAN_TEST_OPTIONS;
# about 9 KiB per cycle), so the warm-up there is long enough to fill it.
WARMUP_CYCLES = int(os.environ.get("CHAT_TEST_WARMUP_CYCLES", 2400 if harness.ASAN else 200))
WORKERS = 8  # cycles run on this many concurrent connections (one room each)
# How much the gateway's RSS may grow from after the warm-up to after the 2,000 measured
# cycles. Each cycle is connect, join, one chat, disconnect; a leak of ~2 KiB per cycle would
# exceed 4 MiB. Under ASan the bound is 8 MiB: redzones and shadow memory make every live byte
# cost more (LeakSanitizer at exit catches true leaks in that build).
RSS_GROWTH_LIMIT = (8 if harness.ASAN else 4) * 1024 * 1024
MEMORY_TIMEOUT = 180.0


def test_rss_stable_over_2000_connection_cycles(gateway):
    async def body():
        worker_rooms = [f"mem-{w}" for w in range(WORKERS)]
        observer = await Client.open(gateway)
        for room in worker_rooms:
            await observer.join(room)
        counts = collections.Counter()
        pong = asyncio.Event()

        async def observe():
            """Drains everything the observer gets (so no buffer grows in the gateway) and
            counts it."""
            for _ in range(20 * (WARMUP_CYCLES + CYCLES) + 1000):
                f = await observer.recv(timeout=MEMORY_TIMEOUT)
                if f["type"] == "pong":
                    pong.set()
                    continue
                assert f["type"] in ("chat", "system"), f
                counts[(f["type"], f.get("event"))] += 1

        async def cycle(room, i):
            c = await Client.open(gateway)
            await c.join(room)
            await c.chat_confirmed(f"cycle {i}", room=room)
            if i % 4 == 3:
                c.abort()  # some leave without a close frame
            else:
                await c.close()

        async def worker(room, n, base):
            for i in range(n):
                await cycle(room, base + i)

        async def phase(total):
            per = total // WORKERS
            await asyncio.gather(*(worker(room, per, w * per)
                                   for w, room in enumerate(worker_rooms)))
            return per * WORKERS

        async def settled(expected_cycles):
            """Waits (bounded) until the observer has seen every chat and every leave notice:
            by then the gateway has finished with all those connections."""
            for _ in range(int(30 * harness.TIMEOUT_SCALE / 0.05)):
                if drain.done():
                    drain.result()  # re-raises what went wrong in the observer
                    raise AssertionError("observer stopped")
                if (counts[("chat", None)] >= expected_cycles
                        and counts[("system", "leave")] >= expected_cycles):
                    break
                await asyncio.sleep(0.05)
            assert counts[("chat", None)] == expected_cycles, counts
            assert counts[("system", "join")] == expected_cycles, counts
            assert counts[("system", "leave")] == expected_cycles, counts
            pong.clear()
            await observer.send({"type": "ping"})
            await asyncio.wait_for(pong.wait(), TIMEOUT)

        drain = asyncio.create_task(observe())
        try:
            done = await phase(WARMUP_CYCLES)
            await settled(done)
            rss_warm = gateway.rss_bytes()
            done += await phase(CYCLES)
            await settled(done)
            rss_end = gateway.rss_bytes()
        finally:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
        growth = rss_end - rss_warm
        print(f"RSS after warm-up {rss_warm / 2**20:.1f} MiB, after {CYCLES} cycles "
              f"{rss_end / 2**20:.1f} MiB, growth {growth / 2**20:.2f} MiB")
        assert growth <= RSS_GROWTH_LIMIT, (
            f"gateway RSS grew by {growth / 2**20:.2f} MiB over {CYCLES} connection cycles "
            f"(limit {RSS_GROWTH_LIMIT / 2**20:.0f} MiB): {rss_warm} -> {rss_end} bytes")
        await observer.close()

    run(body(), timeout=MEMORY_TIMEOUT)
