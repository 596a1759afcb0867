"""A client string means what it says: a NUL (\\u0000) in any string of a client message is
refused with bad_request, never read as the shorter string cJSON would keep ("ab\\u0000secret" as
"ab", the room "a\\u0000b" as "a", a cid echoed cut short); nothing of it reaches another member.
An escaped backslash followed by the text u0000 is ordinary text and goes through unchanged.

The messages are written as raw JSON text, so the escapes on the wire are exactly the ones named.
"""

import json

import pytest

from wsclient import Client, check_chat, close_all, open_clients, run

NUL_MESSAGES = {
    # name: (raw JSON sent by a member of room "r", the field the error must name)
    "text": ('{"type":"chat","room":"r","text":"ab\\u0000secret","cid":"c-1"}', "'text'"),
    "text_only": ('{"type":"chat","text":"\\u0000","cid":"c-1"}', "'text'"),
    "room": ('{"type":"chat","room":"r\\u0000x","text":"hello","cid":"c-1"}', "'room'"),
    "cid": ('{"type":"chat","room":"r","text":"hello","cid":"c-1\\u0000x"}', "'cid'"),
    "typing_room": ('{"type":"typing","room":"r\\u0000","cid":"c-1"}', "'room'"),
    "unknown_field": ('{"type":"chat","room":"r","text":"hello","x":"\\u0000","cid":"c-1"}',
                      "a string"),
    "key": ('{"type":"chat","room":"r","text\\u0000x":"a","text":"hello"}', "a key"),
}


@pytest.mark.parametrize("name", sorted(NUL_MESSAGES))
def test_nul_is_bad_request_and_nothing_is_delivered(gateway, name):
    raw, field = NUL_MESSAGES[name]

    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        await a.recv_type("system")  # b's join notice (room events are on by default)
        await a.send(raw)
        err = await a.error("bad_request")
        assert "NUL" in err["message"] and field in err["message"], err
        # the cid is echoed only when it is clean (never cut short)
        if name in ("cid", "key"):
            assert "cid" not in err, err
        else:
            assert err.get("cid") == "c-1", err
        # no ack, no own copy for the sender; nothing for the other member
        await a.assert_quiet("nothing after the bad_request")
        await b.assert_quiet("no chat or typing from a refused message")
        await close_all([a, b])
    run(body())


def test_nul_in_join_room_does_not_join_the_prefix(gateway):
    """"a\\u0000b" is not the room "a": the join is refused, "a"'s member hears nothing, and the
    sender is not a member of "a" afterwards."""
    async def body():
        b = await Client.open(gateway, "/chat/a")
        a = await Client.open(gateway, "/ws")
        await a.send('{"type":"join","room":"a\\u0000b","cid":"j-1"}')
        err = await a.error("bad_request")
        assert "'room'" in err["message"] and "NUL" in err["message"], err
        assert err.get("cid") == "j-1" and "room" not in err, err
        await a.send('{"type":"chat","room":"a","text":"am I in?","cid":"c-2"}')
        err = await a.error("not_joined")
        assert err.get("room") == "a", err
        await b.assert_quiet("no join notice and no chat")
        await close_all([a, b])
    run(body())


def test_escaped_backslash_then_u0000_is_text(gateway):
    """"\\\\u0000" on the wire is a backslash and the five characters u0000: delivered as sent."""
    async def body():
        a, b = await open_clients(gateway, ["/chat/r", "/chat/r"])
        await a.recv_type("system")
        text = "a\\u0000b"  # 8 characters: a, backslash, u, 0, 0, 0, 0, b
        raw = '{"type":"chat","room":"r","text":' + json.dumps(text) + ',"cid":"\\\\u0000"}'
        assert "\\\\u0000" in raw
        await a.send(raw)
        ack = copy = None
        for _ in range(2):
            f = await a.recv()
            if f["type"] == "ack":
                ack = f
            else:
                copy = f
        assert ack is not None and ack["cid"] == "\\u0000", ack
        check_chat(copy, "r", a.user, text)
        got = await b.recv_type("chat")
        check_chat(got, "r", a.user, text)
        assert got["id"] == ack["id"]
        await close_all([a, b])
    run(body())
