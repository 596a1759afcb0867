"""Connection safety, rate limits (docs/limits.md): token buckets per connection (--rate-limit,
--rate-burst), per user (--user-rate-limit, --user-rate-burst), typing (2/s, burst 4) and join
(10/s, burst 50) buckets, the rate_limited error, and the 1008 close for a client that keeps
going far over its limit.

Note: a {"type":"ping"} counts against the connection's bucket, so the ping/pong barrier
(recv_until_pong, assert_quiet) is only used on connections whose budget does not matter.
"""

import asyncio
import time

import harness
from wsclient import check_joined, Client, ConnectionClosed, TIMEOUT, run

SCALE = harness.TIMEOUT_SCALE
RETRY_SLACK_MS = 50  # rounding up by the gateway


def require():
    harness.require_options("--rate-limit", "--rate-burst", "--user-rate-limit",
                            "--user-rate-burst")


def check_rate_limited(f, max_retry_ms, cid=None):
    """A rate_limited error as documented; returns retry_after_ms."""
    assert f.get("type") == "error" and f.get("code") == "rate_limited", f
    assert isinstance(f.get("message"), str) and f["message"], f"no message: {f}"
    ra = f.get("retry_after_ms")
    assert isinstance(ra, int) and not isinstance(ra, bool), f"retry_after_ms not an int: {f}"
    assert 0 < ra <= max_retry_ms, f"retry_after_ms {ra} not in (0, {max_retry_ms}]: {f}"
    if cid is None:
        assert "cid" not in f, f"cid in an error for a message without one: {f}"
    else:
        assert f.get("cid") == cid, f"error for cid {f.get('cid')!r}, expected {cid!r}: {f}"
    return ra


async def answers(c, cids, timeout=None, skip=("system", "typing")):
    """Reads until every cid got an ack or an error and every ack's own copy arrived.
    Returns ({cid: ack-or-error frame}, own copies in order, seconds taken)."""
    timeout = timeout or TIMEOUT * 2
    t0 = time.monotonic()
    res, copies = {}, []
    want = set(cids)
    for _ in range(20 * len(cids) + 100):
        acks = sum(1 for f in res.values() if f["type"] == "ack")
        if set(res) >= want and len(copies) >= acks:
            return res, copies, time.monotonic() - t0
        left = timeout - (time.monotonic() - t0)
        assert left > 0, f"answers for {len(res)} of {len(want)} cids within {timeout}s"
        f = await c.recv(left)
        if f["type"] in ("ack", "error"):
            assert f.get("cid") in want and f["cid"] not in res, f"unexpected {f}"
            res[f["cid"]] = f
        elif f["type"] == "chat" and f["user"] == c.user:
            copies.append(f)
        else:
            assert f["type"] in skip, f"unexpected frame {f}"
    raise AssertionError("too many frames")


async def quiet(c, seconds=0.3):
    """Fails if any frame arrives within `seconds` (no ping barrier: it would use budget)."""
    try:
        f = await c.recv(seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"expected nothing, got {f}")


async def chats_seen(observer, skip=("system", "typing")):
    """Texts of the chats the observer got so far (ping/pong barrier on the observer)."""
    got = await observer.recv_until_pong(timeout=TIMEOUT * 2)
    for f in got:
        assert f["type"] in ("chat",) + tuple(skip), f
    return [f["text"] for f in got if f["type"] == "chat"]


async def pair(gw, room="rl"):
    a = await Client.open(gw, f"/chat/{room}")
    b = await Client.open(gw, f"/chat/{room}")
    await a.recv_type("system")  # b's join
    return a, b


async def burst(c, n, prefix="m"):
    """Sends n chats at once (no waiting); returns (texts, cids)."""
    texts = [f"{prefix}{i}" for i in range(n)]
    cids = []
    for t in texts:
        cids.append(await c.chat(t))
    return texts, cids


def split(res, cids):
    acked = [cid for cid in cids if res[cid]["type"] == "ack"]
    refused = [cid for cid in cids if res[cid]["type"] == "error"]
    for cid in refused:
        assert res[cid]["code"] == "rate_limited", res[cid]
    return acked, refused


# ---- the per-connection bucket --------------------------------------------------------------

