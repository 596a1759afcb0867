"""Token expiry on open connections (docs/auth.md, "Expiry and refresh"): token_expiring inside
--jwt-refresh-window, refresh/refreshed for the same sub (the connection outlives the old exp),
invalid refreshes (error invalid_token, the old expiry holds), a refresh for another sub (1008),
and the 4004 close at exp + --jwt-leeway without a refresh.

Short values: exp = now + 3 s (whole seconds), --jwt-refresh-window 2s, --jwt-leeway 0s or 1s.
After every test the gateways' logs are searched for every token minted so far (tokens.py).
"""

import asyncio
import time

import jwt
import pytest

import harness
import tokens
import wsclient
from tokens import connect
from wsclient import TIMEOUT, ConnectionClosed, run

SCALE = harness.TIMEOUT_SCALE
EARLY = 0.25  # seconds a deadline may seem to fire early (exp is compared to our wall clock)
LATE = 1.0 * SCALE  # seconds it may fire late
WINDOW = 2.0


@pytest.fixture(autouse=True)
def _no_token_leak(token_leak_check):
    yield


def expiring_gateway(factory, keys, leeway="0s", *extra):
    harness.require_options("--jwt-secret-file", "--jwt-leeway", "--jwt-refresh-window")
    return factory(*keys.args(), "--jwt-leeway", leeway, "--jwt-refresh-window", "2s", *extra)


def short_exp(seconds=3):
    return int(time.time()) + seconds


async def token_expiring(c, exp, timeout=None):
    """Waits for token_expiring; checks it comes inside the window and its ttl_ms."""
    timeout = timeout or (exp - time.time()) + LATE + 1
    f = await c.recv_type("system", timeout=timeout)
    now = time.time()
    assert f.get("event") == "token_expiring", f
    assert "room" not in f and "user" not in f, f"token_expiring with room/user: {f}"
    ttl = f.get("ttl_ms")
    assert isinstance(ttl, int) and not isinstance(ttl, bool), f
    assert now >= exp - WINDOW - EARLY, f"token_expiring {exp - now:.2f}s before exp: {f}"
    assert 0 < ttl <= WINDOW * 1000 + 50, f"ttl_ms outside the 2 s window: {f}"
    assert abs(ttl - (exp - now) * 1000) <= 300 * SCALE, \
        f"ttl_ms {ttl} but exp is {(exp - now) * 1000:.0f} ms away"
    return f


async def closed_with(c, code, not_before, not_after):
    """Waits for the close; checks code and when it came (wall clock). Returns the reason."""
    t = await asyncio.wait_for(_wait_closed(c), max(0.1, not_after - time.time()) + 0.5)
    reason = c.ws.close_reason
    assert c.ws.close_code == code, f"close code {c.ws.close_code} {reason!r}, expected {code}"
    assert t >= not_before, f"closed {not_before - t:.2f}s too early"
    assert t <= not_after, f"closed {t - not_after:.2f}s too late"
    return reason


async def _wait_closed(c):
    for _ in range(1000):
        try:
            f = await c.ws.recv()
        except ConnectionClosed:
            return time.time()
        f = wsclient.decode(f)
        assert f["type"] in ("system",) and f.get("event") == "token_expiring", \
            f"unexpected frame before the close: {f}"
    raise AssertionError("no close")


async def stays_open(c, until):
    """No frame and no close until the wall-clock time `until`."""
    left = until - time.time()
    if left <= 0:
        return
    try:
        f = await c.recv(left)
    except asyncio.TimeoutError:
        return
    except ConnectionClosed:
        raise AssertionError(f"closed {c.ws.close_code} {c.ws.close_reason!r} at "
                             f"{until - time.time():.2f}s before {until}") from None
    raise AssertionError(f"unexpected frame {f}")


# ---- without refresh ---------------------------------------------------------------------------

@pytest.mark.parametrize("leeway", [0, 1])
def test_no_refresh_closes_4004_at_exp_plus_leeway(gateway_factory, auth_keys, leeway):
    k = auth_keys
    gw = expiring_gateway(gateway_factory, k, f"{leeway}s")

    async def body():
        # bob first: alice's own frames are then welcome, joined and token_expiring only (under a
        # slow build, token_expiring could come before bob's join notice)
        other = await connect(gw, k.mint(sub="bob"), path="/chat/lobby")
        exp = short_exp()
        c = await connect(gw, k.mint(sub="alice", exp=exp), path="/chat/lobby")
        f = await other.recv_type("system")
        assert (f["event"], f["user"]) == ("join", "alice"), f
        await token_expiring(c, exp)
        reason = await closed_with(c, 4004, exp + leeway - EARLY, exp + leeway + LATE)
        assert "expired" in reason.lower(), f"close reason {reason!r}"
        # its leave reaches the room; the other connection (long token) is untouched
        f = await other.recv_type("system", timeout=TIMEOUT)
        assert (f["event"], f["user"]) == ("leave", "alice"), f
        await other.chat_confirmed("still here")
        await other.close()

    run(body())


def test_only_the_expiring_connection_is_warned(gateway_factory, auth_keys):
    k = auth_keys
    gw = expiring_gateway(gateway_factory, k)

    async def body():
        exp = short_exp()
        short = await connect(gw, k.mint(sub="alice", exp=exp))
        long = await connect(gw, k.mint(sub="alice", ttl=600))
        await token_expiring(short, exp)
        await closed_with(short, 4004, exp - EARLY, exp + LATE)
        await long.assert_quiet("no token_expiring for a token valid for 10 minutes")
        await long.close()

    run(body())


