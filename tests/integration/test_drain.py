"""Graceful drain on SIGTERM / SIGINT (docs/operations.md): /readyz 503 "draining" at once, 503 for
new upgrades, 1001 closes in batches every 100 ms spread over the window after --drain-delay,
queued messages written before the close frame, exit 0 before --drain-timeout; a second signal
exits at once (non-zero); no connection: exit at once."""

import asyncio
import collections
import json
import math
import signal
import time

import pytest

import harness
import rawws
from ophelpers import (check_not_ready, healthz, loose_records, raise_nofile, readyz, scrape,
                       ts_epoch, wait_exit, wait_until)
from wsclient import check_joined, Client, ConnectionClosed, decode, run

SCALE = harness.TIMEOUT_SCALE


class Member:
    def __init__(self, c, room):
        self.c = c
        self.room = room
        self.frames = []
        self.acks = set()
        self.close_at = None
        self.code = None

    async def read(self):
        """Everything until the gateway closes the connection (bounded by a frame count)."""
        for _ in range(1000000):
            try:
                raw = await self.c.ws.recv()
            except ConnectionClosed:
                self.close_at = time.monotonic()
                self.code = self.c.ws.close_code
                return
            f = decode(raw)
            self.frames.append(f)
            if f["type"] == "ack":
                self.acks.add(f["cid"])

    def chats_from(self, user):
        return [f["text"] for f in self.frames if f["type"] == "chat" and f["user"] == user]


def refused_503(gw, path="/ws"):
    resp = rawws.http_exchange(gw.port, rawws.upgrade_request(path, port=gw.port))
    rawws.check_json_refusal(resp, 503, "unavailable")
    assert resp.header("retry-after"), f"503 without Retry-After during the drain: {resp}"


def drain_window(delay, timeout):
    margin = min(2.0, 0.1 * (timeout - delay))
    return timeout - delay - margin


N_CLIENTS = 500
ROOMS = 10
CHATS = 5
DELAY, TIMEOUT = 1.0, 8.0