def test_burst_passes_next_is_rate_limited_retry_after_passes(gateway_factory):
    require()
    gw = gateway_factory("--rate-limit", "5", "--rate-burst", "10")

    async def body():
        a, b = await pair(gw)
        texts, cids = await burst(a, 11)
        res, copies, _ = await answers(a, cids)
        acked, refused = split(res, cids)
        assert acked == cids[:10] and refused == cids[10:], \
            f"expected the first 10 to pass and the 11th refused: {[res[c] for c in cids]}"
        ra = check_rate_limited(res[cids[10]], 200 + RETRY_SLACK_MS, cid=cids[10])
        assert [f["text"] for f in copies] == texts[:10]
        await asyncio.sleep(ra / 1000 + 0.01)
        ack, copy = await a.chat_confirmed("m10 again", skip=("system",))
        assert await chats_seen(b) == texts[:10] + ["m10 again"], \
            "the other member must receive exactly the accepted messages"
        await asyncio.gather(a.close(), b.close())
    run(body())


def test_rate_limits_from_env(gateway_factory):
    require()
    gw = gateway_factory(env={"CHAT_RATE_LIMIT": "5", "CHAT_RATE_BURST": "10"})

    async def body():
        a, b = await pair(gw)
        texts, cids = await burst(a, 11)
        res, _, _ = await answers(a, cids)
        acked, refused = split(res, cids)
        assert (len(acked), refused) == (10, cids[10:]), [res[c] for c in cids]
        check_rate_limited(res[cids[10]], 200 + RETRY_SLACK_MS, cid=cids[10])
        assert await chats_seen(b) == texts[:10]
        await asyncio.gather(a.close(), b.close())
    run(body())


def test_rate_limited_error_without_cid_has_no_cid(gateway_factory):
    require()
    gw = gateway_factory("--rate-limit", "1", "--rate-burst", "1")

    async def body():
        a, b = await pair(gw)
        await a.send({"type": "chat", "text": "first"})
        await a.send({"type": "chat", "text": "second"})
        got = [await a.recv(), await a.recv()]
        errors = [f for f in got if f["type"] == "error"]
        assert len(errors) == 1, got
        check_rate_limited(errors[0], 1000 + RETRY_SLACK_MS, cid=None)
        assert [f["text"] for f in got if f["type"] == "chat"] == ["first"], got
        assert await chats_seen(b) == ["first"]
        await asyncio.gather(a.close(), b.close())
    run(body())


def test_every_message_counts_ping_included(gateway_factory):
    """The connection bucket counts every client message except typing and join: here pings."""
    require()
    gw = gateway_factory("--rate-limit", "1", "--rate-burst", "2")

    async def body():
        a = await Client.open(gw)
        for _ in range(3):
            await a.send({"type": "ping"})
        got = [await a.recv() for _ in range(3)]
        assert got[:2] == [{"type": "pong"}, {"type": "pong"}], got
        check_rate_limited(got[2], 1000 + RETRY_SLACK_MS)
        await a.close()
    run(body())


def test_default_limits_20_per_second_burst_40(gateway):
    async def body():
        a, b = await pair(gateway)
        texts, cids = await burst(a, 60)
        res, copies, took = await answers(a, cids)
        acked, refused = split(res, cids)
        top = 40 + int(20 * took) + 1
        assert 40 <= len(acked) <= top, f"{len(acked)} of 60 passed in {took:.2f}s (burst 40)"
        assert refused, "nothing was refused"
        assert acked[:40] == cids[:40], "refusals before the burst was used"
        for cid in refused:
            check_rate_limited(res[cid], 50 + RETRY_SLACK_MS, cid=cid)
        accepted_texts = [texts[cids.index(c)] for c in acked]
        assert [f["text"] for f in copies] == accepted_texts
        assert await chats_seen(b) == accepted_texts
        await asyncio.gather(a.close(), b.close())
    run(body())


def test_rate_limit_0_and_user_rate_limit_0_are_unlimited(gateway_factory):
    require()
    gw = gateway_factory("--rate-limit", "0", "--user-rate-limit", "0")

    async def body():
        a, b = await pair(gw)
        texts, cids = await burst(a, 300)
        res, copies, _ = await answers(a, cids, timeout=TIMEOUT * 4)
        acked, refused = split(res, cids)
        assert refused == [], f"{len(refused)} refused with every limit off"
        assert await chats_seen(b) == texts
        await asyncio.gather(a.close(), b.close())
    run(body())


