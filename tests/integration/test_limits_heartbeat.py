"""Connection safety, heartbeats (docs/limits.md): --ping-interval / --pong-timeout (close 4000),
--idle-timeout (close 4001), and the start-up check pong timeout < ping interval.
"""

import asyncio
import socket
import time

import pytest

import harness
from rawws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, open_raw
from wsclient import Client, run

SCALE = harness.TIMEOUT_SCALE
PING = b'{"type":"ping"}'
FAST = ("--ping-interval", "1s", "--pong-timeout", "500ms")


# ---- ping interval / pong timeout -----------------------------------------------------------

def test_silent_client_gets_a_ping_then_4000(gateway_factory):
    harness.require_options("--ping-interval", "--pong-timeout")
    gw = gateway_factory(*FAST)
    with open_raw(gw) as ws:
        t0 = time.monotonic()
        fin, rsv, op, payload = ws.recv_frame(timeout=1 + 2 * SCALE)
        t_ping = time.monotonic()
        assert op == OP_PING, f"expected a WebSocket ping (0x9) first, got opcode {op}: {payload!r}"
        assert fin and len(payload) <= 125
        assert 0.8 <= t_ping - t0 <= 1 + 1.0 * SCALE, \
            f"ping after {t_ping - t0:.2f}s of silence (interval 1 s)"
        # we never answer
        code, reason, before = ws.recv_close(timeout=0.5 + 2 * SCALE)
        t_close = time.monotonic()
        assert before == [], f"frames between the ping and the close: {before}"
        assert code == 4000, f"close code {code} ({reason!r}), expected 4000"
        assert "ping" in reason.lower() or "pong" in reason.lower(), \
            f"close reason does not mention ping/pong: {reason!r}"
        assert 0.4 <= t_close - t_ping <= 0.5 + 1.0 * SCALE, \
            f"closed {t_close - t_ping:.2f}s after the ping (pong timeout 500 ms)"
        # the client never answers the close: the gateway drops TCP within 5 s
        ws.expect_eof(timeout=5 + 2 * SCALE)


def test_silent_member_leaves_the_room_after_4000(gateway_factory):
    harness.require_options("--ping-interval", "--pong-timeout")
    gw = gateway_factory(*FAST)

    async def body():
        a = await Client.open(gw, "/chat/hb")  # websockets answers pings by itself
        raw = await asyncio.to_thread(open_raw, gw, "/chat/hb")
        try:
            join = await a.recv_type("system")
            leave = await a.recv_type("system", timeout=1.5 + 3 * SCALE)
            assert (leave["event"], leave["user"]) == ("leave", join["user"]), leave
            code, reason, before = await asyncio.to_thread(raw.recv_close, 2 * SCALE, 100)
            assert code == 4000, (code, reason)
        finally:
            raw.close()
        await a.close()
    run(body())


def test_client_answering_pings_stays_connected(gateway_factory):
    """python websockets answers pings by itself: 4 s idle (4 intervals) and still open."""
    harness.require_options("--ping-interval", "--pong-timeout")
    gw = gateway_factory(*FAST)

    async def body():
        a = await Client.open(gw, "/chat/alive")
        b = await Client.open(gw, "/chat/alive")
        await a.recv_type("system")
        await asyncio.sleep(4.0)
        assert a.ws.open and b.ws.open, (a.ws.close_code, b.ws.close_code)
        ack, copy = await a.chat_confirmed("after 4 intervals")
        assert (await b.recv_type("chat"))["id"] == copy["id"]
        await asyncio.gather(a.close(), b.close())
    run(body())


def test_raw_client_answering_pings_gets_one_per_interval(gateway_factory):
    harness.require_options("--ping-interval", "--pong-timeout")
    gw = gateway_factory(*FAST)
    with open_raw(gw) as ws:
        pings = []
        t0 = time.monotonic()
        for _ in range(100):
            left = 4.5 - (time.monotonic() - t0)
            if left <= 0:
                break
            try:
                fin, rsv, op, payload = ws.recv_frame(timeout=left)
            except (TimeoutError, socket.timeout):
                break
            assert op == OP_PING, f"unexpected frame {op} {payload!r} (close?)"
            pings.append(time.monotonic() - t0)
            ws.send_frame(OP_PONG, payload)
        assert 3 <= len(pings) <= 5, f"pings at {pings} in 4.5 s (interval 1 s)"
        ws.send_frame(OP_TEXT, PING)
        assert ws.recv_json() == {"type": "pong"}


