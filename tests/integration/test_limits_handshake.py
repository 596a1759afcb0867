"""Connection safety, handshake side (docs/limits.md): --max-header-bytes, --handshake-timeout
(slowloris), --allowed-origins, --max-connections.

Every wait is bounded; the gateway runs with the option under test (flag or CHAT_ variable).
"""

import asyncio
import socket
import time

import pytest
import websockets.exceptions

import harness
from rawws import (RawWS, Response, check_json_refusal, http_exchange, parse_head,
                   upgrade_request)
from wsclient import check_joined, Client, TIMEOUT, run, ws_connect

SCALE = harness.TIMEOUT_SCALE


def upgrade_with(gw, path="/ws", origin=None, extra=()):
    lines = list(extra)
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return upgrade_request(path, port=gw.port, extra=lines)


def head_of_size(gw, size, path="/ws"):
    """An otherwise valid upgrade request head of exactly `size` bytes (CRLFCRLF included),
    padded with one X-Pad header."""
    base = upgrade_request(path, port=gw.port, extra=["X-Pad: "])
    pad = size - len(base)
    assert pad >= 0
    return upgrade_request(path, port=gw.port, extra=["X-Pad: " + "p" * pad])


def assert_upgrades(gw, request):
    """The request is answered 101 and the connection works (welcome)."""
    with RawWS(gw.port) as ws:
        ws.open(request=request)
        assert ws.recv_json()["type"] == "welcome"


# ---- --max-header-bytes ---------------------------------------------------------------------

def test_max_header_bytes_option_refuses_larger_head_with_431(gateway_factory):
    harness.require_options("--max-header-bytes")
    gw = gateway_factory("--max-header-bytes", "2048")
    resp = http_exchange(gw.port, head_of_size(gw, 3000))
    check_json_refusal(resp, 431, "header_too_large")


def test_max_header_bytes_boundary(gateway_factory):
    """A head of exactly the limit passes; one byte more is 431."""
    harness.require_options("--max-header-bytes")
    gw = gateway_factory("--max-header-bytes", "2048")
    assert_upgrades(gw, head_of_size(gw, 2048))
    check_json_refusal(http_exchange(gw.port, head_of_size(gw, 2049)), 431, "header_too_large")


def test_max_header_bytes_from_env(gateway_factory):
    harness.require_options("--max-header-bytes")
    gw = gateway_factory(env={"CHAT_MAX_HEADER_BYTES": "1024"})
    assert_upgrades(gw, head_of_size(gw, 900))
    check_json_refusal(http_exchange(gw.port, head_of_size(gw, 1500)), 431, "header_too_large")


def test_max_header_bytes_raised_accepts_bigger_heads(gateway_factory):
    """Above the 8 KiB default when configured so (e.g. big cookies behind a proxy)."""
    harness.require_options("--max-header-bytes")
    gw = gateway_factory("--max-header-bytes", "16384")
    assert_upgrades(gw, head_of_size(gw, 12000))
    check_json_refusal(http_exchange(gw.port, head_of_size(gw, 17000)), 431, "header_too_large")


def test_431_head_sent_slowly_in_pieces(gateway_factory):
    """The limit holds when the head arrives in many small writes (no complete head ever)."""
    harness.require_options("--max-header-bytes")
    gw = gateway_factory("--max-header-bytes", "1024")
    req = upgrade_request(port=gw.port, extra=["X-Pad: " + "p" * 4000])
    with socket.create_connection(("127.0.0.1", gw.port), timeout=TIMEOUT) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = b""
        for i in range(0, len(req), 256):
            try:
                s.sendall(req[i:i + 256])
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.005)
        s.settimeout(TIMEOUT)
        for _ in range(1000):
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 431"), data[:300]


# ---- --handshake-timeout --------------------------------------------------------------------

