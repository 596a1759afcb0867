"""The JSON protocol as a user sees it: welcome, rooms, chat fan-out, acks, typing, system
notices, ping."""

import asyncio

import pytest

from wsclient import (Client, check_chat, check_joined, check_system, check_ts, close_all,
                      open_clients, run,
                      user_pattern)


# ---- welcome --------------------------------------------------------------------------------

def test_welcome_is_the_first_and_only_frame(gateway):
    async def body():
        c = await Client.open(gateway, "/ws")
        w = c.welcome
        assert set(w) == {"type", "user", "node", "conn"}, w
        assert user_pattern(gateway.node_id).fullmatch(w["user"]), w
        assert w["node"] == gateway.node_id
        assert isinstance(w["conn"], str) and w["conn"], w
        await c.assert_quiet("nothing after the welcome on /ws (no rooms)")
        await c.close()
    run(body())


def test_welcome_identities_are_unique(gateway):
    async def body():
        clients = await open_clients(gateway, ["/ws"] * 4 + ["/chat/r"] * 4)
        users = [c.user for c in clients]
        conns = [c.conn for c in clients]
        assert len(set(users)) == len(users), users
        assert len(set(conns)) == len(conns), conns
        await close_all(clients)
    run(body())


def test_node_id_appears_in_welcome(gateway_factory):
    gw = gateway_factory(node_id="eu-west.7")

    async def body():
        c = await Client.open(gw)
        assert c.welcome["node"] == "eu-west.7"
        assert c.user.startswith("guest-eu-west.7-"), c.user
        await c.close()
    run(body())


def test_chat_path_sends_welcome_then_joined(gateway):
    async def body():
        c = await Client.open(gateway, "/chat/lobby")  # asserts welcome, then joined lobby
        await c.assert_quiet("nothing after joined")
        # it really is a member: a chat without room goes to lobby
        ack, copy = await c.chat_confirmed("hello")
        check_chat(copy, "lobby", c.user, "hello")
        await c.close()
    run(body())


# ---- join / leave ---------------------------------------------------------------------------

def test_join_and_leave(gateway):
    async def body():
        c = await Client.open(gateway)
        await c.join("r1")
        await c.leave("r1")
        await c.assert_quiet()
        await c.join("r1")  # re-join after leave works
        await c.assert_quiet()
        await c.close()
    run(body())


def test_join_twice_is_harmless(gateway):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/ws"])
        await b.join("r")
        check_system(await a.recv(), "r", "join", b.user)
        await b.join("r")  # second join: joined again ...
        await a.assert_quiet("no second system notice for a repeated join")
        await b.assert_quiet()
        # ... and no duplicate deliveries
        await a.chat_confirmed("once")
        f = await b.recv()
        check_chat(f, "r", a.user, "once")
        await b.assert_quiet("exactly one copy of the chat")
        await close_all([a, b])
    run(body())


def test_left_member_gets_nothing_more(gateway):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        check_system(await a.recv(), "r", "join", b.user)
        await b.leave("r")
        check_system(await a.recv(), "r", "leave", b.user)
        await a.chat_confirmed("after leave")
        await b.assert_quiet("no chat after leaving")
        await b.send({"type": "chat", "room": "r", "text": "x", "cid": "c9"})
        err = await b.error("not_joined")
        assert err.get("cid") == "c9"
        await close_all([a, b])
    run(body())


# ---- chat -----------------------------------------------------------------------------------

def test_chat_reaches_every_member_and_no_one_else(gateway):
    async def body():
        a, b, c = await open_clients(gateway, ["/ws"] * 3)
        d, e = await open_clients(gateway, ["/ws"] * 2)
        for x in (a, b, c):
            await x.join("r1")
        await d.join("r2")
        # e is in no room at all
        for x in (a, b, c, d, e):
            await x.recv_until_pong()  # drop join notices; they are tested elsewhere

        ack, copy = await a.chat_confirmed("hello r1", room="r1")
        check_chat(copy, "r1", a.user, "hello r1")
        assert set(ack) == {"type", "cid", "room", "id", "seq"}, ack
        assert ack["seq"] == copy["seq"], (ack, copy)
        assert ack["room"] == "r1"
        for x in (b, c):
            f = await x.recv()
            check_chat(f, "r1", a.user, "hello r1")
            assert f["id"] == copy["id"], "every member sees the same id"
        # everybody got what they should; now nothing else may be pending anywhere
        for x in (a, b, c):
            await x.assert_quiet("exactly one copy")
        await d.assert_quiet("nothing from another room")
        await e.assert_quiet("nothing while in no room")
        await close_all([a, b, c, d, e])
    run(body())