def test_any_frame_answers_a_ping(gateway_factory):
    """After a ping, a text message instead of a pong also shows the client is alive."""
    harness.require_options("--ping-interval", "--pong-timeout")
    gw = gateway_factory(*FAST)
    with open_raw(gw) as ws:
        for _ in range(3):
            fin, rsv, op, payload = ws.recv_frame(timeout=1 + 2 * SCALE)
            assert op == OP_PING, (op, payload)
            ws.send_frame(OP_TEXT, PING)  # not a pong
            assert ws.recv_json() == {"type": "pong"}
        ws.send_frame(OP_TEXT, PING)
        assert ws.recv_json() == {"type": "pong"}


def test_traffic_from_the_client_postpones_the_ping(gateway_factory):
    """Pings are for connections that received nothing for the interval: a client that sends a
    message every 300 ms for 3 s gets no ping at all."""
    harness.require_options("--ping-interval", "--pong-timeout")
    gw = gateway_factory(*FAST)
    with open_raw(gw) as ws:
        t0 = time.monotonic()
        for _ in range(10):
            ws.send_frame(OP_TEXT, PING)
            fin, rsv, op, payload = ws.recv_frame()
            assert op != OP_PING, f"got a ping {time.monotonic() - t0:.2f}s in, " \
                                  "although the client sent something every 300 ms"
            assert (op, payload) == (OP_TEXT, b'{"type":"pong"}'), (op, payload)
            time.sleep(0.3)


def test_client_pings_keep_it_alive_too(gateway_factory):
    """A WebSocket ping from the client is 'something received': no server ping needed."""
    harness.require_options("--ping-interval", "--pong-timeout")
    gw = gateway_factory(*FAST)
    with open_raw(gw) as ws:
        for i in range(10):
            ws.send_frame(OP_PING, b"c%d" % i)
            fin, rsv, op, payload = ws.recv_frame()
            assert (op, payload) == (OP_PONG, b"c%d" % i), (op, payload)
            time.sleep(0.3)
        ws.send_frame(OP_TEXT, PING)
        assert ws.recv_json() == {"type": "pong"}


def test_ping_interval_from_env(gateway_factory):
    harness.require_options("--ping-interval", "--pong-timeout")
    gw = gateway_factory(env={"CHAT_PING_INTERVAL": "700ms", "CHAT_PONG_TIMEOUT": "300ms"})
    with open_raw(gw) as ws:
        t0 = time.monotonic()
        fin, rsv, op, payload = ws.recv_frame(timeout=0.7 + 2 * SCALE)
        assert op == OP_PING
        assert 0.5 <= time.monotonic() - t0 <= 0.7 + 1.0 * SCALE
        code, reason, before = ws.recv_close(timeout=0.3 + 2 * SCALE)
        assert code == 4000, (code, reason)


# ---- idle timeout ---------------------------------------------------------------------------

def test_idle_connection_closed_with_4001(gateway_factory):
    harness.require_options("--idle-timeout")
    gw = gateway_factory("--idle-timeout", "1s")

    async def body():
        a = await Client.open(gw, "/chat/idle")
        t0 = time.monotonic()
        code = await a.expect_closed(timeout=1 + 2 * SCALE)
        waited = time.monotonic() - t0
        assert code == 4001, f"close code {code}, expected 4001"
        assert 0.8 <= waited <= 1 + 1.5 * SCALE, f"closed after {waited:.2f}s (idle timeout 1 s)"
    run(body())


def test_pongs_do_not_count_as_activity(gateway_factory):
    """A client that answers every ping but sends no message is still idle: 4001, not 4000."""
    harness.require_options("--idle-timeout", "--ping-interval", "--pong-timeout")
    gw = gateway_factory("--ping-interval", "300ms", "--pong-timeout", "200ms",
                         "--idle-timeout", "1500ms")

    async def body():
        a = await Client.open(gw, "/chat/idle")
        t0 = time.monotonic()
        code = await a.expect_closed(timeout=1.5 + 3 * SCALE)
        waited = time.monotonic() - t0
        assert code == 4001, f"close code {code}, expected 4001 (idle)"
        assert 1.2 <= waited <= 1.5 + 1.5 * SCALE, f"closed after {waited:.2f}s (idle 1.5 s)"
    run(body())


