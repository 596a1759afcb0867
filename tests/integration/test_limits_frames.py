"""Connection safety, frames and messages (docs/limits.md): --max-message-bytes (single and
fragmented), protocol errors and UTF-8 cases not already in test_frames.py, JSON nesting depth
and keys per object.
"""

import asyncio
import json
import struct

import pytest

import harness
from rawws import OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, open_raw
from wsclient import Client, run

SCALE = harness.TIMEOUT_SCALE
PING = b'{"type":"ping"}'


def ping_of_size(n):
    """A {"type":"ping","pad":"ppp..."} text of exactly n bytes."""
    base = b'{"type":"ping","pad":""}'
    assert n >= len(base)
    return base[:-2] + b"p" * (n - len(base)) + b'"}'


def fragments(message, sizes):
    """Cuts message into pieces of the given sizes (the last piece takes the rest)."""
    out, pos = [], 0
    for s in sizes:
        out.append(message[pos:pos + s])
        pos += s
    out[-1] += message[pos:]
    return out


def send_fragmented(ws, pieces, finish=True):
    for i, piece in enumerate(pieces):
        last = finish and i == len(pieces) - 1
        ws.send_frame(OP_TEXT if i == 0 else OP_CONT, piece, fin=last)


def assert_pong(ws):
    assert ws.recv_json() == {"type": "pong"}


# ---- --max-message-bytes --------------------------------------------------------------------

def test_message_of_exactly_the_limit_passes_one_more_byte_is_1009(gateway_factory):
    harness.require_options("--max-message-bytes")
    gw = gateway_factory("--max-message-bytes", "1000")
    with open_raw(gw) as ws:
        ws.send_frame(OP_TEXT, ping_of_size(1000))
        assert_pong(ws)
    with open_raw(gw) as ws:
        ws.send_frame(OP_TEXT, ping_of_size(1001))
        assert ws.expect_close() == 1009
        ws.expect_eof()


def test_max_message_bytes_from_env(gateway_factory):
    harness.require_options("--max-message-bytes")
    gw = gateway_factory(env={"CHAT_MAX_MESSAGE_BYTES": "4096"})
    with open_raw(gw) as ws:
        ws.send_frame(OP_TEXT, ping_of_size(4096))
        assert_pong(ws)
        ws.send_frame(OP_TEXT, ping_of_size(4097))
        assert ws.expect_close() == 1009


def test_max_message_bytes_raised_above_the_default(gateway_factory):
    harness.require_options("--max-message-bytes")
    gw = gateway_factory("--max-message-bytes", "200000")
    with open_raw(gw) as ws:
        ws.send_frame(OP_TEXT, ping_of_size(150000))
        assert_pong(ws)
        ws.send_frame(OP_TEXT, ping_of_size(200001))
        assert ws.expect_close() == 1009


def test_fragmented_message_over_the_limit_is_1009(gateway_factory):
    """3 fragments of 2000 bytes with a 4096 limit: the message is 6000 bytes."""
    harness.require_options("--max-message-bytes")
    gw = gateway_factory("--max-message-bytes", "4096")
    with open_raw(gw) as ws:
        send_fragmented(ws, fragments(ping_of_size(6000), [2000, 2000, 2000]))
        assert ws.expect_close() == 1009
        ws.expect_eof()


def test_fragmented_message_within_the_limit_passes(gateway_factory):
    harness.require_options("--max-message-bytes")
    gw = gateway_factory("--max-message-bytes", "4096")
    with open_raw(gw) as ws:
        send_fragmented(ws, fragments(ping_of_size(4096), [1000, 1000, 1000, 1000, 96]))
        assert_pong(ws)


def test_unfinished_fragmented_message_counts_while_in_progress(gateway_factory):
    """The fragments received so far count: the gateway closes without waiting for the final
    fragment (which never comes)."""
    harness.require_options("--max-message-bytes")
    gw = gateway_factory("--max-message-bytes", "4096")
    with open_raw(gw) as ws:
        msg = ping_of_size(9000)
        ws.send_frame(OP_TEXT, msg[:2500], fin=False)
        ws.send_frame(OP_CONT, msg[2500:5000], fin=False)  # 5000 > 4096, message not finished
        assert ws.expect_close(timeout=5 * SCALE) == 1009


def test_three_fragments_of_30000_over_the_default_limit(gateway):
    """The default limit (65536): 3 x 30000 bytes, the third one final -> 1009."""
    with open_raw(gateway) as ws:
        msg = ping_of_size(90000)
        send_fragmented(ws, fragments(msg, [30000, 30000, 30000]))
        assert ws.expect_close() == 1009
        ws.expect_eof()


def test_two_fragments_just_under_the_default_limit_pass(gateway):
    with open_raw(gateway) as ws:
        send_fragmented(ws, fragments(ping_of_size(65536), [30000, 35536]))
        assert_pong(ws)