# ---- refresh -----------------------------------------------------------------------------------

def test_refresh_keeps_the_connection_past_the_old_exp(gateway_factory, auth_keys):
    k = auth_keys
    gw = expiring_gateway(gateway_factory, k)

    async def body():
        exp0 = short_exp()
        c = await connect(gw, k.mint(sub="alice", name="Alice", exp=exp0), carrier="header")
        await c.join("lobby")
        await token_expiring(c, exp0)

        exp1 = exp0 + 3
        await c.send({"type": "refresh", "token": k.mint(sub="alice", name="Alice", exp=exp1,
                                                          key="rsa1")})
        f = await c.recv()
        assert f == {"type": "refreshed", "exp": exp1}, f

        # past the old exp (+0.5 s): open, silent, and still chatting
        await stays_open(c, exp0 + 0.5)
        ack, copy = await c.chat_confirmed("after the old exp")
        assert copy["user"] == "alice" and copy["name"] == "Alice", copy

        # the new token's expiry now rules: warned again, closed at exp1
        await token_expiring(c, exp1)
        await closed_with(c, 4004, exp1 - EARLY, exp1 + LATE)

    run(body(), timeout=30)


def test_refresh_takes_the_new_name_and_rooms(gateway_factory, auth_keys):
    k = auth_keys
    gw = expiring_gateway(gateway_factory, k)

    async def body():
        c = await connect(gw, k.mint(sub="alice", name="Alice", rooms=["private:a"]),
                          path="/chat/private:a")
        await c.send({"type": "join", "room": "private:b"})
        await c.error("forbidden")
        new = k.mint(sub="alice", name="Alice 2", rooms=["private:b"], ttl=900, key="ec1")
        await c.send({"type": "refresh", "token": new})
        f = await c.recv()
        assert f.get("type") == "refreshed" and f.get("exp") == jwt.decode(
            new, options={"verify_signature": False})["exp"], f
        await c.join("private:b")
        ack, copy = await c.chat_confirmed("renamed", room="private:a")  # joined rooms stay
        assert copy["user"] == "alice" and copy["name"] == "Alice 2", copy
        await c.close()

    run(body())


def test_invalid_refresh_keeps_the_current_expiry(gateway_factory, auth_keys):
    k = auth_keys
    gw = expiring_gateway(gateway_factory, k)
    tokens.SECRETS.add("not-a-configured-secret-0123456789")

    async def body():
        exp0 = short_exp()
        c = await connect(gw, k.mint(sub="alice", exp=exp0))
        now = int(time.time())
        bad = {
            "garbage": tokens.register("not.a.token"),
            "expired": k.mint(sub="alice", exp=now - 5),
            "unknown key": tokens.forge({"alg": "HS256"}, tokens.claims("alice", ttl=600),
                                        tokens.hmac_signer("not-a-configured-secret-0123456789")),
            "alg none": tokens.forge({"alg": "none"}, tokens.claims("alice", ttl=600),
                                     lambda d: b""),
            "unknown kid": k.mint(sub="alice", kid="k9"),
            "no sub": k.mint(sub=None),
        }
        for what, tok in bad.items():
            await c.send({"type": "refresh", "token": tok, "cid": f"r-{what}"})
            f = await c.recv()
            if f.get("type") == "system":  # the warning may come in between
                assert f.get("event") == "token_expiring", f
                f = await c.recv()
            assert f.get("type") == "error" and f.get("code") == "invalid_token", \
                f"refresh with {what} token: {f}"
            assert isinstance(f.get("message"), str) and f["message"], f
            assert not tokens.leak_findings({"error": str(f)}), f"token echoed: {f}"
        # still open, and the old exp still holds
        await c.send({"type": "ping"})
        for _ in range(3):
            f = await c.recv()
            if f == {"type": "pong"}:
                break
            assert f.get("event") == "token_expiring", f
        else:
            raise AssertionError("no pong")
        await closed_with(c, 4004, exp0 - EARLY, exp0 + LATE)

    run(body())


def test_refresh_for_another_sub_closes_1008(gateway_factory, auth_keys):
    k = auth_keys
    gw = expiring_gateway(gateway_factory, k)

    async def body():
        c = await connect(gw, k.mint(sub="mallory"), path="/chat/lobby")
        w = await connect(gw, k.mint(sub="walter"), path="/chat/lobby")
        await c.recv_type("system")
        await c.send({"type": "refresh", "token": k.mint(sub="alice", name="Alice")})
        code = await c.expect_closed()
        assert code == 1008, f"close {code} {c.ws.close_reason!r}, expected 1008"
        f = await w.recv_type("system")
        assert (f["event"], f["user"]) == ("leave", "mallory"), f  # never became alice
        await w.assert_quiet()
        await w.close()

    run(body())


def test_refresh_without_keys_is_a_bad_request(gateway_factory, auth_keys):
    gw = gateway_factory()  # guest mode

    async def body():
        c = await connect(gw)
        await c.send({"type": "refresh", "token": auth_keys.mint(sub="alice")})
        await c.error("bad_request")
        await c.assert_quiet()
        assert c.user.startswith("guest-")
        await c.close()

    run(body())