def read_response_until_closed(sock, limit):
    """Reads everything until EOF/reset or `limit` seconds; returns (data, seconds, closed)."""
    t0 = time.monotonic()
    data = b""
    for _ in range(10000):
        left = limit - (time.monotonic() - t0)
        if left <= 0:
            return data, time.monotonic() - t0, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, time.monotonic() - t0, False
        except ConnectionResetError:
            return data, time.monotonic() - t0, True
        if not chunk:
            return data, time.monotonic() - t0, True
        data += chunk
    raise AssertionError("too much data")


def check_408(data):
    assert b"\r\n\r\n" in data, f"no complete 408 response: {data[:300]!r}"
    head, _, body = data.partition(b"\r\n\r\n")
    status, reason, headers = parse_head(head)
    resp = Response(status, reason, headers, body, True)
    check_json_refusal(resp, 408, "timeout")


@pytest.mark.parametrize("sent", [b"", b"GET /ws HTTP/1.1\r\nHost: x\r\n"],
                         ids=["nothing-sent", "partial-head"])
def test_incomplete_handshake_gets_408_after_the_timeout(gateway_factory, sent):
    harness.require_options("--handshake-timeout")
    gw = gateway_factory("--handshake-timeout", "1s")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=TIMEOUT) as s:
        t0 = time.monotonic()
        if sent:
            s.sendall(sent)
        data, waited, closed = read_response_until_closed(s, 1 + 3 * SCALE)
        waited = time.monotonic() - t0
    assert closed, f"connection still open {waited:.1f}s after connecting (timeout 1s): {data!r}"
    assert 0.8 <= waited <= 1 + 2 * SCALE, f"closed after {waited:.2f}s (expected about 1 s)"
    check_408(data)


def test_handshake_timeout_accepts_milliseconds(gateway_factory):
    harness.require_options("--handshake-timeout")
    gw = gateway_factory("--handshake-timeout", "500ms")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=TIMEOUT) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /ws HTTP/1.1\r\n")
        data, _, closed = read_response_until_closed(s, 3 * SCALE)
        waited = time.monotonic() - t0
    assert closed
    assert 0.35 <= waited <= 0.5 + 1.5 * SCALE, f"closed after {waited:.2f}s (expected ~0.5 s)"
    check_408(data)


def test_handshake_timeout_from_env(gateway_factory):
    harness.require_options("--handshake-timeout")
    gw = gateway_factory(env={"CHAT_HANDSHAKE_TIMEOUT": "700ms"})
    with socket.create_connection(("127.0.0.1", gw.port), timeout=TIMEOUT) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /ws HTTP/1.1\r\n")
        data, _, closed = read_response_until_closed(s, 3 * SCALE)
        waited = time.monotonic() - t0
    assert closed and 0.5 <= waited <= 0.7 + 1.5 * SCALE, waited
    check_408(data)


def test_slow_but_complete_head_within_the_timeout_is_accepted(gateway_factory):
    harness.require_options("--handshake-timeout")
    gw = gateway_factory("--handshake-timeout", "2s")
    req = upgrade_request("/chat/slowok", port=gw.port)
    with RawWS(gw.port) as ws:
        ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        step = 0.6 / len(req)  # the whole head in about 0.6 s
        for i in range(len(req)):
            ws.sock.sendall(req[i:i + 1])
            time.sleep(step)
        ws.open(request=b"")
        assert ws.recv_json()["type"] == "welcome"
        check_joined(ws.recv_json(), "slowok")


def test_handshake_timeout_does_not_touch_open_websockets(gateway_factory):
    """The timer is for the upgrade only: an upgraded connection idle for twice the timeout is
    still fine."""
    harness.require_options("--handshake-timeout")
    gw = gateway_factory("--handshake-timeout", "500ms")

    async def body():
        c = await Client.open(gw, "/chat/after")
        await asyncio.sleep(1.2)
        await c.chat_confirmed("still here")
        await c.close()
    run(body())


SLOW_CLIENTS = 50