def test_1009_closes_only_the_offender(gateway_factory):
    harness.require_options("--max-message-bytes")
    gw = gateway_factory("--max-message-bytes", "2048")

    async def body():
        a = await Client.open(gw, "/chat/big")
        b = await Client.open(gw, "/chat/big")
        await a.recv_type("system")
        await b.send('{"type":"chat","text":"' + "x" * 3000 + '"}')
        assert await b.expect_closed() == 1009
        leave = await a.recv_type("system")
        assert leave["event"] == "leave" and leave["user"] == b.user
        await a.chat_confirmed("the others carry on")
        await a.close()
    run(body())


# ---- protocol errors (1002) not covered by test_frames.py --------------------------------------

@pytest.mark.parametrize("name,frame", [
    ("close frame of 126 bytes", dict(opcode=OP_CLOSE,
                                      payload=struct.pack("!H", 1000) + b"r" * 124)),
    ("pong of 126 bytes", dict(opcode=OP_PONG, payload=b"p" * 126)),
    ("ping of 1000 bytes", dict(opcode=OP_PING, payload=b"p" * 1000)),
    ("unmasked ping", dict(opcode=OP_PING, payload=b"x", masked=False)),
    ("unmasked close", dict(opcode=OP_CLOSE, payload=struct.pack("!H", 1000), masked=False)),
    ("RSV2", dict(opcode=OP_TEXT, payload=PING, rsv=2)),
    ("all RSV bits", dict(opcode=OP_TEXT, payload=PING, rsv=7)),
    ("RSV1 on a ping", dict(opcode=OP_PING, payload=b"x", rsv=4)),
    ("reserved opcode 7", dict(opcode=0x7, payload=b"x")),
    ("reserved opcode 0xF", dict(opcode=0xF, payload=b"")),
    ("fragmented close", dict(opcode=OP_CLOSE, payload=struct.pack("!H", 1000), fin=False)),
])
def test_more_protocol_errors_close_with_1002(gateway, name, frame):
    with open_raw(gateway) as ws:
        ws.send_frame(**frame)
        assert ws.expect_close() == 1002, name
        ws.expect_eof()


def test_unmasked_continuation_frame_is_1002(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_TEXT, b'{"type":', fin=False)
        ws.send_frame(OP_CONT, b'"ping"}', fin=True, masked=False)
        assert ws.expect_close() == 1002


def test_oversized_control_frame_between_fragments_is_1002(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_TEXT, b'{"type":', fin=False)
        ws.send_frame(OP_PING, b"p" * 200)
        assert ws.expect_close() == 1002


# ---- invalid UTF-8 (1007) not covered by test_frames.py ------------------------------------

def test_invalid_utf8_in_a_later_fragment_is_1007(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_TEXT, b'{"type":"ping",', fin=False)
        ws.send_frame(OP_CONT, b'"a":"valid \xc3\xa9",', fin=False)
        ws.send_frame(OP_CONT, b'"b":"\xff"}', fin=True)
        assert ws.expect_close() == 1007


def test_invalid_utf8_detected_before_the_message_ends(gateway):
    """Checked as the bytes arrive: the gateway closes although the final fragment never
    comes."""
    with open_raw(gateway) as ws:
        ws.send_frame(OP_TEXT, b'{"type":"ping","x":"\xc0\xaf', fin=False)
        assert ws.expect_close(timeout=5 * SCALE) == 1007


def test_message_ending_inside_a_utf8_sequence_is_1007(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_TEXT, b'{"type":"ping","x":"ok"}', fin=False)
        ws.send_frame(OP_CONT, b"\xe2\x82", fin=True)  # first 2 bytes of the euro sign, then end
        assert ws.expect_close() == 1007


def test_code_point_above_u10ffff_is_1007(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_TEXT, b'{"type":"ping","x":"\xf4\x90\x80\x80"}')
        assert ws.expect_close() == 1007


def test_4_byte_character_split_over_3_fragments_is_fine(gateway):
    with open_raw(gateway) as ws:
        send_fragmented(ws, [b'{"type":"ping","x":"\xf0', b"\x9f\x98", b'\x80"}'])
        assert_pong(ws)


# ---- JSON nesting depth and keys per object ------------------------------------------------

MAX_DEPTH = 16
MAX_KEYS = 64


def nested_value(levels, kind):
    """A JSON value that is `levels` levels deep (an empty container is one level)."""
    if levels == 0:
        return "1"
    if kind == "object" or (kind == "mixed" and levels % 2):
        return '{"k":' + nested_value(levels - 1, kind) + "}" if levels > 1 else "{}"
    return "[" + nested_value(levels - 1, kind) + "]" if levels > 1 else "[]"


