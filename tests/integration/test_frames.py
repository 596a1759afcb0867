"""WebSocket framing: close codes for binary data, invalid UTF-8 and protocol errors; control
frames; fragmentation; the close handshake; who closed, in the close record and the counter by
code."""

import asyncio
import collections
import socket
import struct
import time

import pytest

import harness

from ophelpers import delta, loose_records, scrape, wait_until
from rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, open_raw)
from wsclient import Client, check_system, run

PING = b'{"type":"ping"}'


def test_binary_frame_closes_with_1003(gateway):
    async def body():
        c = await Client.open(gateway)
        await c.ws.send(b'{"type":"ping"}')  # bytes -> a binary frame
        assert await c.expect_closed() == 1003
    run(body())


def test_binary_frame_close_notifies_room(gateway):
    async def body():
        a, b = await Client.open(gateway, "/chat/r"), await Client.open(gateway, "/chat/r")
        check_system(await a.recv(), "r", "join", b.user)
        await b.ws.send(b"\x00\x01")
        assert await b.expect_closed() == 1003
        check_system(await a.recv(), "r", "leave", b.user)
        await a.close()
    run(body())


@pytest.mark.parametrize("payload", [
    b"\xff\xfe",
    b'{"type":"ping","x":"\xff"}',  # invalid inside an otherwise valid JSON text
    b'{"type":"ping","x":"\xc0\xaf"}',  # overlong encoding of '/'
    b'{"type":"ping","x":"\xed\xa0\x80"}',  # UTF-16 surrogate
    b'{"type":"ping","x":"\xe2\x82"}',  # truncated sequence
])
def test_invalid_utf8_text_closes_with_1007(gateway, payload):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_TEXT, payload)
        assert ws.expect_close() == 1007
        ws.expect_eof()


def test_invalid_utf8_across_fragments_closes_with_1007(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_TEXT, b'{"type":"ping","x":"\xe2', fin=False)
        ws.send_frame(OP_CONT, b'\x28"}', fin=True)  # 0xE2 0x28: broken sequence
        assert ws.expect_close() == 1007


@pytest.mark.parametrize("name,frame", [
    ("unmasked text frame", dict(opcode=OP_TEXT, payload=PING, masked=False)),
    ("reserved opcode 3", dict(opcode=0x3, payload=b"x")),
    ("reserved control opcode 0xB", dict(opcode=0xB, payload=b"")),
    ("RSV1 without an extension", dict(opcode=OP_TEXT, payload=PING, rsv=4)),
    ("RSV3", dict(opcode=OP_TEXT, payload=PING, rsv=1)),
    ("continuation without a start", dict(opcode=OP_CONT, payload=PING)),
    ("fragmented ping", dict(opcode=OP_PING, payload=b"x", fin=False)),
    ("ping longer than 125 bytes", dict(opcode=OP_PING, payload=b"p" * 126)),
])
def test_protocol_error_closes_with_1002(gateway, name, frame):
    with open_raw(gateway) as ws:
        ws.send_frame(**frame)
        assert ws.expect_close() == 1002, name
        ws.expect_eof()


def test_new_message_inside_fragmented_message_is_1002(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_TEXT, b'{"type":', fin=False)
        ws.send_frame(OP_TEXT, b'"ping"}', fin=True)  # must have been a continuation
        assert ws.expect_close() == 1002


def test_fragmented_text_message_is_one_message(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_TEXT, b'{"type"', fin=False)
        ws.send_frame(OP_CONT, b':"pi', fin=False)
        ws.send_frame(OP_PING, b"in-between")  # control frames may come between fragments
        ws.send_frame(OP_CONT, b'ng"}', fin=True)
        fin, rsv, op, payload = ws.recv_frame()
        assert (op, payload) == (OP_PONG, b"in-between")
        assert ws.recv_json() == {"type": "pong"}


def test_utf8_character_split_across_fragments_is_fine(gateway):
    with open_raw(gateway, "/chat/r") as ws:
        text = '{"type":"chat","text":"caf\u00e9 \U0001F600","cid":"f1"}'.encode()
        cut = text.index(b"\xf0") + 2  # in the middle of the 4-byte emoji
        ws.send_frame(OP_TEXT, text[:cut], fin=False)
        ws.send_frame(OP_CONT, text[cut:], fin=True)
        got = [ws.recv_json(), ws.recv_json()]
        chat = [f for f in got if f["type"] == "chat"]
        assert chat and chat[0]["text"] == "caf\u00e9 \U0001F600", got


def test_websocket_ping_gets_pong_with_same_payload(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_PING, b"hello-123")
        fin, rsv, op, payload = ws.recv_frame()
        assert (fin, op, payload) == (True, OP_PONG, b"hello-123")
        ws.send_frame(OP_PING, b"")
        assert ws.recv_frame()[2:] == (OP_PONG, b"")


