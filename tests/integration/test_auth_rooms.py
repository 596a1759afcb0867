"""Identity after the handshake (docs/auth.md): the token's sub and name in every envelope,
impersonation attempts, private: rooms (rooms claim), dm: rooms (two users, canonical name),
guests, and the per-user rate limit shared by all connections of one sub.

After every test the gateways' logs are searched for every token minted so far (tokens.py).
"""

import time

import pytest

import harness
import tokens
import wsclient
from tokens import check_welcome, connect, refused
from wsclient import check_joined, run

SCALE = harness.TIMEOUT_SCALE


@pytest.fixture(autouse=True)
def _no_token_leak(token_leak_check):
    yield


def keyed(factory, keys, *extra):
    harness.require_options("--jwt-secret-file", "--jwt-public-key-file")
    return factory(*keys.args(), *extra)


def check_chat(f, room, user, text, name=None):
    want = {"type", "room", "id", "user", "text", "ts"} | ({"name"} if name else set())
    if "seq" in f or "epoch" in f:  # history on (the default)
        wsclient.check_position(f)
        want |= {"seq", "epoch"}
    assert set(f) == want, f"chat fields {sorted(f)}, expected {sorted(want)}: {f}"
    assert f["type"] == "chat" and f["room"] == room and f["user"] == user and f["text"] == text, f
    if name:
        assert f["name"] == name, f
    wsclient.check_ts(f["ts"])


def check_system(f, room, event, user, name=None):
    want = {"type", "room", "event", "user", "ts"} | ({"name"} if name else set())
    assert set(f) == want, f"system fields {sorted(f)}, expected {sorted(want)}: {f}"
    assert (f["type"], f["room"], f["event"], f["user"]) == ("system", room, event, user), f
    if name:
        assert f["name"] == name, f
    wsclient.check_ts(f["ts"])


def check_typing(f, room, user, name=None):
    want = {"type": "typing", "room": room, "user": user}
    if name:
        want["name"] = name
    assert f == want, f"expected {want}, got {f}"


async def forbidden(c, room, as_named=None):
    """A join of `room` gets error forbidden (room: as named or canonical) and the connection
    stays open."""
    await c.send({"type": "join", "room": room, "cid": "j-1"})
    f = await c.error("forbidden")
    assert f.get("room") in {room, as_named or room}, f"room in {f}"
    assert f.get("cid") == "j-1", f
    await c.assert_quiet("nothing after the forbidden join")  # still open, no joined


async def joined_as(c, room, canonical):
    await c.send({"type": "join", "room": room})
    f = await c.recv_type("joined")
    check_joined(f, canonical)


# ---- identity in envelopes -------------------------------------------------------------------

def test_sub_and_name_in_every_envelope(gateway_factory, auth_keys):
    k = auth_keys
    gw = keyed(gateway_factory, k)
    ta = k.mint(sub="alice", name="Alice Liddell")
    tb = k.mint(sub="bob")  # no name claim: no name field anywhere

    async def body():
        a = await connect(gw, ta, path="/chat/lobby")
        check_welcome(a.welcome, "alice", "Alice Liddell")
        b = await connect(gw, tb, path="/chat/lobby", carrier="header")
        check_welcome(b.welcome, "bob")
        check_system(await a.recv_type("system"), "lobby", "join", "bob")

        c = await connect(gw, k.mint(sub="carol", name="Carol"), carrier="query")
        await c.join("lobby")
        check_system(await a.recv_type("system"), "lobby", "join", "carol", "Carol")
        check_system(await b.recv_type("system"), "lobby", "join", "carol", "Carol")

        ack, copy = await a.chat_confirmed("hello")
        check_chat(copy, "lobby", "alice", "hello", "Alice Liddell")
        check_chat(await b.recv_type("chat"), "lobby", "alice", "hello", "Alice Liddell")
        check_chat(await c.recv_type("chat"), "lobby", "alice", "hello", "Alice Liddell")

        ack, copy = await b.chat_confirmed("hi")
        check_chat(copy, "lobby", "bob", "hi")
        check_chat(await a.recv_type("chat"), "lobby", "bob", "hi")
        check_chat(await c.recv_type("chat"), "lobby", "bob", "hi")

        await a.send({"type": "typing", "room": "lobby"})
        check_typing(await b.recv_type("typing"), "lobby", "alice", "Alice Liddell")
        check_typing(await c.recv_type("typing"), "lobby", "alice", "Alice Liddell")
        await b.send({"type": "typing"})
        check_typing(await a.recv_type("typing"), "lobby", "bob")
        check_typing(await c.recv_type("typing"), "lobby", "bob")

        await c.leave("lobby")
        check_system(await a.recv_type("system"), "lobby", "leave", "carol", "Carol")
        check_system(await b.recv_type("system"), "lobby", "leave", "carol", "Carol")
        await a.close()
        check_system(await b.recv_type("system"), "lobby", "leave", "alice", "Alice Liddell")
        await wsclient.close_all([b, c])

    run(body())