def message_of_depth(depth, kind, type_="ping", **fields):
    """A message whose top-level object is level 1 and whose deepest container is at level
    `depth`."""
    head = json.dumps({"type": type_, **fields})[:-1]
    return head + ', "x":' + nested_value(depth - 1, kind) + "}"


def check_depth(text, depth):
    """Independent check of the depth of a JSON text (objects and arrays)."""
    def d(v):
        if isinstance(v, dict):
            return 1 + max((d(x) for x in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((d(x) for x in v), default=0)
        return 0
    assert d(json.loads(text)) == depth


@pytest.mark.parametrize("kind", ["object", "array", "mixed"])
def test_nesting_of_16_levels_passes_17_is_bad_request(gateway, kind):
    ok, deep = message_of_depth(MAX_DEPTH, kind), message_of_depth(MAX_DEPTH + 1, kind)
    check_depth(ok, MAX_DEPTH)
    check_depth(deep, MAX_DEPTH + 1)

    async def body():
        c = await Client.open(gateway)
        await c.send(ok)
        assert await c.recv() == {"type": "pong"}
        await c.send(deep)
        await c.error("bad_request")
        await c.assert_quiet()  # the connection stays open and works
        await c.close()
    run(body())


def test_too_deep_chat_is_not_delivered(gateway):
    async def body():
        a = await Client.open(gateway, "/chat/deep")
        b = await Client.open(gateway, "/chat/deep")
        await a.recv_type("system")
        await b.send(message_of_depth(MAX_DEPTH + 1, "object", type_="chat", text="deep",
                                      cid="d1"))
        err = await b.error("bad_request")
        assert err.get("cid") in (None, "d1"), err
        await b.send(message_of_depth(MAX_DEPTH, "object", type_="chat", text="ok", cid="d2"))
        ack = await b.recv_type("ack", skip=("chat",))
        assert ack["cid"] == "d2"
        got = await a.recv_until_pong()
        assert [f["text"] for f in got if f["type"] == "chat"] == ["ok"], got
        await asyncio.gather(a.close(), b.close())
    run(body())


def test_very_deep_nesting_does_not_hurt_the_gateway(gateway):
    """30 000 nested arrays, then 10 000 nested objects (each message under the 64 KiB message
    limit): bad_request, and the gateway (no stack overflow, no sanitizer report) keeps serving."""
    deep = '{"type":"ping","x":' + "[" * 30000 + "]" * 30000 + "}"

    async def body():
        c = await Client.open(gateway)
        await c.send(deep)
        await c.error("bad_request")
        await c.send('{"type":"ping","x":' + "{\"a\":" * 10000 + "1" + "}" * 10000 + "}")
        await c.error("bad_request")
        await c.assert_quiet()
        d = await Client.open(gateway, "/chat/alive")
        await d.chat_confirmed("still serving")
        await asyncio.gather(c.close(), d.close())
    run(body())


def message_with_keys(n_top=1, nested=None):
    """A ping whose top-level object has n_top keys in all (type included), and, if nested is
    given, an extra key "x" holding an object with `nested` keys."""
    obj = {"type": "ping"}
    extra = n_top - 1 - (1 if nested is not None else 0)
    for i in range(extra):
        obj[f"k{i}"] = i
    if nested is not None:
        obj["x"] = {f"n{i}": i for i in range(nested)}
    assert len(obj) == n_top
    return json.dumps(obj)


@pytest.mark.parametrize("n_top,nested,ok", [
    (MAX_KEYS, None, True),
    (MAX_KEYS + 1, None, False),
    (2, MAX_KEYS, True),
    (2, MAX_KEYS + 1, False),
    (MAX_KEYS, MAX_KEYS, True),  # the limit is per object, not per message
    (2, 500, False),
])
def test_keys_per_object(gateway, n_top, nested, ok):
    async def body():
        c = await Client.open(gateway)
        await c.send(message_with_keys(n_top, nested))
        if ok:
            assert await c.recv() == {"type": "pong"}
        else:
            await c.error("bad_request")
            await c.assert_quiet()
        await c.close()
    run(body())


def test_keys_in_an_array_of_objects(gateway):
    """Each object in an array is its own object: 10 objects of 64 keys pass; one of 65 does
    not."""
    def msg(n_last):
        items = [{f"k{i}": i for i in range(MAX_KEYS)} for _ in range(9)]
        items.append({f"k{i}": i for i in range(n_last)})
        return json.dumps({"type": "ping", "x": items})

    async def body():
        c = await Client.open(gateway)
        await c.send(msg(MAX_KEYS))
        assert await c.recv() == {"type": "pong"}
        await c.send(msg(MAX_KEYS + 1))
        await c.error("bad_request")
        await c.assert_quiet()
        await c.close()
    run(body())
