"""History, recovery and idempotent sends on one node (the in-memory broker), as a client sees
them (docs/protocol.md, docs/reliability.md): seq and epoch on joined, chat and ack; `history`
requests and paging; join with `since` (envelope and handshake) replaying exactly what was
missed, or saying recovered:false; a retried cid is one message; --history-size 0 is today's
protocol. The same behaviour across nodes on Redis: test_history_cluster.py."""

import asyncio
import time

from rawws import http_exchange, upgrade_request
from wsclient import Client, check_chat, check_position, close_all, run


async def chat_seq(c, text, room=None, cid=None):
    """Sends a chat and returns (ack, own copy); they agree on id and seq."""
    ack, copy = await c.chat_confirmed(text, room=room, skip=("system", "typing"),
                                       **({"cid": cid} if cid else {}))
    assert ack["seq"] == copy["seq"], (ack, copy)
    assert set(ack) == {"type", "cid", "room", "id", "seq"}, ack
    return ack, copy


async def chats_until(c, n, skip=("system", "typing"), timeout=10.0):
    """The next n chat frames (bounded)."""
    got = []
    deadline = time.monotonic() + timeout
    for _ in range(n + 2000):
        if len(got) == n:
            return got
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(got)} of {n} chats within {timeout}s: {got[-3:]}"
        try:
            f = await c.recv(left)
        except asyncio.TimeoutError:
            raise AssertionError(f"only {len(got)} of {n} chats within {timeout}s") from None
        if f["type"] == "chat":
            got.append(f)
        else:
            assert f["type"] in skip, f"unexpected {f} while waiting for {n} chats"
    raise AssertionError(f"only {len(got)} of {n} chats")


async def history(c, room, **kw):
    await c.send({"type": "history", "room": room, **kw})
    f = await c.recv_type("history", skip=("system", "chat", "typing"))
    assert set(f) == {"type", "room", "epoch", "seq", "messages"}, f
    assert f["room"] == room
    check_position(f)
    return f


# ---- seq and epoch -----------------------------------------------------------------------------

def test_empty_room_has_seq_zero_and_an_epoch_then_chats_count_up(gateway):
    async def body():
        a = await Client.open(gateway)
        j = await a.join("h1")
        assert j["seq"] == 0 and j["epoch"], j
        seqs = []
        for i in range(5):
            ack, copy = await chat_seq(a, f"m{i}")
            check_chat(copy, "h1", a.user, f"m{i}")
            assert copy["epoch"] == j["epoch"]
            seqs.append(copy["seq"])
        assert seqs == [1, 2, 3, 4, 5]
        b = await Client.open(gateway)
        j2 = await b.join("h1")
        assert (j2["seq"], j2["epoch"]) == (5, j["epoch"]), j2
        await close_all([a, b])
    run(body())


def test_every_member_sees_the_same_seq_order(gateway):
    async def body():
        members = [await Client.open(gateway) for _ in range(3)]
        for m in members:
            await m.join("order")
        for m in members:  # the join notices
            await m.recv_until_pong()
        for i in range(10):  # all three publish, interleaved
            await members[i % 3].chat(f"x{i}")
        seen = []
        for m in members:
            got = await chats_until(m, 10, skip=("system", "ack"))
            seen.append([(f["seq"], f["text"]) for f in got])
        assert seen[0] == seen[1] == seen[2], seen
        assert [s for s, _ in seen[0]] == list(range(1, 11)), seen[0]
        await close_all(members)
    run(body())


# ---- history requests --------------------------------------------------------------------------

def test_history_returns_the_messages_as_delivered_oldest_first_and_pages_with_before(gateway):
    async def body():
        a = await Client.open(gateway)
        await a.join("h2")
        copies = []
        for i in range(7):
            copies.append((await chat_seq(a, f"t{i}"))[1])
        await a.send({"type": "typing"})  # never stored
        b = await Client.open(gateway)  # not a member: history works without joining
        h = await history(b, "h2", limit=3)
        assert h["seq"] == 7 and h["epoch"] == copies[0]["epoch"]
        assert h["messages"] == copies[4:7], h  # exactly as delivered, oldest first
        h = await history(b, "h2", before=5, limit=3)  # before is exclusive
        assert h["messages"] == copies[1:4], h
        h = await history(b, "h2", before=2)
        assert h["messages"] == copies[0:1], h
        h = await history(b, "h2")  # default limit 50: all seven
        assert h["messages"] == copies, h
        h = await history(b, "h2", limit=1000)  # clamped to 100
        assert h["messages"] == copies
        h = await history(b, "nobody-here")
        assert h["seq"] == 0 and h["messages"] == [], h
        await close_all([a, b])
    run(body())


