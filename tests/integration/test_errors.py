"""Error replies: every code, its fields, and that the connection stays usable afterwards."""

import json

import pytest

from wsclient import Client, check_chat, close_all, open_clients, run


async def still_open(c):
    """The connection survived the error: a ping is answered."""
    await c.assert_quiet("nothing but the pong after an error")


# ---- bad_json -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["nope", "[1]", '"a string"', "42", "null", "true", "{",
                                 '{"type":"ping"', "", '{"type":"ping"} trailing'])
def test_bad_json(gateway, raw):
    async def body():
        c = await Client.open(gateway, "/chat/r")
        await c.send(raw)
        err = await c.error("bad_json")
        assert "cid" not in err and "room" not in err, err
        await still_open(c)
        await c.close()
    run(body())


# ---- bad_request ----------------------------------------------------------------------------

@pytest.mark.parametrize("msg", [
    {},  # no type
    {"type": 1},
    {"type": None},
    {"type": ["join"]},
    {"type": "join"},  # room missing
    {"type": "join", "room": 5},
    {"type": "join", "room": None},
    {"type": "leave"},
    {"type": "leave", "room": ["r"]},
    {"type": "chat", "room": "r"},  # text missing
    {"type": "chat", "room": "r", "text": 5},
    {"type": "chat", "room": "r", "text": None},
    {"type": "chat", "room": 7, "text": "x"},
    {"type": "typing", "room": 7},
], ids=lambda m: json.dumps(m))
def test_bad_request_missing_or_wrongly_typed_field(gateway, msg):
    async def body():
        c = await Client.open(gateway, "/chat/r")
        await c.send(msg)
        await c.error("bad_request")
        await still_open(c)
        await c.close()
    run(body())


def test_bad_request_echoes_cid(gateway):
    async def body():
        c = await Client.open(gateway, "/chat/r")
        await c.send({"type": "chat", "room": "r", "cid": "c-42"})  # no text
        err = await c.error("bad_request")
        assert err.get("cid") == "c-42", err
        await still_open(c)
        await c.close()
    run(body())


@pytest.mark.parametrize("room", ["", "bad!name", "a" * 65, "a/b", "café", "sp ace", "tab\t",
                                  "%41"])
def test_bad_request_invalid_room_name(gateway, room):
    async def body():
        c = await Client.open(gateway)
        await c.send({"type": "join", "room": room, "cid": "j1"})
        err = await c.error("bad_request")
        assert err.get("cid") == "j1", err
        await still_open(c)
        # the bad name was not joined: a chat without room still has no room to go to
        await c.send({"type": "chat", "text": "x", "cid": "c1"})
        await c.error("bad_request")
        await c.close()
    run(body())


def test_room_name_of_64_bytes_and_every_allowed_character(gateway):
    async def body():
        c = await Client.open(gateway)
        for room in ["x" * 64, "AZaz09._-:@"]:
            await c.join(room)
        await c.close()
    run(body())


def test_text_longer_than_default_limit(gateway):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        await a.recv_until_pong()
        await a.send({"type": "chat", "room": "r", "text": "x" * 4097, "cid": "big"})
        err = await a.error("bad_request")
        assert err.get("cid") == "big"
        await b.assert_quiet("an over-long chat is not delivered")
        _, copy = await a.chat_confirmed("y" * 4096)  # exactly the limit is fine
        assert len(copy["text"]) == 4096
        await close_all([a, b])
    run(body())


def test_text_limit_counts_utf8_bytes_not_characters(gateway):
    async def body():
        a = await Client.open(gateway, "/chat/r")
        await a.send({"type": "chat", "text": "é" * 2049, "cid": "u"})  # 2049 chars, 4098 bytes
        await a.error("bad_request")
        await still_open(a)
        await a.close()
    run(body())


def test_max_text_bytes_option(gateway_factory):
    gw = gateway_factory("--max-text-bytes", "10")

    async def body():
        a = await Client.open(gw, "/chat/r")
        await a.chat_confirmed("a" * 10)
        await a.chat_confirmed("é" * 5)  # 10 bytes
        for text in ["a" * 11, "é" * 6, "😀😀😀"]:  # 11, 12 and 12 bytes
            await a.send({"type": "chat", "text": text, "cid": "c"})
            await a.error("bad_request")
        await still_open(a)
        await a.close()
    run(body())


@pytest.mark.parametrize("kind", ["chat", "typing"])
def test_room_omitted_with_no_room_is_bad_request(gateway, kind):
    async def body():
        c = await Client.open(gateway)
        msg = {"type": kind, "cid": "c-0"}
        if kind == "chat":
            msg["text"] = "hi"
        await c.send(msg)
        err = await c.error("bad_request")
        assert err.get("cid") == "c-0", err
        await still_open(c)
        await c.close()
    run(body())


@pytest.mark.parametrize("kind", ["chat", "typing"])
def test_room_omitted_with_several_rooms_is_bad_request(gateway, kind):
    async def body():
        c = await Client.open(gateway)
        other = await Client.open(gateway, "/chat/r1")
        await c.join("r1")
        await c.join("r2")
        await other.recv_until_pong()
        msg = {"type": kind, "cid": "c-0"}
        if kind == "chat":
            msg["text"] = "hi"
        await c.send(msg)
        err = await c.error("bad_request")
        assert err.get("cid") == "c-0", err
        await other.assert_quiet("an ambiguous message goes nowhere")
        await still_open(c)
        await close_all([c, other])
    run(body())