def test_unsolicited_pong_is_ignored(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_PONG, b"whatever")
        ws.send_frame(OP_TEXT, PING)
        assert ws.recv_json() == {"type": "pong"}


def test_client_close_is_echoed_and_tcp_closed(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"bye")
        fin, rsv, op, payload = ws.recv_frame()
        assert op == OP_CLOSE, (op, payload)
        assert payload[:2] == (1000).to_bytes(2, "big")
        ws.expect_eof(timeout=3)


def test_client_close_without_code(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_CLOSE, b"")
        fin, rsv, op, payload = ws.recv_frame()
        assert op == OP_CLOSE
        # echo without a code, or 1000; never 1005 on the wire (RFC 6455 7.4.1)
        assert payload == b"" or payload[:2] == (1000).to_bytes(2, "big"), payload
        ws.expect_eof(timeout=3)


def test_websockets_clean_close_code_1000(gateway):
    async def body():
        c = await Client.open(gateway, "/chat/r")
        await asyncio.wait_for(c.close(), 5)
        assert c.ws.close_code == 1000
    run(body())


def test_frame_with_16bit_length_over_the_text_limit(gateway):
    """A 5 000-byte text frame (16-bit length field) is read correctly; its text is over the
    default 4096-byte limit, so the answer is bad_request and the connection stays open."""
    with open_raw(gateway, "/chat/r") as ws:
        big = b'{"type":"chat","cid":"big","text":"' + b"a" * 5000 + b'"}'
        ws.send_frame(OP_TEXT, big)
        err = ws.recv_json()
        assert (err["type"], err["code"], err.get("cid")) == ("error", "bad_request", "big"), err
        ws.send_frame(OP_TEXT, PING)
        assert ws.recv_json() == {"type": "pong"}


def test_frame_of_exactly_126_bytes(gateway):
    """126 is the first length that needs the extended 16-bit length field."""
    with open_raw(gateway) as ws:
        msg = b'{"type":"ping","pad":"' + b"p" * 100 + b'"}'
        msg = msg[:-2] + b"p" * (126 - len(msg)) + b'"}'
        assert len(msg) == 126
        ws.send_frame(OP_TEXT, msg)
        assert ws.recv_json() == {"type": "pong"}


def test_binary_frame_is_1003_even_when_raw(gateway):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_BINARY, PING)
        assert ws.expect_close() == 1003
        ws.expect_eof()


# ---- limits and close-frame rules from docs/protocol.md --------------------------------------

MAX_MESSAGE = 64 * 1024  # the gateway's fixed message limit


def test_message_over_64_kib_closes_with_1009(gateway):
    with open_raw(gateway, "/chat/r") as ws:
        big = b'{"type":"chat","text":"' + b"a" * (MAX_MESSAGE + 10) + b'"}'  # 64-bit length
        ws.send_frame(OP_TEXT, big)
        assert ws.expect_close() == 1009
        ws.expect_eof()


def test_fragmented_message_over_64_kib_closes_with_1009(gateway):
    with open_raw(gateway) as ws:
        chunk = b"a" * 30000
        ws.send_frame(OP_TEXT, b'{"type":"ping","pad":"' + chunk, fin=False)
        for _ in range(3):  # 90 KB in total
            ws.send_frame(OP_CONT, chunk, fin=False)
        ws.send_frame(OP_CONT, b'"}', fin=True)
        assert ws.expect_close() == 1009


def test_message_just_under_64_kib_is_read(gateway):
    """A 60 000-byte message (64-bit length field not needed, 16-bit is) within the message limit
    but over the text limit: bad_request, connection open."""
    with open_raw(gateway, "/chat/r") as ws:
        big = b'{"type":"chat","cid":"b","text":"' + b"a" * 60000 + b'"}'
        ws.send_frame(OP_TEXT, big)
        err = ws.recv_json()
        assert (err["type"], err["code"]) == ("error", "bad_request"), err
        ws.send_frame(OP_TEXT, PING)
        assert ws.recv_json() == {"type": "pong"}


@pytest.mark.parametrize("name,payload", [
    ("one-byte payload", b"\x03"),
    ("code 1005 (never sent on the wire)", struct.pack("!H", 1005)),
    ("code 999", struct.pack("!H", 999)),
    ("code 1016 (unassigned)", struct.pack("!H", 1016)),
])
def test_bad_close_frame_is_1002(gateway, name, payload):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_CLOSE, payload)
        fin, rsv, op, reply = ws.recv_frame()
        assert op == OP_CLOSE, (name, op, reply)
        assert struct.unpack("!H", reply[:2])[0] == 1002, (name, reply)
        ws.expect_eof()


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
def test_valid_close_codes_are_answered_normally(gateway, code):
    with open_raw(gateway) as ws:
        ws.send_frame(OP_CLOSE, struct.pack("!H", code) + b"reason")
        fin, rsv, op, reply = ws.recv_frame()
        assert op == OP_CLOSE
        assert struct.unpack("!H", reply[:2])[0] in (1000, code), reply
        ws.expect_eof()