def test_rooms_are_isolated_both_ways(gateway):
    async def body():
        a1, b1 = await open_clients(gateway, ["/chat/one", "/chat/one"])
        a2, b2 = await open_clients(gateway, ["/chat/two", "/chat/two"])
        check_system(await a1.recv(), "one", "join", b1.user)
        check_system(await a2.recv(), "two", "join", b2.user)
        await a1.chat_confirmed("for one")
        await a2.chat_confirmed("for two")
        check_chat(await b1.recv(), "one", a1.user, "for one")
        check_chat(await b2.recv(), "two", a2.user, "for two")
        for x in (a1, b1, a2, b2):
            await x.assert_quiet()
        await close_all([a1, b1, a2, b2])
    run(body())


def test_member_of_several_rooms_gets_each_rooms_chats(gateway):
    async def body():
        m = await Client.open(gateway)
        await m.join("r1")
        await m.join("r2")
        p1, p2 = await open_clients(gateway, ["/chat/r1", "/chat/r2"])
        await m.recv_until_pong()  # join notices
        await p1.chat_confirmed("in r1")
        await p2.chat_confirmed("in r2")
        check_chat(await m.recv(), "r1", p1.user, "in r1")
        check_chat(await m.recv(), "r2", p2.user, "in r2")
        await m.assert_quiet()
        ack, copy = await m.chat_confirmed("from m", room="r2")
        assert copy["room"] == "r2" and ack["room"] == "r2"
        check_chat(await p2.recv(), "r2", m.user, "from m")
        await p1.assert_quiet("m's chat was for r2")
        await close_all([m, p1, p2])
    run(body())


def test_ack_matches_own_copy(gateway):
    async def body():
        a = await Client.open(gateway, "/chat/r")
        await a.send({"type": "chat", "room": "r", "text": "hi", "cid": "c-1"})
        got = [await a.recv(), await a.recv()]
        acks = [f for f in got if f["type"] == "ack"]
        chats = [f for f in got if f["type"] == "chat"]
        assert len(acks) == 1 and len(chats) == 1, got
        ack, copy = acks[0], chats[0]
        assert ack == {"type": "ack", "cid": "c-1", "room": "r", "id": copy["id"],
                       "seq": copy["seq"]}
        check_chat(copy, "r", a.user, "hi")
        await a.assert_quiet()
        await a.close()
    run(body())


def test_message_ids_are_unique(gateway):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        await a.recv_until_pong()
        ids = []
        for i in range(25):
            for x in (a, b):
                ack, copy = await x.chat_confirmed(f"m{i}", skip=("chat",))
                ids.append(copy["id"])
        assert len(set(ids)) == len(ids) == 50, ids
        await close_all([a, b])
    run(body())


def test_timestamp_is_now_in_ms(gateway):
    async def body():
        a = await Client.open(gateway, "/chat/r")
        _, copy = await a.chat_confirmed("when")
        check_ts(copy["ts"], slack_ms=5000)
        await a.close()
    run(body())


def test_client_cannot_impersonate(gateway):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        await a.recv_until_pong()
        await a.send({"type": "chat", "room": "r", "text": "i am root", "cid": "c-x",
                      "user": "admin", "id": "x", "ts": 1})
        f = await b.recv()
        check_chat(f, "r", a.user, "i am root")  # the welcome's user, a server ts
        assert f["id"] != "x"
        got = [await a.recv(), await a.recv()]
        for g in got:
            if g["type"] == "chat":
                assert g["user"] == a.user and g["id"] == f["id"] and g["ts"] != 1
            else:
                assert g == {"type": "ack", "cid": "c-x", "room": "r", "id": f["id"],
                             "seq": f["seq"]}
        await close_all([a, b])
    run(body())