def test_client_pings_do_not_count_as_activity(gateway_factory):
    harness.require_options("--idle-timeout")
    gw = gateway_factory("--idle-timeout", "1s")
    with open_raw(gw) as ws:
        t0 = time.monotonic()
        code = None
        for i in range(40):
            try:
                ws.send_frame(OP_PING, b"x")
            except OSError:
                break
            fin, rsv, op, payload = ws.recv_frame(timeout=1 + 2 * SCALE)
            if op == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big")
                break
            assert op == OP_PONG
            time.sleep(0.2)
        waited = time.monotonic() - t0
        assert code == 4001, f"not closed with 4001 (code {code}) after {waited:.2f}s of pings"
        assert 0.8 <= waited <= 1 + 1.5 * SCALE, waited


def test_messages_keep_the_connection_open(gateway_factory):
    harness.require_options("--idle-timeout")
    gw = gateway_factory("--idle-timeout", "1s")

    async def body():
        a = await Client.open(gw, "/chat/busy")
        for i in range(8):  # 3.2 s in all, never 1 s without a message
            await a.send({"type": "typing"} if i % 2 else {"type": "ping"})
            if not i % 2:
                assert await a.recv() == {"type": "pong"}
            await asyncio.sleep(0.4)
        assert a.ws.open
        await a.chat_confirmed("still open")
        await a.close()
    run(body())


def test_idle_timeout_from_env_and_leave_notice(gateway_factory):
    harness.require_options("--idle-timeout")
    gw = gateway_factory(env={"CHAT_IDLE_TIMEOUT": "1500ms"})

    async def body():
        a = await Client.open(gw, "/chat/idle")
        b = await Client.open(gw, "/chat/idle")
        await a.recv_type("system")
        # a keeps talking (every 300 ms), b says nothing
        t0 = time.monotonic()
        seen = []
        for _ in range(100):
            seen += await a.recv_until_pong()
            if seen or time.monotonic() - t0 > 1.5 + 2 * SCALE:
                break
            await asyncio.sleep(0.3)
        assert seen, "b was not closed"
        assert [(f["type"], f.get("event"), f.get("user")) for f in seen] == \
            [("system", "leave", b.user)], seen
        assert time.monotonic() - t0 >= 1.2
        assert await b.expect_closed() == 4001
        await a.close()
    run(body())


# ---- start-up check --------------------------------------------------------------------------

@pytest.mark.parametrize("args,env", [
    (["--ping-interval", "1s", "--pong-timeout", "1s"], None),
    (["--ping-interval", "1s", "--pong-timeout", "2s"], None),
    (["--pong-timeout", "25s"], None),  # equal to the default interval
    (["--pong-timeout", "30s"], None),
    (["--ping-interval", "5s"], None),  # below the default 10 s pong timeout
    ([], {"CHAT_PING_INTERVAL": "2s", "CHAT_PONG_TIMEOUT": "2s"}),
    (["--ping-interval", "2s"], {"CHAT_PONG_TIMEOUT": "3s"}),
], ids=["equal", "greater", "default-interval", "above-default", "interval-below-default-pong",
        "env-equal", "flag-and-env"])
def test_pong_timeout_not_below_ping_interval_refuses_to_start(args, env):
    harness.require_options("--ping-interval", "--pong-timeout")
    port = harness.free_port()
    rc, err, accepted = harness.run_expect_exit(
        ["--listen", f"127.0.0.1:{port}", "--node-id", "n", *args], env=env, port=port)
    assert rc == 2, f"exit code {rc}, stderr: {err}"
    assert not accepted, "the gateway listened before refusing its options"
    low = err.lower()
    assert ("pong-timeout" in low or "pong_timeout" in low) and \
           ("ping-interval" in low or "ping_interval" in low), \
        f"the message does not name both options: {err!r}"
    assert not harness.sanitizer_findings(err), err


def test_pong_timeout_just_below_ping_interval_starts(gateway_factory):
    harness.require_options("--ping-interval", "--pong-timeout")
    gw = gateway_factory("--ping-interval", "1s", "--pong-timeout", "999ms")

    async def body():
        a = await Client.open(gw)
        await a.assert_quiet()
        await a.close()
    run(body())