def test_drain_500_clients(gateway_factory):
    raise_nofile(4 * N_CLIENTS + 512)
    gw = gateway_factory("--drain-delay", "1s", "--drain-timeout", "8s", "--rate-limit", "0",
                         "--user-rate-limit", "0")
    members = []
    st = {}

    async def body():
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(50)
        tasks = []

        async def open_one(i):
            async with sem:
                m = Member(await Client.open(gw, f"/chat/room-{i % ROOMS}"), i % ROOMS)
            members.append(m)
            tasks.append(asyncio.ensure_future(m.read()))
            return m

        opened = await asyncio.gather(*(open_one(i) for i in range(N_CLIENTS)))
        senders = opened[:ROOMS]  # one per room
        st["senders"] = {x.room: x for x in senders}
        for s in senders:
            for j in range(CHATS):
                await s.c.send({"type": "chat", "text": f"{s.room}:{j}", "cid": f"c{j}"})
        want = {f"c{j}" for j in range(CHATS)}
        wait_deadline = time.monotonic() + 15 * SCALE
        for _ in range(100000):
            if all(s.acks >= want for s in senders):
                break
            assert time.monotonic() < wait_deadline, "acks missing before SIGTERM"
            await asyncio.sleep(0.01)
        assert all(m.close_at is None for m in members), "a client was closed before SIGTERM"

        st["sig"] = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)

        def sig_at():
            return st["sig"]

        def probes():
            r = wait_until(lambda: (lambda x: x if x[0] == 503 else None)(readyz(gw)),
                           1.0 * SCALE, "/readyz 503 right after SIGTERM", interval=0.02)
            st["ready_at"] = time.monotonic()
            check_not_ready(*r, ["draining"])
            assert healthz(gw) == (200, {"status": "ok"}), "/healthz during the drain"
            refused_503(gw)
            refused_503(gw, "/chat/room-0")
            st["probes_done"] = time.monotonic()
            # the metrics in the middle of the window
            time.sleep(max(0.0, sig_at() + DELAY + drain_window(DELAY, TIMEOUT) / 2
                           - time.monotonic()))
            st["mid"] = scrape(gw)

        await loop.run_in_executor(None, probes)
        done, pending = await asyncio.wait(tasks, timeout=TIMEOUT + 5 * SCALE)
        assert not pending, f"{len(pending)} clients still open {TIMEOUT + 5 * SCALE:.0f}s " \
                            "after SIGTERM"
        for _ in range(1000):
            if gw.proc.poll() is not None:
                break
            await asyncio.sleep(0.01)
        st["exit_seen"] = time.monotonic()

    run(body(), timeout=90)
    rc, _ = wait_exit(gw, 5 * SCALE)
    assert rc == 0, f"exit code {rc} after the drain"
    sig = st["sig"]
    assert st["ready_at"] - sig < 1.0 * SCALE

    # every client: 1001, and every chat acked before SIGTERM before that
    codes = collections.Counter(m.code for m in members)
    assert codes == {1001: N_CLIENTS}, f"close codes {dict(codes)}"
    senders = st["senders"]
    lost = []
    for m in members:
        s = senders[m.room]
        got = m.chats_from(s.c.user)
        if got != [f"{m.room}:{j}" for j in range(CHATS)]:
            lost.append((m.c.conn, got))
    assert not lost, f"{len(lost)} members did not get every acked chat before 1001: {lost[:5]}"

    # halfway through: the admin listener still answers, the counts add up
    mid = st["mid"]
    closed_mid = mid.get("chat_connections_closed_total", code="1001")
    gauge = mid.get("chat_connections")
    opened = mid.get("chat_connections_opened_total")
    assert 0 < closed_mid < N_CLIENTS and 0 < gauge < N_CLIENTS, \
        f"halfway through the drain: {closed_mid} closed with 1001, {gauge} open"
    assert opened == N_CLIENTS
    assert 0 <= opened - closed_mid - gauge <= 2 * math.ceil(N_CLIENTS / 60) + 2, \
        f"opened {opened}, closed {closed_mid}, open {gauge} halfway through the drain"

    # the closes: none before the delay, spread over the window, in batches
    rel = sorted(m.close_at - sig for m in members)
    first, last = rel[0], rel[-1]
    assert first >= DELAY - 0.05, f"first close {first:.2f}s after SIGTERM (delay {DELAY}s)"
    assert last <= TIMEOUT, f"last close {last:.2f}s after SIGTERM (timeout {TIMEOUT}s)"
    assert last - first > 3.0, f"closes spread over {last - first:.2f}s only"
    window = drain_window(DELAY, TIMEOUT)
    batch = math.ceil(N_CLIENTS / int(window * 10))
    slots = collections.Counter(int((t - first) / 0.1) for t in rel)
    busiest = max(slots.values())
    assert busiest <= 2 * batch + 2, \
        f"{busiest} closes in one 100 ms slot (expected batches of ~{batch}): " \
        f"{sorted(slots.items())[:10]}..."
    assert last - first >= 0.6 * window, \
        f"closes spread over {last - first:.2f}s of a {window:.1f}s window"

    # the gateway's own account: exit before the timeout, every close logged with 1001
    recs = loose_records(gw.stdout_text())
    start = [r for r in recs if r.get("msg") == "draining"]
    stopped = [r for r in recs if r.get("msg") == "stopped"]
    assert start and stopped, "no draining/stopped records"
    took = ts_epoch(stopped[-1]["ts"]) - ts_epoch(start[-1]["ts"])
    assert took < TIMEOUT, f"the drain took {took:.2f}s by the gateway's log (timeout {TIMEOUT}s)"
    assert st["exit_seen"] - sig < TIMEOUT + 1.0 * SCALE, \
        f"the process exited {st['exit_seen'] - sig:.2f}s after SIGTERM"
    closed = [r for r in recs if r.get("msg") == "connection closed"]
    assert collections.Counter(r.get("code") for r in closed) == {1001: N_CLIENTS}
    # the same by the gateway's clock (records of the closes, ms time stamps)
    lt = sorted(ts_epoch(r["ts"]) for r in closed)
    lslots = collections.Counter(int((x - lt[0]) / 0.1) for x in lt)
    assert lt[-1] - lt[0] > 3.0, f"logged closes spread over {lt[-1] - lt[0]:.2f}s only"
    assert max(lslots.values()) <= 2 * batch + 2, \
        f"{max(lslots.values())} closes logged in one 100 ms slot (batches of ~{batch})"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_drain_readiness_refusals_and_delay(gateway_factory, sig):
    """Small drain: not ready at once ("draining", and "capacity" while full), new upgrades get
    503, the open connections keep working during --drain-delay, then get 1001; exit 0."""
    gw = gateway_factory("--drain-delay", "1.5s", "--drain-timeout", "6s",
                         "--max-connections", "2")

    async def body():
        loop = asyncio.get_running_loop()
        a = await Client.open(gw, "/chat/d")
        b = await Client.open(gw, "/chat/d")
        await a.recv_type("system")
        check_not_ready(*readyz(gw), ["capacity"])
        t0 = time.monotonic()
        gw.proc.send_signal(sig)

        def probes():
            r = wait_until(lambda: (lambda x: x if "draining" in x[1].get("failed", []) else None)(
                readyz(gw)), 1.0 * SCALE, "/readyz draining", interval=0.02)
            check_not_ready(*r, ["draining", "capacity"])
            assert healthz(gw) == (200, {"status": "ok"})
            refused_503(gw, "/chat/d")

        await loop.run_in_executor(None, probes)
        # still open and working during the delay
        assert time.monotonic() - t0 < 1.2, "the probes took too long to say anything"
        ack, _ = await a.chat_confirmed("during the delay")
        f = await b.recv_type("chat")
        assert f["id"] == ack["id"]
        ca, cb = await asyncio.gather(a.expect_closed(timeout=10 * SCALE),
                                      b.expect_closed(timeout=10 * SCALE))
        took = time.monotonic() - t0
        assert (ca, cb) == (1001, 1001), (ca, cb)
        assert took >= 1.5 - 0.05, f"closed {took:.2f}s after the signal (delay 1.5s)"
        return t0

    t0 = run(body())
    rc, _ = wait_exit(gw, 6 * SCALE)
    assert rc == 0
    assert time.monotonic() - t0 < 6.0 + 1.0 * SCALE