@pytest.mark.parametrize("text", [
    'quotes " and \\ backslash',
    "line1\nline2\ttab\r",
    "unicode: héllo wörld – 漢字 😀",
    "<script>alert(1)</script>",
    "ctl \u0001\u001f",
    " ",
])
def test_text_round_trips_exactly(gateway, text):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        await a.recv_until_pong()
        _, copy = await a.chat_confirmed(text)
        assert copy["text"] == text
        check_chat(await b.recv(), "r", a.user, text)
        await close_all([a, b])
    run(body())


def test_room_may_be_omitted_with_exactly_one_room(gateway):
    async def body():
        a = await Client.open(gateway)
        await a.join("solo")
        b = await Client.open(gateway, "/chat/solo")
        await a.recv_until_pong()
        ack, copy = await a.chat_confirmed("no room field")  # no "room" key sent
        assert ack["room"] == "solo"
        check_chat(copy, "solo", a.user, "no room field")
        check_chat(await b.recv(), "solo", a.user, "no room field")
        await a.send({"type": "typing"})
        assert await b.recv() == {"type": "typing", "room": "solo", "user": a.user}
        await close_all([a, b])
    run(body())


def test_messages_of_one_sender_arrive_in_order(gateway_factory):
    # 50 messages at once is over the default rate limit (20/s, burst 40): lift it here.
    gateway = gateway_factory("--rate-limit", "0", "--user-rate-limit", "0")

    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        await a.recv_until_pong()
        n = 50
        for i in range(n):
            await a.chat(f"#{i}", room="r")
        texts = []
        for _ in range(n):
            f = await b.recv()
            assert f["type"] == "chat", f
            texts.append(f["text"])
        assert texts == [f"#{i}" for i in range(n)]
        own = [f for f in [await a.recv() for _ in range(2 * n)] if f["type"] == "chat"]
        assert [f["text"] for f in own] == texts
        await b.assert_quiet()
        await close_all([a, b])
    run(body())


def test_large_text_at_the_limit_is_delivered(gateway):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        await a.recv_until_pong()
        text = "é" * 2048  # 4096 bytes in UTF-8: exactly the default --max-text-bytes
        _, copy = await a.chat_confirmed(text)
        assert copy["text"] == text
        assert (await b.recv())["text"] == text
        await close_all([a, b])
    run(body())


# ---- typing ---------------------------------------------------------------------------------

def test_typing_goes_to_the_others_only(gateway):
    async def body():
        a, b, c = await open_clients(gateway, ["/chat/r"] * 3)
        o = await Client.open(gateway, "/chat/other")
        for x in (a, b):
            await x.recv_until_pong()
        await a.send({"type": "typing", "room": "r"})
        for x in (b, c):
            assert await x.recv() == {"type": "typing", "room": "r", "user": a.user}
        await a.assert_quiet("no typing echo to the typist")
        await o.assert_quiet("no typing from another room")
        for x in (b, c):
            await x.assert_quiet()
        await close_all([a, b, c, o])
    run(body())


def test_typing_extra_fields_are_ignored(gateway):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r"] * 2)
        await a.recv_until_pong()
        await a.send({"type": "typing", "room": "r", "user": "admin"})
        assert await b.recv() == {"type": "typing", "room": "r", "user": a.user}
        await close_all([a, b])
    run(body())


# ---- ping -----------------------------------------------------------------------------------

def test_ping_pong(gateway):
    async def body():
        a = await Client.open(gateway)
        for _ in range(3):
            await a.send({"type": "ping"})
            assert await a.recv() == {"type": "pong"}
        await a.send({"type": "ping", "extra": [1, {"x": None}]})  # unknown fields ignored
        assert await a.recv() == {"type": "pong"}
        await a.close()
    run(body())


# ---- system notices -------------------------------------------------------------------------