# ---- unknown_type ---------------------------------------------------------------------------

@pytest.mark.parametrize("type_", ["dance", "", "JOIN", "Ping", "welcome", "pong", "ack",
                                   "system", "error"])
def test_unknown_type(gateway, type_):
    async def body():
        c = await Client.open(gateway, "/chat/r")
        await c.send({"type": type_, "room": "r", "cid": "c-u"})
        err = await c.error("unknown_type")
        assert err.get("cid") == "c-u", err
        await still_open(c)
        await c.close()
    run(body())


# ---- not_joined -----------------------------------------------------------------------------

@pytest.mark.parametrize("msg", [
    {"type": "leave", "room": "elsewhere"},
    {"type": "chat", "room": "elsewhere", "text": "hi"},
    {"type": "typing", "room": "elsewhere"},
], ids=lambda m: m["type"])
def test_not_joined(gateway, msg):
    async def body():
        c = await Client.open(gateway, "/chat/r")
        other = await Client.open(gateway, "/chat/elsewhere")
        await c.send(dict(msg, cid="c-n"))
        err = await c.error("not_joined")
        assert err.get("room") == "elsewhere", err
        assert err.get("cid") == "c-n", err
        await other.assert_quiet("nothing reaches a room one is not in")
        await still_open(c)
        await close_all([c, other])
    run(body())


def test_leave_twice_is_not_joined(gateway):
    async def body():
        c = await Client.open(gateway, "/chat/r")
        await c.leave("r")
        await c.send({"type": "leave", "room": "r"})
        err = await c.error("not_joined")
        assert err.get("room") == "r"
        await c.close()
    run(body())


# ---- room_limit -----------------------------------------------------------------------------

def test_room_limit_option(gateway_factory):
    gw = gateway_factory("--max-rooms-per-conn", "3")

    async def body():
        c = await Client.open(gw)
        for r in ("r1", "r2", "r3"):
            await c.join(r)
        await c.join("r2")  # re-joining a room one is in is not a new room
        await c.send({"type": "join", "room": "r4", "cid": "c-4"})
        err = await c.error("room_limit")
        assert err.get("room") == "r4", err
        assert err.get("cid") == "c-4", err
        await still_open(c)
        # r4 was not joined
        await c.send({"type": "chat", "room": "r4", "text": "x"})
        await c.error("not_joined")
        # leaving makes room for another
        await c.leave("r1")
        await c.join("r4")
        await c.close()
    run(body())


def test_room_limit_counts_the_path_room(gateway_factory):
    gw = gateway_factory("--max-rooms-per-conn", "1")

    async def body():
        c = await Client.open(gw, "/chat/first")
        await c.send({"type": "join", "room": "second"})
        err = await c.error("room_limit")
        assert err.get("room") == "second"
        await c.close()
    run(body())


def test_room_limit_default_is_128(gateway):
    async def body():
        c = await Client.open(gateway)
        for i in range(128):
            await c.join(f"room-{i}")
        await c.send({"type": "join", "room": "room-128"})
        err = await c.error("room_limit")
        assert err.get("room") == "room-128"
        await still_open(c)
        await c.close()
    run(body(), timeout=60)


def test_room_limit_is_per_connection(gateway_factory):
    gw = gateway_factory("--max-rooms-per-conn", "2")

    async def body():
        a, b = await open_clients(gw, ["/ws", "/ws"])
        for r in ("r1", "r2"):
            await a.join(r)
        for r in ("r3", "r4"):
            await b.join(r)
        await close_all([a, b])
    run(body())


# ---- the connection stays usable ------------------------------------------------------------

def test_connection_works_normally_after_many_errors(gateway):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        await a.recv_until_pong()
        for raw in ["nope", "{}", '{"type":"x"}', '{"type":"leave","room":"zz"}'] * 5:
            await a.send(raw)
            assert (await a.recv())["type"] == "error"
        _, copy = await a.chat_confirmed("fine")
        check_chat(await b.recv(), "r", a.user, "fine")
        await close_all([a, b])
    run(body())


# ---- text and cid limits from docs/protocol.md ----------------------------------------------

def test_empty_text_is_bad_request(gateway):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        await a.recv_until_pong()
        await a.send({"type": "chat", "text": "", "cid": "empty"})
        err = await a.error("bad_request")
        assert err.get("cid") == "empty"
        await b.assert_quiet("an empty chat is not delivered")
        await close_all([a, b])
    run(body())


def test_cid_of_128_bytes_is_echoed_in_ack(gateway):
    async def body():
        a = await Client.open(gateway, "/chat/r")
        cid = "c" * 128
        await a.send({"type": "chat", "text": "hi", "cid": cid})
        got = [await a.recv(), await a.recv()]
        assert {f["type"] for f in got} == {"ack", "chat"}, got
        assert [f for f in got if f["type"] == "ack"][0]["cid"] == cid
        await a.close()
    run(body())


@pytest.mark.parametrize("cid", ["c" * 129, 7, ["c"]], ids=["129-bytes", "number", "list"])
def test_invalid_cid_is_bad_request(gateway, cid):
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        await a.recv_until_pong()
        await a.send({"type": "chat", "text": "hi", "cid": cid})
        err = await a.error("bad_request")
        assert "cid" not in err, f"an invalid cid is not echoed: {err}"
        await b.assert_quiet("the chat with an invalid cid is not delivered")
        await still_open(a)
        await close_all([a, b])
    run(body())