def test_slowloris_does_not_delay_other_handshakes(gateway_factory):
    """50 raw sockets trickle a byte every 100 ms (never finishing their head) while a normal
    client connects, joins and chats: that client is served at once; each slow one gets 408 and
    is closed after the 1 s timeout although it keeps sending."""
    harness.require_options("--handshake-timeout")
    gw = gateway_factory("--handshake-timeout", "1s")
    req = upgrade_request(port=gw.port, extra=["X-Pad: " + "p" * 200])  # far more than 10 bytes
    normal_bound = 0.5 * SCALE
    close_bound = 1 + 2 * SCALE

    async def slow(i, started):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        t0 = time.monotonic()
        started.append(t0)
        data = b""
        closed = False
        try:
            for k in range(len(req)):
                if time.monotonic() - t0 > close_bound + 1:
                    break
                try:
                    writer.write(req[k:k + 1])
                    await writer.drain()
                except (ConnectionError, OSError):
                    pass  # the gateway has closed; read what it said
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), 0.1)
                except asyncio.TimeoutError:
                    continue
                except (ConnectionError, OSError):
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                data += chunk
            # drain the rest of the response (bounded)
            if not closed:
                for _ in range(100):
                    try:
                        chunk = await asyncio.wait_for(reader.read(65536), 0.2)
                    except asyncio.TimeoutError:
                        break
                    except (ConnectionError, OSError):
                        closed = True
                        break
                    if not chunk:
                        closed = True
                        break
                    data += chunk
            return data, closed, time.monotonic() - t0, time.monotonic()
        finally:
            writer.transport.abort()

    async def body():
        started = []
        tasks = [asyncio.create_task(slow(i, started)) for i in range(SLOW_CLIENTS)]
        for _ in range(200):  # every slow socket connected and trickling
            if len(started) == SLOW_CLIENTS:
                break
            await asyncio.sleep(0.01)
        assert len(started) == SLOW_CLIENTS
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        c = await Client.open(gw)
        await c.join("busy")
        await c.chat_confirmed("served while 50 slow clients trickle")
        served_in = time.monotonic() - t0
        t_served = time.monotonic()
        results = await asyncio.gather(*tasks)
        await c.close()
        assert served_in <= normal_bound, \
            f"the normal client took {served_in:.2f}s to connect, join and chat " \
            f"(bound {normal_bound:.2f}s) while slow clients were trickling"
        still_open_then = sum(1 for _, _, _, end in results if end > t_served)
        assert still_open_then == SLOW_CLIENTS, \
            f"only {still_open_then} slow clients were still connected when the normal one " \
            "was served (the test did not overlap)"
        not_closed = [i for i, r in enumerate(results) if not r[1]]
        assert not not_closed, f"{len(not_closed)} slow clients were never closed"
        times = sorted(r[2] for r in results)
        assert times[0] >= 0.8, f"a slow client was closed after {times[0]:.2f}s (< 1 s timeout)"
        assert times[-1] <= close_bound, \
            f"a slow client was closed only after {times[-1]:.2f}s (timeout 1 s, bound " \
            f"{close_bound:.1f}s): the timeout must not restart with every byte"
        for data, _, _, _ in results:
            assert data.startswith(b"HTTP/1.1 408"), f"slow client got {data[:200]!r}"
        check_408(results[0][0])

    run(body(), timeout=30)


# ---- --allowed-origins ----------------------------------------------------------------------

ALLOWED = "https://chat.example.com,https://*.example.org,http://localhost:8080"


@pytest.mark.parametrize("origin", [
    None,  # no Origin header: not a browser, allowed
    "https://chat.example.com",
    "HTTPS://CHAT.EXAMPLE.COM",  # scheme and host compare case-insensitively
    "https://Chat.Example.com",
    "https://a.example.org",  # wildcard: one level
    "https://a.b.c.example.org",  # wildcard: any depth
    "http://localhost:8080",
])
def test_allowed_origin_upgrades(gateway_factory, origin):
    harness.require_options("--allowed-origins")
    gw = gateway_factory("--allowed-origins", ALLOWED)
    assert_upgrades(gw, upgrade_with(gw, origin=origin))