def test_sigterm_without_connections_exits_at_once(gateway_factory):
    gw = gateway_factory("--drain-delay", "5s", "--drain-timeout", "20s")
    gw.proc.send_signal(signal.SIGTERM)
    rc, took = wait_exit(gw, 5 * SCALE)
    assert rc == 0
    assert took < 1.0 * SCALE, f"exit {took:.2f}s after SIGTERM with no connection open"


@pytest.mark.parametrize("first,second", [(signal.SIGTERM, signal.SIGTERM),
                                          (signal.SIGTERM, signal.SIGINT),
                                          (signal.SIGINT, signal.SIGTERM)],
                         ids=["TERM-TERM", "TERM-INT", "INT-TERM"])
def test_second_signal_exits_at_once(tmp_path, first, second):
    """Not through gateway_factory: the exit code is meant to be non-zero here. (Under ASan,
    leak checking is off for this process: an immediate exit frees nothing on purpose.)"""
    env = None
    if harness.ASAN:
        env = {"ASAN_OPTIONS": harness.ASAN_TEST_OPTIONS + ":detect_leaks=0"}
    gw = harness.start_gateway(tmp_path / "gw", args=("--drain-delay", "5s", "--drain-timeout",
                                                      "20s"), env=env)
    try:
        async def body():
            a = await Client.open(gw, "/chat/x")
            gw.proc.send_signal(first)
            wait_until(lambda: readyz(gw)[0] == 503, 2 * SCALE, "/readyz 503 (draining)")
            t0 = time.monotonic()
            gw.proc.send_signal(second)
            try:
                gw.proc.wait(2 * SCALE)
            except Exception:
                raise AssertionError("still running 2 s after the second signal") from None
            took = time.monotonic() - t0
            code = await a.expect_closed(timeout=5 * SCALE)
            return took, code

        took, code = run(body())
        rc = gw.proc.returncode
        assert rc != 0, "exit code 0 after a second signal"
        assert rc > 0, f"killed by signal {-rc} instead of exiting with a non-zero code"
        assert took < 1.0 * SCALE, f"exited {took:.2f}s after the second signal"
        assert code == 1006, f"the client saw {code}"
        found = harness.sanitizer_findings(gw.stderr_text())
        assert not found, f"sanitizer report: {gw.stderr_text()[-4000:]}"
    finally:
        gw.stop()


def test_drain_writes_queued_chats_before_1001(gateway_factory):
    """A member that is not reading has chats waiting in the gateway's own send queue when the
    drain closes it: when it reads, it finds every one of them, then the 1001 close frame."""
    gw = gateway_factory("--drain-delay", "0.5s", "--drain-timeout", "6s",
                         "--max-text-bytes", "60000", "--rate-limit", "0",
                         "--user-rate-limit", "0")
    slow = rawws.RawWS(gw.port, rcvbuf=4096).open("/chat/q")
    st = {}
    try:
        assert slow.recv_json()["type"] == "welcome"
        check_joined(slow.recv_json(), "q")

        async def body():
            a = await Client.open(gw, "/chat/q")
            n = extra = 0
            for _ in range(400):
                await a.chat_confirmed(f"{n:05d}" + "x" * 50000)
                n += 1
                if scrape(gw).get("chat_send_queue_bytes") > 0:
                    extra += 1
                    if extra == 6:
                        break
            queued = scrape(gw).get("chat_send_queue_bytes")
            assert queued > 250000, f"test setup: only {queued} bytes queued in the gateway"
            st["n"], st["queued"] = n, queued
            st["sig"] = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            assert await a.expect_closed(timeout=5 * SCALE) == 1001

        run(body(), timeout=60)
        # by now the drain closed the slow member too (its close frame waits behind the chats)
        time.sleep(max(0.0, st["sig"] + 1.0 - time.monotonic()))
        code, reason, before = slow.recv_close(timeout=5 * SCALE, max_frames=st["n"] + 10)
        texts = [json.loads(p)["text"][:5] for op, p in before
                 if op == rawws.OP_TEXT and json.loads(p)["type"] == "chat"]
        assert texts == [f"{i:05d}" for i in range(st["n"])], \
            f"the slow member got {len(texts)} of {st['n']} acked chats before its close frame " \
            f"({st['queued']:.0f} bytes were queued at SIGTERM)"
        assert code == 1001, f"close code {code} {reason!r}"
        slow.send_frame(rawws.OP_CLOSE, (1001).to_bytes(2, "big"))
    finally:
        slow.close()
    rc, _ = wait_exit(gw, 8 * SCALE)
    assert rc == 0
