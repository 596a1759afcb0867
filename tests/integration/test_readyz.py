"""The admin listener (docs/operations.md): /healthz, /readyz (broker, capacity; draining is in
test_drain.py), 404 and 405, --admin-listen / CHAT_ADMIN_LISTEN (default 127.0.0.1:9090, empty:
none)."""

import asyncio
import time

import harness
import rawws
from ophelpers import (admin, check_not_ready, check_ready, delta, healthz, launch,
                       listening_ports, readyz, scrape, stop_proc, wait_until)
from ophelpers import own_redis  # noqa: F401  (fixture)
from wsclient import Client, run

SCALE = harness.TIMEOUT_SCALE


def test_health_ready_404_405(gateway_factory):
    gw = gateway_factory()
    assert healthz(gw) == (200, {"status": "ok"})
    check_ready(*readyz(gw))
    for path in ("/", "/nope", "/healthz/", "/metricsx", "/ready", "/ws"):
        r = admin(gw, path)
        assert r.status == 404, f"GET {path} on the admin port answered {r}"
    for path in ("/healthz", "/readyz", "/metrics"):
        for method in ("POST", "PUT", "DELETE", "HEAD"):
            r = admin(gw, path, method=method)
            assert r.status == 405, f"{method} {path} answered {r}"
    # still serving after all that
    assert healthz(gw) == (200, {"status": "ok"})


def test_admin_listen_env_empty_and_default(gateway_factory, tmp_path):
    # CHAT_ADMIN_LISTEN
    port = harness.free_port()
    gw = gateway_factory(env={"CHAT_ADMIN_LISTEN": f"127.0.0.1:{port}"})
    base = f"http://127.0.0.1:{port}"
    assert healthz(base) == (200, {"status": "ok"})
    assert listening_ports(gw.pid) == {gw.port, port}
    # empty: no admin listener at all (flag, then environment)
    gw2 = gateway_factory("--admin-listen", "")
    assert listening_ports(gw2.pid) == {gw2.port}, \
        f"--admin-listen '': the gateway listens on {listening_ports(gw2.pid)}"
    gw3 = gateway_factory(env={"CHAT_ADMIN_LISTEN": ""})
    assert listening_ports(gw3.pid) == {gw3.port}, \
        f"CHAT_ADMIN_LISTEN='': the gateway listens on {listening_ports(gw3.pid)}"
    # the default: 127.0.0.1:9090 (only checked when that port is free here)
    if harness.port_accepts(9090):
        return
    p = harness.free_port()
    proc = launch(tmp_path / "default", ["--listen", f"127.0.0.1:{p}", "--node-id", "t1"],
                  wait_port=p)
    try:
        wait_until(lambda: harness.port_accepts(9090), 5 * SCALE, "the default admin port")
        assert listening_ports(proc.pid) == {p, 9090}
        assert healthz("http://127.0.0.1:9090") == (200, {"status": "ok"})
    finally:
        assert stop_proc(proc) == 0


def test_readyz_capacity(gateway_factory):
    gw = gateway_factory("--max-connections", "2")
    m0 = scrape(gw)

    async def body():
        a = await Client.open(gw, "/chat/cap")
        check_ready(*readyz(gw))
        b = await Client.open(gw, "/chat/cap")
        check_not_ready(*readyz(gw), ["capacity"])
        assert healthz(gw) == (200, {"status": "ok"})
        resp = rawws.http_exchange(gw.port, rawws.upgrade_request("/ws", port=gw.port))
        rawws.check_json_refusal(resp, 503, "unavailable")
        assert resp.header("retry-after"), f"503 without Retry-After: {resp}"
        await a.close()
        wait_until(lambda: readyz(gw)[0] == 200, 5 * SCALE, "/readyz 200 below the cap again")
        check_ready(*readyz(gw))
        await b.close()

    run(body())
    m1 = scrape(gw)
    assert delta(m1, m0, "chat_handshake_rejected_total", status="503") == 1
    assert delta(m1, m0, "chat_connections_opened_total") == 2


def _poll_outage(gw, want_status, timeout, what):
    """Polls /readyz and /healthz together until /readyz answers want_status; /healthz must be
    200 {"status":"ok"} at every poll. Returns the last /readyz (status, body)."""
    seen = []

    def probe():
        h = healthz(gw)
        assert h == (200, {"status": "ok"}), f"/healthz answered {h} while {what}"
        r = readyz(gw)
        seen.append(r)
        return r if r[0] == want_status else None

    return wait_until(probe, timeout, f"/readyz {want_status} while {what}", interval=0.1)


def test_readyz_follows_redis(own_redis, gateway_factory):
    """Redis stopped: /readyz 503 "broker" (and /healthz stays 200); Redis back: 200 again;
    Redis paused (TCP alive, no answers): the canary goes stale and /readyz says "broker"."""
    redis = own_redis.start()
    gw = gateway_factory("--redis-url", redis.url, "--redis-timeout", "1s")
    wait_until(lambda: readyz(gw)[0] == 200, 15 * SCALE, "/readyz 200 with Redis up")
    check_ready(*readyz(gw))
    m0 = scrape(gw)
    assert m0.get("chat_broker_connected") == 1

    # a member connected before the outage
    st = {}

    async def open_member():
        st["c"] = await Client.open(gw, "/chat/outage")

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(open_member(), 10 * SCALE))
        c = st["c"]
        m0 = wait_until(lambda: (lambda m: m if delta(m, m0, "chat_broker_published_total") >= 1
                                 else None)(scrape(gw)), 5 * SCALE, "the join notice published")

        redis.stop()
        t0 = time.monotonic()
        check_not_ready(*_poll_outage(gw, 503, 10 * SCALE, "Redis is stopped"), ["broker"])
        assert scrape(gw).get("chat_broker_connected") == 0

        async def chats_fail():
            for i in range(2):
                cid = await c.chat(f"during the outage {i}")
                err = await c.error("unavailable")
                assert err.get("cid") == cid, err

        loop.run_until_complete(asyncio.wait_for(chats_fail(), 10 * SCALE))
        m_out = scrape(gw)
        assert delta(m_out, m0, "chat_broker_publish_errors_total") == 2, \
            "two chats refused with unavailable while Redis is down"
        assert delta(m_out, m0, "chat_broker_published_total") == 0
        # a while later: still not ready, still healthy
        for _ in range(10):
            assert healthz(gw) == (200, {"status": "ok"})
            check_not_ready(*readyz(gw), ["broker"])
            time.sleep(0.1)
        down_for = time.monotonic() - t0

        redis.start()
        check_ready(*_poll_outage(gw, 200, 20 * SCALE, "Redis comes back"))
        m1 = scrape(gw)
        assert m1.get("chat_broker_connected") == 1

        async def chat_ok():
            ack, _ = await c.chat_confirmed("after the outage")
            await c.close()

        loop.run_until_complete(asyncio.wait_for(chat_ok(), 10 * SCALE))
        assert delta(m1, m0, "chat_broker_reconnects_total") >= 1, \
            f"Redis was down {down_for:.1f}s and came back, " \
            "but chat_broker_reconnects_total did not move"

        redis.pause()
        try:
            check_not_ready(*_poll_outage(gw, 503, 15 * SCALE, "Redis is paused"), ["broker"])
            assert scrape(gw).get("chat_broker_connected") == 0
        finally:
            redis.resume()
        check_ready(*_poll_outage(gw, 200, 20 * SCALE, "Redis resumes"))
        assert scrape(gw).get("chat_broker_connected") == 1
    finally:
        loop.close()