def test_history_keeps_the_last_history_size_chats_and_no_system_messages(gateway_factory):
    gw = gateway_factory("--history-size", "5")

    async def body():
        a = await Client.open(gw)
        await a.join("h3")
        b = await Client.open(gw)
        await b.join("h3")  # a gets a system join notice: never stored
        await a.recv_type("system")
        for i in range(8):
            await chat_seq(a, f"k{i}")
        h = await history(b, "h3", limit=100)
        assert [m["text"] for m in h["messages"]] == [f"k{i}" for i in range(3, 8)], h
        assert [m["seq"] for m in h["messages"]] == [4, 5, 6, 7, 8]
        await close_all([a, b])
    run(body())


def test_history_follows_the_join_permission(gateway):
    async def body():
        c = await Client.open(gateway)  # a guest: no private: rooms
        await c.send({"type": "history", "room": "private:x", "cid": "h"})
        f = await c.error("forbidden")
        assert f.get("cid") == "h"
        await c.send({"type": "history", "room": "bad room!"})
        await c.error("bad_request")
        await c.send({"type": "history"})
        await c.error("bad_request")
        await c.send({"type": "history", "room": "r", "limit": 0})
        await c.error("bad_request")
        await c.send({"type": "history", "room": "r", "before": "7"})
        await c.error("bad_request")
        await c.close()
    run(body())


def test_history_size_zero_is_the_protocol_without_history(gateway_factory):
    gw = gateway_factory("--history-size", "0")

    async def body():
        a = await Client.open(gw)
        j = await a.join("off")
        assert j == {"type": "joined", "room": "off"}
        ack, copy = await a.chat_confirmed("plain")
        check_chat(copy, "off", a.user, "plain")
        assert "seq" not in copy and "seq" not in ack, (ack, copy)
        await a.send({"type": "history", "room": "off", "cid": "q"})
        f = await a.error("history_off")
        assert f.get("cid") == "q"
        b = await Client.open(gw)
        j = await b.join("off", since={"seq": 1, "epoch": "e"})
        assert j == {"type": "joined", "room": "off", "recovered": False}, j
        await b.assert_quiet("no replay without history")
        await close_all([a, b])
    run(body())


# ---- recovery ----------------------------------------------------------------------------------

def test_join_since_replays_exactly_what_was_missed_then_live(gateway):
    async def body():
        a = await Client.open(gateway)
        await a.join("rec")
        b = await Client.open(gateway)
        await b.join("rec")
        await a.recv_type("system")
        _, last = await chat_seq(a, "before")
        await b.recv_type("chat")
        since = {"seq": last["seq"], "epoch": last["epoch"]}
        await b.close()
        missed = [(await chat_seq(a, f"missed{i}", room="rec"))[1] for i in range(20)]
        b = await Client.open(gateway)
        j = await b.join("rec", since=since)
        assert j["recovered"] is True and j["epoch"] == since["epoch"], j
        replay = await chats_until(b, 20)
        assert replay == missed, "the replay is the missed chats exactly, in order"
        _, live = await chat_seq(a, "live")
        nxt = await chats_until(b, 1)
        assert nxt == [live]
        await b.assert_quiet("nothing twice")
        await close_all([a, b])
    run(body())


def test_recovery_while_another_member_keeps_publishing_has_no_gap_and_no_duplicate(
        gateway_factory):
    gateway = gateway_factory("--rate-limit", "0", "--user-rate-limit", "0")

    async def body():
        a = await Client.open(gateway)
        await a.join("busy")
        _, first = await chat_seq(a, "0")
        since = {"seq": first["seq"], "epoch": first["epoch"]}
        for i in range(1, 31):
            await a.chat(str(i))
        b = await Client.open(gateway)
        await b.send({"type": "join", "room": "busy", "since": since})
        for i in range(31, 61):  # published while b's replay is being read
            await a.chat(str(i))
        j = await b.recv_type("joined")
        assert j["recovered"] is True, j
        got = await chats_until(b, 60, skip=("system",))
        assert [int(f["text"]) for f in got] == list(range(1, 61))
        assert [f["seq"] for f in got] == list(range(2, 62))
        await b.assert_quiet("nothing twice")
        await close_all([a, b])
    run(body())


def test_joined_comes_first_and_recovery_fails_cleanly(gateway_factory):
    gw = gateway_factory("--history-size", "10")

    async def body():
        a = await Client.open(gw)
        j0 = await a.join("rf")
        for i in range(15):
            await chat_seq(a, f"q{i}")
        b = await Client.open(gw)
        # another epoch: nothing replayed, and joined says where the room is
        j = await b.join("rf", since={"seq": 3, "epoch": "not-" + j0["epoch"][:20]})
        assert j["recovered"] is False and j["seq"] == 15, j
        await b.assert_quiet("no replay after recovered:false")
        await b.leave("rf")
        # trimmed past since (only the last 10 are kept): not recovered, never a partial replay
        j = await b.join("rf", since={"seq": 2, "epoch": j0["epoch"]})
        assert j["recovered"] is False and j["seq"] == 15, j
        await b.assert_quiet("no partial replay")
        await b.leave("rf")
        # a seq the room never reached: not recovered
        j = await b.join("rf", since={"seq": 99, "epoch": j0["epoch"]})
        assert j["recovered"] is False, j
        await b.leave("rf")
        # nothing missed
        j = await b.join("rf", since={"seq": 15, "epoch": j0["epoch"]})
        assert j["recovered"] is True and j["seq"] == 15, j
        await b.assert_quiet("nothing to replay")
        # live ones still arrive after recovered:false
        _, live = await chat_seq(a, "after")
        assert (await chats_until(b, 1)) == [live]
        await close_all([a, b])
    run(body())


