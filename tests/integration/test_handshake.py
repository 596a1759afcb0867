"""HTTP side: the demo page, the WebSocket upgrade, every refusal and their precedence."""

import socket
import time

import pytest

from rawws import (OP_TEXT, SAMPLE_ACCEPT, SAMPLE_KEY, RawWS, build_frame, http_exchange,
                   plain_request, upgrade_request)
import harness
from wsclient import check_joined, Client, run, ws_connect

# HTTP status -> the "error" code of the JSON body (names from gateway/http_upgrade.h).
ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               426: "upgrade_required", 431: "header_too_large"}


def check_refusal(resp, status):
    """What a refused client sees: the status, a JSON body {"error","message"}, Connection: close
    and the connection really closed."""
    assert resp.status == status, f"expected {status}, got {resp}"
    assert "close" in resp.header_tokens("connection"), f"no Connection: close in {resp}"
    assert (resp.header("content-type") or "").startswith("application/json"), resp
    body = resp.json()
    assert isinstance(body, dict), resp
    assert body.get("error") == ERROR_CODES[status], f"body {body}"
    assert isinstance(body.get("message"), str) and body["message"], f"body {body}"
    assert resp.closed, "the gateway did not close the connection after the refusal"
    assert resp.header("sec-websocket-accept") is None
    if status == 426:
        assert resp.header("sec-websocket-version") == "13", resp
    if status == 405:
        assert resp.header("allow") == "GET", resp


def refuse(gw, status, **kw):
    resp = http_exchange(gw.port, upgrade_request(port=gw.port, **kw))
    check_refusal(resp, status)
    return resp


# ---- plain HTTP -----------------------------------------------------------------------------

def test_plain_get_root_serves_demo_page(gateway):
    resp = http_exchange(gateway.port, plain_request("/", port=gateway.port))
    assert resp.status == 200, resp
    assert (resp.header("content-type") or "").startswith("text/html"), resp
    assert b"<" in resp.body and len(resp.body) > 20, resp
    assert "close" in resp.header_tokens("connection")
    assert resp.closed


@pytest.mark.parametrize("path", ["/nope", "/index.html", "/wsx", "/chatroom"])
def test_plain_get_other_path_is_404(gateway, path):
    check_refusal(http_exchange(gateway.port, plain_request(path, port=gateway.port)), 404)