def test_impersonation_attempts_show_the_tokens_identity(gateway_factory, auth_keys):
    k = auth_keys
    gw = keyed(gateway_factory, k)
    ta = k.mint(sub="alice", name="Alice")
    tm = k.mint(sub="mallory")
    fake = {"user": "alice", "name": "Alice", "sub": "alice", "id": "fake-1", "ts": 1,
            "node": "t9", "conn": "t1-1"}

    async def body():
        a = await connect(gw, ta, path="/chat/lobby")
        m = await connect(gw, tm, path="/chat/lobby")
        await a.recv_type("system")  # mallory's join

        # chat with a forged user/name: everyone sees mallory (and no name: her token has none)
        await m.send({"type": "chat", "room": "lobby", "text": "I am alice", "cid": "c-1", **fake})
        got = [await m.recv(), await m.recv()]
        ack = next(f for f in got if f["type"] == "ack")
        copy = next(f for f in got if f["type"] == "chat")
        assert ack["cid"] == "c-1" and ack["id"] == copy["id"] != "fake-1", got
        check_chat(copy, "lobby", "mallory", "I am alice")
        check_chat(await a.recv_type("chat"), "lobby", "mallory", "I am alice")

        await m.send({"type": "typing", "room": "lobby", **fake})
        check_typing(await a.recv_type("typing"), "lobby", "mallory")

        # a join with a forged identity: the notice names mallory
        await m.send({"type": "join", "room": "side", **fake})
        check_joined((await m.recv_type("joined")), "side")
        await a.join("side")
        check_system(await m.recv_type("system"), "side", "join", "alice", "Alice")

        # a forged name on a token with a name: the token's name wins
        await a.send({"type": "chat", "room": "side", "text": "x", "user": "root",
                      "name": "Root"})
        check_chat(await m.recv_type("chat"), "side", "alice", "x", "Alice")
        await wsclient.close_all([a, m])

    run(body())

    # at the handshake: alice's token with the payload swapped for "admin" is refused
    h, _, s = ta.split(".")
    swapped = tokens.register(f"{h}.{tokens.b64json(tokens.claims('admin', name='Admin'))}.{s}")
    refused(gw, 401, "invalid_token", tok=swapped)
    # and a token for "alice" signed by a key the gateway does not have
    tokens.SECRETS.add("mallorys-own-secret-0123456789abcdef")
    forged = tokens.forge({"alg": "HS256", "kid": "k1"}, tokens.claims("alice"),
                          tokens.hmac_signer("mallorys-own-secret-0123456789abcdef"))
    refused(gw, 401, "invalid_token", tok=forged)


def test_two_connections_of_one_sub_are_one_user(gateway_factory, auth_keys):
    k = auth_keys
    gw = keyed(gateway_factory, k)

    async def body():
        a1 = await connect(gw, k.mint(sub="alice"), path="/chat/lobby")
        a2 = await connect(gw, k.mint(sub="alice", key="rsa1"), path="/chat/lobby")
        check_welcome(a2.welcome, "alice")
        assert a1.conn != a2.conn
        check_system(await a1.recv_type("system"), "lobby", "join", "alice")
        ack, copy = await a2.chat_confirmed("from a2")
        check_chat(await a1.recv_type("chat"), "lobby", "alice", "from a2")
        await wsclient.close_all([a1, a2])

    run(body())