def test_handshake_since_recovers_like_the_join(gateway):
    async def body():
        a = await Client.open(gateway)
        await a.join("hs")
        _, c1 = await chat_seq(a, "one")
        _, c2 = await chat_seq(a, "two")
        _, c3 = await chat_seq(a, "three")
        b = await Client.open(gateway, f"/chat/hs?since={c1['seq']}&epoch={c1['epoch']}")
        assert b.joined["recovered"] is True, b.joined
        assert (await chats_until(b, 2)) == [c2, c3]
        await b.assert_quiet("nothing twice")
        await b.close()
        b = await Client.open(gateway, "/chat/hs?since=1&epoch=other")
        assert b.joined["recovered"] is False, b.joined
        await b.assert_quiet("no replay")
        await close_all([a, b])
    run(body())


def test_malformed_since_is_refused(gateway):
    async def body():
        c = await Client.open(gateway)
        for since in ({"seq": 1}, {"epoch": "e"}, {"seq": -1, "epoch": "e"},
                      {"seq": 1, "epoch": "bad epoch"}, {"seq": 1, "epoch": "e\u0000"},
                      {"seq": 1.5, "epoch": "e"}, "41", {"seq": 1, "epoch": "e", "x": 1}):
            await c.send({"type": "join", "room": "ms", "since": since, "cid": "j"})
            f = await c.error("bad_request")
            assert f.get("cid") == "j", f
        await c.assert_quiet("a refused join joins nothing")
        await c.close()
    run(body())


def test_handshake_since_must_be_well_formed(gateway):
    for query in ("since=x&epoch=e", "since=1", "epoch=e", "since=1&epoch=a%20b",
                  "since=99999999999999999999&epoch=e", "since=-1&epoch=e"):
        r = http_exchange(gateway.port, upgrade_request(f"/chat/room?{query}", port=gateway.port))
        assert r.status == 400, (query, r)
        assert r.json()["error"] == "bad_request", r


# ---- idempotent sends --------------------------------------------------------------------------

def test_a_retried_cid_is_one_message_with_the_same_ack(gateway):
    async def body():
        a = await Client.open(gateway)
        await a.join("dd")
        b = await Client.open(gateway)
        await b.join("dd")
        await a.recv_type("system")
        ack1, copy = await chat_seq(a, "once", cid="retry-1")
        await a.send({"type": "chat", "text": "once, retried with other text", "cid": "retry-1"})
        ack2 = await a.recv_type("ack")
        assert ack2 == ack1, (ack1, ack2)
        got = await chats_until(b, 1)
        assert got == [copy]
        await b.assert_quiet("the retry is not delivered again")
        await a.assert_quiet("no second copy for the sender")
        # another user may use the same cid: the key is (user, room, cid)
        ack3, _ = await chat_seq(b, "mine", cid="retry-1")
        assert ack3["seq"] == ack1["seq"] + 1
        await close_all([a, b])
    run(body())


def test_dedupe_window_expires(gateway_factory):
    gw = gateway_factory("--dedupe-window", "1s")

    async def body():
        a = await Client.open(gw)
        await a.join("dw")
        ack1, _ = await chat_seq(a, "x", cid="k")
        await asyncio.sleep(1.5)
        ack2, _ = await chat_seq(a, "x", cid="k")
        assert ack2["seq"] == ack1["seq"] + 1 and ack2["id"] != ack1["id"]
        await a.close()
    run(body())


def test_history_ttl_starts_a_new_epoch(gateway_factory):
    gw = gateway_factory("--history-ttl", "1s", "--room-linger", "0")

    async def body():
        a = await Client.open(gw)
        j = await a.join("ttl")
        _, c = await chat_seq(a, "old")
        await a.leave("ttl")
        await asyncio.sleep(1.6)
        j2 = await a.join("ttl")
        assert j2["epoch"] != j["epoch"] and j2["seq"] == 0, (j, j2)
        h = await history(a, "ttl")
        assert h["messages"] == []
        await a.leave("ttl")
        j3 = await a.join("ttl", since={"seq": c["seq"], "epoch": c["epoch"]})
        assert j3["recovered"] is False
        await a.close()
    run(body())