def test_system_join_and_leave_notices(gateway):
    async def body():
        a = await Client.open(gateway, "/chat/r")
        b = await Client.open(gateway)
        await b.send({"type": "join", "room": "r"})
        check_joined(await b.recv(), "r")
        check_system(await a.recv(), "r", "join", b.user)
        await a.assert_quiet("one notice per join")
        await b.send({"type": "leave", "room": "r"})
        assert await b.recv() == {"type": "left", "room": "r"}
        check_system(await a.recv(), "r", "leave", b.user)
        await b.assert_quiet("no notice about one's own join/leave")
        await a.assert_quiet()
        await close_all([a, b])
    run(body())


def test_system_join_notice_for_chat_path(gateway):
    async def body():
        a = await Client.open(gateway, "/chat/r")
        b = await Client.open(gateway, "/chat/r")
        check_system(await a.recv(), "r", "join", b.user)
        await a.assert_quiet()
        await b.assert_quiet("the joiner does not get its own notice")
        await close_all([a, b])
    run(body())


def test_system_notice_goes_to_each_other_member_once(gateway):
    async def body():
        members = await open_clients(gateway, ["/chat/r"] * 3)
        for m in members:
            await m.recv_until_pong()
        n = await Client.open(gateway, "/chat/r")
        for m in members:
            check_system(await m.recv(), "r", "join", n.user)
            await m.assert_quiet()
        await n.assert_quiet()
        await close_all(members + [n])
    run(body())


def test_system_leave_on_clean_close(gateway):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        check_system(await a.recv(), "r", "join", b.user)
        await b.close()
        check_system(await a.recv(), "r", "leave", b.user)
        await a.assert_quiet()
        await a.close()
    run(body())


def test_system_leave_on_abrupt_disconnect(gateway):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        check_system(await a.recv(), "r", "join", b.user)
        b.abort()  # TCP drop, no close frame
        check_system(await a.recv(), "r", "leave", b.user)
        await a.assert_quiet()
        await a.close()
    run(body())


def test_abrupt_disconnect_notifies_every_room(gateway):
    async def body():
        a1, a2 = await open_clients(gateway, ["/chat/r1", "/chat/r2"])
        b = await Client.open(gateway)
        await b.join("r1")
        await b.join("r2")
        check_system(await a1.recv(), "r1", "join", b.user)
        check_system(await a2.recv(), "r2", "join", b.user)
        b.abort()
        check_system(await a1.recv(), "r1", "leave", b.user)
        check_system(await a2.recv(), "r2", "leave", b.user)
        for x in (a1, a2):
            await x.assert_quiet()
        # the room still works for the ones left
        await a1.chat_confirmed("still here")
        await close_all([a1, a2])
    run(body())


def test_chat_after_abrupt_disconnect_of_a_member(gateway):
    """Fan-out to a room whose member just vanished neither fails nor stalls."""
    async def body():
        a, b, c = await open_clients(gateway, ["/chat/r"] * 3)
        await a.recv_until_pong()
        await b.recv_until_pong()
        c.abort()
        await a.chat_confirmed("anyone?", skip=("system",))
        f = await b.recv_type("chat", skip=("system",))
        check_chat(f, "r", a.user, "anyone?")
        await close_all([a, b])
    run(body())


@pytest.mark.parametrize("how", ["flag", "env"])
def test_room_events_false_suppresses_system_notices(gateway_factory, how):
    gw = (gateway_factory("--room-events=false") if how == "flag"
          else gateway_factory(env={"CHAT_ROOM_EVENTS": "false"}))

    async def body():
        a = await Client.open(gw, "/chat/r")
        b = await Client.open(gw, "/chat/r")  # join by path
        c = await Client.open(gw)
        await c.join("r")  # join by message
        await c.leave("r")  # leave by message
        await b.close()  # clean close
        d = await Client.open(gw, "/chat/r")
        d.abort()  # abrupt close
        await asyncio.sleep(0.2)  # let the gateway notice the drop
        await a.assert_quiet("no system notices with room events off")
        # chat still works
        await a.chat_confirmed("quiet room")
        await close_all([a, c])
    run(body())


def test_room_events_true_flag_explicit(gateway_factory):
    gw = gateway_factory("--room-events=true")

    async def body():
        a, b = await open_clients(gw, ["/chat/r", "/chat/r"])
        check_system(await a.recv(), "r", "join", b.user)
        await close_all([a, b])
    run(body())