# ---- private: rooms --------------------------------------------------------------------------

ALLOWED = ["private:ops", "private:eng-", "private:eng-backend", "private:eng-a:b"]
DENIED = ["private:opsx", "private:op", "private:Ops", "private:eng", "private:engx",
          "private:other", "private:"]
CLAIM = ["private:ops", "private:eng-*"]


def test_private_rooms_through_the_path(gateway_factory, auth_keys):
    k = auth_keys
    gw = keyed(gateway_factory, k)
    erin = k.mint(sub="erin", rooms=CLAIM)
    nora = k.mint(sub="nora")  # no rooms claim
    emma = k.mint(sub="emma", rooms=[])

    async def body():
        for room in ALLOWED:
            c = await connect(gw, erin, path=f"/chat/{room}")
            await c.close()
        # the claim governs only private: rooms
        for tok in (nora, emma):
            c = await connect(gw, tok, path="/chat/lobby")
            await c.close()

    run(body())
    for room in DENIED:
        refused(gw, 403, "forbidden", path=f"/chat/{room}", tok=erin)
    for room in ALLOWED[:2]:
        refused(gw, 403, "forbidden", path=f"/chat/{room}", tok=nora)
        refused(gw, 403, "forbidden", path=f"/chat/{room}", tok=emma, carrier="query")
        refused(gw, 401, "missing_token", path=f"/chat/{room}")


def test_private_rooms_through_join(gateway_factory, auth_keys):
    k = auth_keys
    gw = keyed(gateway_factory, k)

    async def body():
        e = await connect(gw, k.mint(sub="erin", rooms=CLAIM))
        f = await connect(gw, k.mint(sub="frank", rooms=["private:eng-*"]))
        n = await connect(gw, k.mint(sub="nora"))
        for room in ALLOWED:
            await e.join(room)
        for room in DENIED:
            await forbidden(e, room)
        await forbidden(f, "private:ops")
        await f.join("private:eng-backend")
        check_system(await e.recv_type("system"), "private:eng-backend", "join", "frank")
        for room in ALLOWED[:2]:
            await forbidden(n, room)
        await n.join("lobby")  # still open and usable after the refusals
        # members talk; the refused user is in no private room
        ack, copy = await f.chat_confirmed("eng only", room="private:eng-backend")
        check_chat(await e.recv_type("chat"), "private:eng-backend", "frank", "eng only")
        await n.assert_quiet("nothing from the private room")
        await wsclient.close_all([e, f, n])

    run(body())


# The pattern rule (docs/auth.md): '*' only as the last byte of an entry, and a pattern only
# under "private:"; a token breaking it is invalid, at the handshake and in a refresh.
BAD_PATTERNS = [["*"], ["p*"], ["lobby*"], ["private*"], ["private:a*b"], ["private:ops", "*"]]


def test_rooms_patterns_outside_private_make_the_token_invalid(gateway_factory, auth_keys):
    k = auth_keys
    gw = keyed(gateway_factory, k)
    for rooms in BAD_PATTERNS:
        tok = k.mint(sub="erin", rooms=rooms)
        for path in ("/ws", "/chat/lobby", "/chat/private:ops"):
            try:
                refused(gw, 401, "invalid_token", path=path, tok=tok)
            except AssertionError as e:
                raise AssertionError(f"rooms {rooms} on {path}: {e}") from None
    # the same sub with valid claims still connects (the refusals were about the claim)
    run(_open_close(gw, k.mint(sub="erin", rooms=["private:ops", "lobby"]), "/chat/private:ops"))


async def _open_close(gw, tok, path):
    c = await connect(gw, tok, path=path)
    await c.close()