@pytest.mark.parametrize("origin", [
    "https://example.org",  # the wildcard does not cover the apex
    "http://chat.example.com",  # other scheme
    "https://chat.example.com:8443",  # other port
    "https://evil.com",
    "https://chat.example.com.evil.com",  # suffix trick
    "https://evilexample.org",  # no dot before the pattern's domain
    "https://a.example.org.evil.com",
    "http://a.example.org",  # wildcard keeps the scheme
    "https://a.example.org:444",  # wildcard keeps the port
    "http://localhost:8081",
    "http://localhost",
    "null",  # sandboxed iframes, file:// pages
    "",
])
def test_other_origin_gets_403(gateway_factory, origin):
    harness.require_options("--allowed-origins")
    gw = gateway_factory("--allowed-origins", ALLOWED)
    resp = http_exchange(gw.port, upgrade_with(gw, origin=origin))
    check_json_refusal(resp, 403, "forbidden_origin")


def test_origin_with_port_in_the_list(gateway_factory):
    harness.require_options("--allowed-origins")
    gw = gateway_factory("--allowed-origins", "https://chat.example.com:8443")
    assert_upgrades(gw, upgrade_with(gw, origin="https://chat.example.com:8443"))
    check_json_refusal(http_exchange(gw.port, upgrade_with(gw, origin="https://chat.example.com")),
                       403, "forbidden_origin")


def test_origin_check_on_chat_path_and_from_env(gateway_factory):
    harness.require_options("--allowed-origins")
    gw = gateway_factory(env={"CHAT_ALLOWED_ORIGINS": "https://chat.example.com"})
    check_json_refusal(http_exchange(gw.port, upgrade_with(gw, "/chat/r", origin="https://x.io")),
                       403, "forbidden_origin")

    async def body():
        c = await Client.open(gw, "/chat/r", origin="https://chat.example.com")
        await c.chat_confirmed("from an allowed page")
        await c.close()
    run(body())


def test_websockets_client_with_forbidden_origin_sees_403(gateway_factory):
    harness.require_options("--allowed-origins")
    gw = gateway_factory("--allowed-origins", "https://chat.example.com")

    async def body():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as ei:
            ws = await ws_connect(gw, "/ws", origin="https://evil.example.com")
            await ws.close()
        assert ei.value.status_code == 403
    run(body())


def test_empty_allowed_origins_allows_any(gateway_factory):
    harness.require_options("--allowed-origins")
    gw = gateway_factory("--allowed-origins", "")
    for origin in ("https://evil.com", "null", "http://localhost:1"):
        assert_upgrades(gw, upgrade_with(gw, origin=origin))


def test_default_allows_any_origin(gateway):
    assert_upgrades(gateway, upgrade_with(gateway, origin="https://anything.example"))


# ---- --max-connections ----------------------------------------------------------------------

def check_503(resp):
    check_json_refusal(resp, 503, "unavailable")
    ra = resp.header("retry-after")
    assert ra is not None, f"503 without Retry-After: {resp}"
    assert ra.isdigit() and int(ra) >= 1, f"Retry-After is not a positive number of seconds: {ra!r}"


async def wait_for_slot(gw, bound):
    """Retries (bounded) until an upgrade succeeds; returns the open Client."""
    deadline = time.monotonic() + bound
    last = None
    for _ in range(1000):
        if time.monotonic() > deadline:
            break
        try:
            return await Client.open(gw, "/chat/cap")
        except websockets.exceptions.InvalidStatusCode as e:
            last = e.status_code
            assert last == 503, f"unexpected refusal {last}"
        await asyncio.sleep(0.05)
    raise AssertionError(f"no slot freed within {bound}s (last status {last})")