def test_rate_limit_0_leaves_the_user_bucket(gateway_factory):
    """--rate-limit 0 turns off only the per-connection bucket: the default user bucket (50/s,
    burst 100) still decides."""
    require()
    gw = gateway_factory("--rate-limit", "0")

    async def body():
        a, b = await pair(gw)
        texts, cids = await burst(a, 150)
        res, _, took = await answers(a, cids, timeout=TIMEOUT * 4)
        acked, refused = split(res, cids)
        assert 100 <= len(acked) <= 100 + int(50 * took) + 1, \
            f"{len(acked)} of 150 passed in {took:.2f}s (user burst 100)"
        assert refused
        assert await chats_seen(b) == [texts[cids.index(c)] for c in acked]
        await asyncio.gather(a.close(), b.close())
    run(body())


# ---- the per-user bucket --------------------------------------------------------------------

def test_user_bucket_smaller_than_connection_bucket_decides(gateway_factory):
    require()
    gw = gateway_factory("--rate-limit", "100", "--rate-burst", "100",
                         "--user-rate-limit", "2", "--user-rate-burst", "5")

    async def body():
        a, b = await pair(gw)
        texts, cids = await burst(a, 6)
        res, _, _ = await answers(a, cids)
        acked, refused = split(res, cids)
        assert acked == cids[:5] and refused == cids[5:], [res[c] for c in cids]
        ra = check_rate_limited(res[cids[5]], 500 + RETRY_SLACK_MS, cid=cids[5])
        await asyncio.sleep(ra / 1000 + 0.01)
        await a.chat_confirmed("after the user bucket refilled", skip=("system",))
        assert await chats_seen(b) == texts[:5] + ["after the user bucket refilled"]
        await asyncio.gather(a.close(), b.close())
    run(body())


# TODO(per-user sharing, two connections of one user): identities come from tokens in a later
# release; today every connection is its own guest user. When two connections can be the same
# user, add: --rate-limit 100 --rate-burst 100 --user-rate-limit 2 --user-rate-burst 6, two
# connections of ONE user each send 4 chats at once -> 6 accepted in all, 2 rate_limited, and
# a third connection of ANOTHER user is not affected.


# ---- typing and join buckets ----------------------------------------------------------------

def test_typing_has_its_own_bucket_of_burst_4(gateway_factory):
    require()
    gw = gateway_factory("--rate-limit", "5", "--rate-burst", "10")

    async def body():
        a, b = await pair(gw)
        for _ in range(6):
            await a.send({"type": "typing"})
        errors = [await a.recv(), await a.recv()]
        ras = [check_rate_limited(e, 500 + RETRY_SLACK_MS) for e in errors]
        await quiet(a)
        got = await b.recv_until_pong()
        assert [f["type"] for f in got] == ["typing"] * 4, got
        assert all(f["user"] == a.user and f["room"] == "rl" for f in got), got
        # typing did not use the chat budget: the full burst of 10 chats passes
        texts, cids = await burst(a, 11)
        res, _, _ = await answers(a, cids)
        acked, refused = split(res, cids)
        assert acked == cids[:10] and refused == cids[10:], \
            f"typing used the chat budget: {[res[c] for c in cids]}"
        # and an exhausted chat budget does not stop typing (its own bucket has refilled)
        await asyncio.sleep(max(ras) / 1000 + 0.01)
        await a.send({"type": "typing"})
        got = []
        for _ in range(20):  # (a ping barrier on b would not order a's typing)
            got.append(await b.recv())
            if got[-1]["type"] != "chat":
                break
        assert [f["type"] for f in got] == ["chat"] * 10 + ["typing"], got
        await b.assert_quiet()
        await quiet(a)
        await asyncio.gather(a.close(), b.close())
    run(body())


def test_join_has_its_own_bucket_of_burst_2x_room_limit(gateway_factory):
    # The join bucket: 10/s with a burst of twice --max-rooms-per-conn (docs/limits.md), so a
    # reconnecting client can rejoin all its rooms at once. With --max-rooms-per-conn 25: 50.
    require()
    gw = gateway_factory("--rate-limit", "5", "--rate-burst", "12", "--max-rooms-per-conn", "25")

    async def body():
        a = await Client.open(gw)
        rooms = [f"j{i}" for i in range(25)]
        t0 = time.monotonic()
        # 25 joins fill the room limit; 25 leave/join pairs of j0 spend the rest of the burst
        for r in rooms:
            await a.send({"type": "join", "room": r})
        for _ in range(25):
            f = await a.recv(TIMEOUT * 2)
            assert f["type"] == "joined", f
        for _ in range(30):
            await a.send({"type": "join", "room": "j0"})  # already joined: still a join
        joined, refused = [], []
        for _ in range(30):
            f = await a.recv(TIMEOUT * 2)
            if f["type"] == "joined":
                joined.append(f["room"])
            else:
                refused.append(f)
        took = time.monotonic() - t0
        assert 25 <= len(joined) <= 25 + int(10 * took) + 1, \
            f"{len(joined)} of the last 30 joins passed in {took:.2f}s (join burst 50)"
        assert refused, "no join was refused"
        ras = [check_rate_limited(e, 100 + RETRY_SLACK_MS) for e in refused]
        # joins did not use the chat budget (12): 10 chats pass
        cids = [await a.chat(f"c{i}", room="j0") for i in range(10)]
        res, copies, _ = await answers(a, cids)
        acked, refused_chats = split(res, cids)
        assert refused_chats == [], [res[c] for c in refused_chats]
        # and after waiting retry_after_ms a join passes again
        await asyncio.sleep(max(ras) / 1000 + 0.01)
        await a.send({"type": "join", "room": "j1"})
        check_joined(await a.recv(), "j1")
        await a.close()
    run(body())