def test_rooms_prefix_pattern_under_private(gateway_factory, auth_keys):
    k = auth_keys
    gw = keyed(gateway_factory, k)
    team = k.mint(sub="tess", rooms=["private:team-*"])
    every = k.mint(sub="pat", rooms=["private:*"])
    for room in ("private:other", "private:team", "private:teams", "private:Team-a"):
        refused(gw, 403, "forbidden", path=f"/chat/{room}", tok=team)

    async def body():
        t = await connect(gw, team, path="/chat/private:team-a")
        await t.join("private:team-")
        await forbidden(t, "private:other")
        await forbidden(t, "private:team")
        # "private:*" is a pattern under private: too: every private room
        p = await connect(gw, every, path="/chat/private:other")
        await p.join("private:team-a")
        await p.join("private:x")
        check_system(await t.recv_type("system"), "private:team-a", "join", "pat")
        await wsclient.close_all([t, p])

    run(body())


def test_refresh_with_a_bad_rooms_pattern_is_invalid(gateway_factory, auth_keys):
    k = auth_keys
    gw = keyed(gateway_factory, k)

    async def answer(c, cid):
        f = await c.recv()
        if f.get("type") == "system":  # a token_expiring warning may come in between
            assert f.get("event") == "token_expiring", f
            f = await c.recv()
        assert f.get("cid") in (None, cid), f
        return f

    async def body():
        c = await connect(gw, k.mint(sub="tess", rooms=["private:team-*"]))
        for i, rooms in enumerate(BAD_PATTERNS):
            await c.send({"type": "refresh", "token": k.mint(sub="tess", rooms=rooms),
                          "cid": f"r-{i}"})
            f = await answer(c, f"r-{i}")
            assert f.get("type") == "error" and f.get("code") == "invalid_token", \
                f"refresh with rooms {rooms}: {f}"
        # the refused claims did not take effect; the old one holds
        await forbidden(c, "private:other")
        await c.join("private:team-b")
        # a valid pattern does take effect
        await c.send({"type": "refresh", "token": k.mint(sub="tess", rooms=["private:*"]),
                      "cid": "r-ok"})
        f = await answer(c, "r-ok")
        assert f.get("type") == "refreshed", f
        await c.join("private:other")
        await c.close()

    run(body())


def test_guests_never_join_private_or_dm_rooms(gateway_factory):
    gw = gateway_factory()  # no keys: guest mode
    for path in ("/chat/private:ops", "/chat/private:eng-x", "/chat/dm:alice:bob"):
        refused(gw, 403, "forbidden", path=path)
    refused(gw, 400, "bad_request", path="/chat/dm:a:b:c")

    async def body():
        g = await connect(gw)
        await forbidden(g, "private:ops")
        await forbidden(g, "dm:alice:bob")
        await forbidden(g, f"dm:{g.user}:bob", as_named="dm:" + ":".join(sorted([g.user, "bob"])))
        # (not even naming itself)
        await g.join("lobby")
        await g.close()

    run(body())


# ---- dm: rooms -------------------------------------------------------------------------------

def test_dm_rooms_two_users_one_canonical_room(gateway_factory, auth_keys):
    k = auth_keys
    gw = keyed(gateway_factory, k)
    ta, tb, tc = (k.mint(sub="alice", name="Alice"), k.mint(sub="bob"), k.mint(sub="carol"))

    async def body():
        a = await connect(gw, ta, path="/chat/dm:bob:alice", joined="dm:alice:bob")
        b = await connect(gw, tb)
        await joined_as(b, "dm:alice:bob", "dm:alice:bob")
        check_system(await a.recv_type("system"), "dm:alice:bob", "join", "bob")
        await joined_as(b, "dm:bob:alice", "dm:alice:bob")  # the same room: no second notice

        # chat to either spelling reaches both, under the canonical name
        for sender, other, spelling, user, name in [(a, b, "dm:bob:alice", "alice", "Alice"),
                                                    (b, a, "dm:alice:bob", "bob", None),
                                                    (b, a, "dm:bob:alice", "bob", None)]:
            text = f"{user} via {spelling}"
            ack, copy = await sender.chat_confirmed(text, room=spelling)
            assert ack["room"] == "dm:alice:bob", ack
            check_chat(copy, "dm:alice:bob", user, text, name)
            check_chat(await other.recv_type("chat"), "dm:alice:bob", user, text, name)

        # a third user: forbidden in both spellings, through join and the path
        c = await connect(gw, tc)
        await forbidden(c, "dm:alice:bob")
        await forbidden(c, "dm:bob:alice", as_named="dm:alice:bob")
        await c.join("lobby")
        ok = await connect(gw, tc, path="/chat/dm:carol:alice", joined="dm:alice:carol")
        await a.assert_quiet("nothing for alice from carol's joins")
        await b.assert_quiet("nothing for bob")

        # ids in byte order, not case-insensitive order
        z = await connect(gw, k.mint(sub="Zed"))
        await joined_as(z, "dm:alice:Zed", "dm:Zed:alice")
        await joined_as(a, "dm:Zed:alice", "dm:Zed:alice")
        check_system(await z.recv_type("system"), "dm:Zed:alice", "join", "alice", "Alice")
        await wsclient.close_all([a, b, c, ok, z])

    run(body())
    for path in ("/chat/dm:alice:bob", "/chat/dm:bob:alice"):
        refused(gw, 403, "forbidden", path=path, tok=tc)
        refused(gw, 401, "missing_token", path=path)