def test_max_connections_refuses_with_503_and_keeps_the_others(gateway_factory):
    harness.require_options("--max-connections")
    gw = gateway_factory("--max-connections", "3")

    async def body():
        a = await Client.open(gw, "/chat/cap")
        b = await Client.open(gw, "/chat/cap")
        c = await Client.open(gw, "/chat/cap")
        for _ in range(3):
            resp = await asyncio.to_thread(
                http_exchange, gw.port, upgrade_request("/chat/cap", port=gw.port))
            check_503(resp)
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as ei:
            ws = await ws_connect(gw, "/ws")
            await ws.close()
        assert ei.value.status_code == 503
        # the refused ones never joined: no system notices, and the three keep chatting
        got = await a.recv_until_pong()
        assert [f["event"] for f in got if f["type"] == "system"] == ["join", "join"], got
        await b.recv_until_pong()
        ack, copy = await c.chat_confirmed("still chatting", skip=("system",))
        assert (await a.recv_type("chat"))["id"] == copy["id"]
        assert (await b.recv_type("chat"))["id"] == copy["id"]
        await a.assert_quiet()
        await b.assert_quiet()
        # one leaves: one new connection fits, the next is refused again
        await b.close()
        d = await wait_for_slot(gw, 3 * SCALE)
        check_503(await asyncio.to_thread(
            http_exchange, gw.port, upgrade_request("/chat/cap", port=gw.port)))
        ack, copy = await d.chat_confirmed("newcomer", skip=("system",))
        assert (await a.recv_type("chat", skip=("system",)))["id"] == copy["id"]
        await asyncio.gather(a.close(), c.close(), d.close())
    run(body(), timeout=40)


def test_max_connections_slot_freed_by_dropped_tcp(gateway_factory):
    """A client that vanishes without a close frame frees its slot too."""
    harness.require_options("--max-connections")
    gw = gateway_factory("--max-connections", "2")

    async def body():
        a = await Client.open(gw, "/chat/cap")
        b = await Client.open(gw, "/chat/cap")
        check_503(await asyncio.to_thread(
            http_exchange, gw.port, upgrade_request("/ws", port=gw.port)))
        b.abort()
        c = await wait_for_slot(gw, 3 * SCALE)
        await c.chat_confirmed("after an abort", skip=("system",))
        await asyncio.gather(a.close(), c.close())
    run(body(), timeout=30)


def test_max_connections_refusals_do_not_use_slots(gateway_factory):
    """Many refused upgrades in a row, then the slot of a closed connection is still free."""
    harness.require_options("--max-connections")
    gw = gateway_factory(env={"CHAT_MAX_CONNECTIONS": "1"})

    async def body():
        a = await Client.open(gw, "/chat/cap")
        for _ in range(20):
            check_503(await asyncio.to_thread(
                http_exchange, gw.port, upgrade_request("/ws", port=gw.port)))
        await a.chat_confirmed("the one connection works")
        await a.close()
        b = await wait_for_slot(gw, 3 * SCALE)
        await b.chat_confirmed("and its slot was reused")
        await b.close()
    run(body(), timeout=30)


# ---- precedence (docs/limits.md: origin and cap checks run after the RFC 6455 checks) --------

def test_malformed_upgrade_gets_its_4xx_before_origin_and_cap_checks(gateway_factory):
    harness.require_options("--allowed-origins", "--max-connections")
    gw = gateway_factory("--allowed-origins", "https://chat.example.com", "--max-connections", "1")
    bad_origin = ["Origin: https://evil.example"]
    resp = http_exchange(gw.port, upgrade_request(port=gw.port, ws_version="8", extra=bad_origin))
    assert resp.status == 426, resp
    resp = http_exchange(gw.port, upgrade_request("/chat/bad!room", port=gw.port,
                                                  extra=bad_origin))
    assert resp.status == 400, resp

    async def body():
        a = await Client.open(gw, "/chat/cap")  # the node is now full
        resp = await asyncio.to_thread(
            http_exchange, gw.port, upgrade_request(port=gw.port, key="abc"))
        assert resp.status == 400, resp
        resp = await asyncio.to_thread(
            http_exchange, gw.port, upgrade_request("/nope", port=gw.port))
        assert resp.status == 404, resp
        check_503(await asyncio.to_thread(
            http_exchange, gw.port, upgrade_request(port=gw.port)))
        await a.close()
    run(body())