# ---- far over the limit: 1008 ---------------------------------------------------------------

def test_blasting_far_over_the_limit_closes_with_1008(gateway_factory):
    """--rate-limit 1 --rate-burst 1: the threshold is more than 10 x (1 x 10 + 1) = 110
    refusals within 10 s. 200 chats at once -> closed with 1008."""
    require()
    gw = gateway_factory("--rate-limit", "1", "--rate-burst", "1")

    async def body():
        a, b = await pair(gw)
        texts, cids = await burst(a, 200)
        acks, errors, copies = [], [], []
        code = None
        for _ in range(1000):
            try:
                f = await a.recv(TIMEOUT * 2)
            except ConnectionClosed:
                code = a.ws.close_code
                break
            if f["type"] == "ack":
                acks.append(f)
            elif f["type"] == "error":
                assert f["code"] == "rate_limited", f
                errors.append(f)
            else:
                assert f["type"] == "chat", f
                copies.append(f)
        assert code == 1008, f"close code {code}, expected 1008"
        assert len(errors) >= 110, \
            f"closed after only {len(errors)} refusals (threshold: more than 110 in 10 s)"
        assert len(acks) <= 2, acks
        seen = await chats_seen(b, skip=("system",))
        assert seen == [texts[cids.index(x["cid"])] for x in acks], seen
        await b.close()
    run(body())


def test_refusals_below_the_threshold_do_not_close(gateway_factory):
    require()
    gw = gateway_factory("--rate-limit", "1", "--rate-burst", "1")

    async def body():
        a, b = await pair(gw)
        texts, cids = await burst(a, 90)  # 89 refusals < 110
        res, _, _ = await answers(a, cids)
        acked, refused = split(res, cids)
        assert len(acked) in (1, 2) and len(refused) == 90 - len(acked)
        ra = check_rate_limited(res[refused[-1]], 1000 + RETRY_SLACK_MS, cid=refused[-1])
        await asyncio.sleep(ra / 1000 + 0.01)
        await a.chat_confirmed("still connected", skip=("system",))
        await asyncio.gather(a.close(), b.close())
    run(body())


def test_client_that_waits_retry_after_is_never_closed(gateway_factory):
    """A greedy but well-behaved client: sends again at once after each ack, waits
    retry_after_ms after each refusal. Over 4 s it is never closed, gets about rate x time +
    burst messages through, and the other member receives exactly those."""
    require()
    gw = gateway_factory("--rate-limit", "1", "--rate-burst", "1")

    async def body():
        a, b = await pair(gw)
        accepted, refusals = [], 0
        t0 = time.monotonic()
        i = 0
        for _ in range(200):
            if time.monotonic() - t0 > 4.0:
                break
            cid = await a.chat(f"w{i}")
            res, copies, _ = await answers(a, [cid])
            if res[cid]["type"] == "ack":
                accepted.append(f"w{i}")
                i += 1
            else:
                refusals += 1
                ra = check_rate_limited(res[cid], 1000 + RETRY_SLACK_MS, cid=cid)
                await asyncio.sleep(ra / 1000 + 0.005)
        took = time.monotonic() - t0
        assert a.ws.open, f"closed with {a.ws.close_code}"
        assert 4 <= len(accepted) <= 1 + int(took) + 1, \
            f"{len(accepted)} accepted in {took:.1f}s at 1/s, burst 1"
        assert refusals <= len(accepted) + 2, f"{refusals} refusals for {len(accepted)} accepted"
        assert await chats_seen(b) == accepted
        await asyncio.gather(a.close(), b.close())
    run(body())