def test_gateway_drops_tcp_when_client_never_answers_its_close(gateway):
    """docs: after sending its close frame the gateway waits at most 5 s for the client's."""
    with open_raw(gateway) as ws:
        ws.send_frame(OP_BINARY, b"x")
        t0 = time.monotonic()
        fin, rsv, op, payload = ws.recv_frame()
        assert op == OP_CLOSE and payload[:2] == struct.pack("!H", 1003)
        # we never answer the close frame
        ws.expect_eof(timeout=5 + 3 * harness.TIMEOUT_SCALE)
        assert time.monotonic() - t0 <= 5 + 3 * harness.TIMEOUT_SCALE


# ---- who closed: the "connection closed" record and chat_connections_closed_total -------------

CLOSE_CASES = [
    # (name, what the client does, expected by, code, reason)
    ("unmasked frame", lambda ws: ws.send_frame(OP_TEXT, PING, masked=False),
     "server", 1002, "protocol error"),
    ("ping over 125 bytes", lambda ws: ws.send_frame(OP_PING, b"p" * 126),
     "server", 1002, "protocol error"),
    ("invalid UTF-8", lambda ws: ws.send_frame(OP_TEXT, b'{"type":"ping","x":"\xff"}'),
     "server", 1007, "invalid UTF-8"),
    ("one frame over the limit", lambda ws: ws.send_frame(OP_TEXT, b"a" * (MAX_MESSAGE + 1)),
     "server", 1009, "message too big"),
    ("fragments over the limit", lambda ws: (ws.send_frame(OP_TEXT, b"a" * 40000, fin=False),
                                             ws.send_frame(OP_CONT, b"a" * 40000, fin=False)),
     "server", 1009, "message too big"),
    ("binary frame", lambda ws: ws.send_frame(OP_BINARY, PING),
     "server", 1003, "binary frames are not supported"),
    ("client close with a code", lambda ws: ws.send_frame(OP_CLOSE, struct.pack("!H", 3000)
                                                          + b"done"),
     "client", 3000, "client closed"),
    ("client close without a code", lambda ws: ws.send_frame(OP_CLOSE, b""),
     "client", 1005, "client closed"),
    ("TCP closed without a close frame", lambda ws: ws.sock.shutdown(socket.SHUT_WR),
     "network", 1006, "connection lost"),
]


def test_close_records_say_who_closed_and_why(gateway):
    """Each close is logged with by (server | client | network), the code and the reason: ours
    for the node's closes (including the protocol errors found by the WebSocket layer), "client
    closed" with the client's code (1005 when its close frame had none), "connection lost"
    (1006) when the TCP connection ended without a close frame; chat_connections_closed_total
    counts the same codes (never a code 0)."""
    before = scrape(gateway)
    conns = {}
    for name, act, by, code, reason in CLOSE_CASES:
        ws = RawWS(gateway.port).open("/ws")
        conns[ws.recv_json()["conn"]] = (name, by, code, reason)
        act(ws)
        if by != "network":
            # our close (answered), or the echo of the client's
            fin, rsv, op, payload = ws.recv_frame()
            assert op == OP_CLOSE, (name, op, payload)
            if by == "server":
                assert payload[:2] == struct.pack("!H", code), (name, payload)
                ws.send_frame(OP_CLOSE, payload[:2])
        ws.expect_eof(timeout=3 * harness.TIMEOUT_SCALE)
        ws.close()

    def records():
        recs = {r.get("conn"): r for r in loose_records(gateway.stdout_text())
                if r.get("msg") == "connection closed"}
        return recs if all(c in recs for c in conns) else None

    recs = wait_until(records, 5 * harness.TIMEOUT_SCALE, "a close record per connection")
    wrong = []
    for conn, (name, by, code, reason) in conns.items():
        r = recs[conn]
        if (r.get("by"), r.get("code"), r.get("reason")) != (by, code, reason):
            wrong.append(f"{name}: logged by={r.get('by')!r} code={r.get('code')!r} "
                         f"reason={r.get('reason')!r}, expected by={by!r} code={code} "
                         f"reason={reason!r}")
    assert not wrong, "\n".join(wrong)
    after = scrape(gateway)
    want = collections.Counter(code for _, _, _, code, _ in CLOSE_CASES)
    got = {c: delta(after, before, "chat_connections_closed_total", code=str(c)) for c in want}
    assert got == dict(want), f"chat_connections_closed_total by code: {got}, expected {want}"
    assert not after.has("chat_connections_closed_total", code="0"), after.text