def test_garbage_request_does_not_hurt_the_gateway(gateway):
    """A non-HTTP client is refused or dropped; the gateway keeps serving."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
        s.settimeout(5)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:200]

    async def body():
        c = await Client.open(gateway)
        await c.close()
    run(body())


# ---- successful upgrades --------------------------------------------------------------------

def test_upgrade_101_headers_and_welcome(gateway):
    with RawWS(gateway.port) as ws:
        ws.open("/ws")
        r = ws.response
        assert r.header("sec-websocket-accept") == SAMPLE_ACCEPT
        assert (r.header("upgrade") or "").lower() == "websocket"
        assert "upgrade" in r.header_tokens("connection")
        assert r.header("sec-websocket-protocol") is None  # none was offered
        assert r.header("sec-websocket-extensions") is None  # none was offered
        assert ws.recv_json()["type"] == "welcome"


def test_upgrade_accepts_any_header_case_and_token_lists(gateway):
    """Browsers send e.g. `Connection: keep-alive, Upgrade`; names and tokens are
    case-insensitive."""
    req = ("GET /ws HTTP/1.1\r\nhost: x\r\nUPGRADE: WebSocket\r\n"
           "connection: keep-alive, upgrade\r\nsec-websocket-version: 13\r\n"
           f"SEC-WEBSOCKET-KEY: {SAMPLE_KEY}\r\nUser-Agent: test\r\n\r\n").encode()
    with RawWS(gateway.port) as ws:
        ws.open(request=req)
        assert ws.response.header("sec-websocket-accept") == SAMPLE_ACCEPT
        assert ws.recv_json()["type"] == "welcome"


def test_upgrade_request_sent_byte_by_byte(gateway):
    req = upgrade_request("/chat/slow")
    with RawWS(gateway.port) as ws:
        ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(req)):
            ws.sock.sendall(req[i:i + 1])
            time.sleep(0.002)
        ws.open(request=b"")  # only reads the answer
        assert ws.recv_json()["type"] == "welcome"
        check_joined(ws.recv_json(), "slow")


def test_frame_in_same_packet_as_request_head_is_processed(gateway):
    """Bytes after the request head are the start of the WebSocket stream."""
    ping = build_frame(OP_TEXT, b'{"type":"ping"}')
    with RawWS(gateway.port) as ws:
        ws.open("/ws", extra_after_head=ping)
        assert ws.recv_json()["type"] == "welcome"
        assert ws.recv_json() == {"type": "pong"}


@pytest.mark.parametrize("room", ["a", "A-z_0.9:@x", "r" * 64])
def test_chat_path_with_valid_room_names(gateway, room):
    async def body():
        c = await Client.open(gateway, f"/chat/{room}")  # checks welcome then joined
        await c.close()
    run(body())


def test_query_string_is_not_part_of_the_room(gateway):
    async def body():
        ws = await ws_connect(gateway, "/chat/lobby?token=abc")
        try:
            c = Client(ws, {})
            assert (await c.recv())["type"] == "welcome"
            check_joined(await c.recv(), "lobby")
        finally:
            await ws.close()
    run(body())


@pytest.mark.parametrize("offered,expected", [
    (["chat.v1"], "chat.v1"),
    (["x.v9", "chat.v1"], "chat.v1"),
    (["x.v9"], None),
    (None, None),
])
def test_subprotocol_negotiation(gateway, offered, expected):
    async def body():
        ws = await ws_connect(gateway, "/ws", subprotocols=offered)
        try:
            assert ws.subprotocol == expected
        finally:
            await ws.close()
    run(body())


# ---- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/nope", "/wsx", "/chatroom"])
def test_upgrade_to_unknown_path_is_404(gateway, path):
    refuse(gateway, 404, path=path)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
@pytest.mark.parametrize("path", ["/ws", "/chat/x"])
def test_non_get_upgrade_is_405(gateway, method, path):
    resp = http_exchange(gateway.port, upgrade_request(path, method=method, port=gateway.port),
                         check_length=(method != "HEAD"))
    if method == "HEAD":  # a HEAD answer has no body; only the status and headers count
        assert resp.status == 405, resp
        assert "close" in resp.header_tokens("connection")
    else:
        check_refusal(resp, 405)


@pytest.mark.parametrize("path", ["/chat/", "/chat/a/b", "/chat/%41", "/chat/" + "a" * 65,
                                  "/chat/bad!name", "/chat/sp%20ace", "/chat/caf%C3%A9"])
def test_upgrade_with_invalid_room_is_400(gateway, path):
    refuse(gateway, 400, path=path)


@pytest.mark.parametrize("upgrade,connection", [
    (None, None),
    ("websocket", None),
    (None, "Upgrade"),
    ("h2c", "Upgrade"),
    ("websocket", "keep-alive"),
])
@pytest.mark.parametrize("path", ["/ws", "/chat/x"])
def test_missing_upgrade_connection_pair_is_400(gateway, path, upgrade, connection):
    refuse(gateway, 400, path=path, upgrade=upgrade, connection=connection)


def test_http_1_0_upgrade_is_400(gateway):
    refuse(gateway, 400, version="HTTP/1.0")


@pytest.mark.parametrize("ws_version", [None, "8", "14", "13x", ""])
def test_wrong_websocket_version_is_426(gateway, ws_version):
    refuse(gateway, 426, ws_version=ws_version)


@pytest.mark.parametrize("key", [
    None,
    "",
    "abc",
    "AAAAAAAAAAAAAAAAAAAA",  # base64 of 15 bytes
    "AAAAAAAAAAAAAAAAAAAAAAAA",  # 24 chars but base64 of 18 bytes
    "!!!!!!!!!!!!!!!!!!!!!A==",  # not base64
])
def test_bad_websocket_key_is_400(gateway, key):
    refuse(gateway, 400, key=key)


@pytest.mark.parametrize("expected,kw", [
    # 404 before 405
    (404, dict(path="/nope", method="POST")),
    (404, dict(path="/", method="POST")),
    # 405 before the room check
    (405, dict(path="/chat/bad!name", method="POST")),
    # 405 before the Upgrade/Connection pair
    (405, dict(path="/ws", method="POST", upgrade=None, connection=None, ws_version=None,
               key=None)),
    # room 400 before version 426 and key 400
    (400, dict(path="/chat/bad!name", ws_version=None, key="abc")),
    # Upgrade/Connection 400 before version 426
    (400, dict(path="/ws", upgrade=None, connection=None, ws_version=None)),
    (400, dict(path="/chat/ok", upgrade=None, ws_version="8")),
    # version 426 before the key 400
    (426, dict(path="/ws", ws_version=None, key="abc")),
    (426, dict(path="/chat/ok", ws_version="8", key=None)),
    # 404 before everything else, even with no upgrade headers at all
    (404, dict(path="/nope", upgrade=None, connection=None, ws_version=None, key=None)),
])
def test_refusal_precedence(gateway, expected, kw):
    refuse(gateway, expected, **kw)


def test_gateway_still_serves_after_refusals(gateway):
    for _ in range(20):
        refuse(gateway, 426, ws_version="8")

    async def body():
        c = await Client.open(gateway, "/chat/after")
        await c.assert_quiet()
        await c.close()
    run(body())


def test_query_string_ignored_on_ws(gateway):
    async def body():
        c = await Client.open(gateway, "/ws?x=1&y")
        await c.assert_quiet()
        await c.close()
    run(body())


# ---- fixed limits from docs/configuration.md ------------------------------------------------

def test_request_head_over_8_kib_is_431(gateway):
    req = upgrade_request(port=gateway.port, extra=[f"X-Pad: {'p' * 9000}"])
    check_refusal(http_exchange(gateway.port, req), 431)


def test_more_than_64_header_lines_is_431(gateway):
    req = upgrade_request(port=gateway.port, extra=[f"X-H{i}: v" for i in range(70)])
    check_refusal(http_exchange(gateway.port, req), 431)


def test_head_just_under_the_limits_is_accepted(gateway):
    extra = [f"X-H{i}: v" for i in range(50)] + [f"X-Pad: {'p' * 6000}"]
    with RawWS(gateway.port) as ws:
        ws.open(request=upgrade_request(port=gateway.port, extra=extra))
        assert ws.recv_json()["type"] == "welcome"


def test_incomplete_handshake_is_dropped_after_10_s(gateway):
    """A client that never finishes its request head does not hold a connection forever."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        limit = 10 + 5 * harness.TIMEOUT_SCALE
        s.settimeout(limit)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            pytest.fail(f"connection still open after {limit}s")
        waited = time.monotonic() - t0
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:200]
        assert 8 <= waited <= limit, f"dropped after {waited:.1f}s (expected about 10 s)"