MALFORMED_DM = ["dm:", "dm:a", "dm:a:b:c", "dm::b", "dm:a:", "dm:alice:bob:"]


def test_malformed_dm_names(gateway_factory, auth_keys):
    k = auth_keys
    gw = keyed(gateway_factory, k)
    ta = k.mint(sub="a")
    problems = []
    for room in MALFORMED_DM:
        try:
            refused(gw, 400, "bad_request", path=f"/chat/{room}", tok=ta)
        except AssertionError as e:
            problems.append(f"/chat/{room}: {e}")

    async def body():
        c = await connect(gw, ta)
        for room in MALFORMED_DM:
            await c.send({"type": "join", "room": room})
            f = await c.recv()
            if not (f.get("type") == "error" and f.get("code") == "bad_request"):
                problems.append(f"join {room!r}: expected error bad_request, got {f}")
        await c.assert_quiet()
        await c.close()

    run(body())
    assert not problems, "\n".join(problems)


# ---- the per-user rate limit -----------------------------------------------------------------

def test_user_rate_limit_shared_by_connections_of_one_sub(gateway_factory, auth_keys):
    harness.require_options("--user-rate-limit", "--user-rate-burst")
    k = auth_keys
    gw = keyed(gateway_factory, k, "--rate-limit", "100", "--rate-burst", "100",
               "--user-rate-limit", "1", "--user-rate-burst", "4")

    async def answer(c, cid):
        for _ in range(10):
            f = await c.recv()
            if f["type"] in ("ack", "error") and f.get("cid") == cid:
                return f
            assert f["type"] in ("chat", "system"), f
        raise AssertionError(f"no answer for {cid}")

    async def body():
        a1 = await connect(gw, k.mint(sub="alice"), path="/chat/lobby")
        a2 = await connect(gw, k.mint(sub="alice"), path="/chat/lobby")
        c = await connect(gw, k.mint(sub="carol"), path="/chat/lobby")
        # no ping barriers on alice's connections: a ping would use her budget
        t0 = time.monotonic()
        results = []
        for x, cid in [(a1, "a1-1"), (a2, "a2-1"), (a1, "a1-2"), (a2, "a2-2"),
                       (a1, "a1-3"), (a2, "a2-3")]:
            await x.chat(f"text {cid}", cid=cid)
            results.append((cid, await answer(x, cid)))
        elapsed = time.monotonic() - t0
        assert elapsed < 0.9, f"too slow for a 1/s refill ({elapsed:.2f}s): inconclusive"
        kinds = [(cid, f["type"], f.get("code")) for cid, f in results]
        assert kinds == [("a1-1", "ack", None), ("a2-1", "ack", None), ("a1-2", "ack", None),
                         ("a2-2", "ack", None), ("a1-3", "error", "rate_limited"),
                         ("a2-3", "error", "rate_limited")], kinds
        for cid, f in results[4:]:
            ra = f.get("retry_after_ms")
            assert isinstance(ra, int) and 0 < ra <= 1000 + 50, f
        # another user is not affected
        await c.chat("carol still talks", cid="c-1")
        f = await answer(c, "c-1")
        assert f["type"] == "ack", f
        await wsclient.close_all([a1, a2, c])

    run(body())
