"""Structured logs on stdout (docs/operations.md): one JSON object per line (the default when
stdout is not a terminal; --log-format text|json|auto), --log-level, the "connection opened" /
"connection closed" records with their documented fields and types, sampled "chat message"
records (--log-sample-messages, at most 100 per second, text only with --log-message-text), no
token in any record, SIGHUP toggling debug without dropping anything."""

import asyncio
import json
import os
import pty
import re
import select
import signal
import time

import pytest

import harness
import rawws
import tokens
import wsclient
from ophelpers import (TS_RE, is_int, launch, loose_records, scrape, stop_proc, strict_records,
                       ts_epoch, wait_until)
from wsclient import Client, run

SCALE = harness.TIMEOUT_SCALE
LEVELS = ("error", "warn", "info", "debug")


def records_with(gw, msg):
    return [r for r in loose_records(gw.stdout_text()) if r.get("msg") == msg]


def wait_records(gw, msg, n, timeout=5.0):
    return wait_until(lambda: (lambda rs: rs if len(rs) >= n else None)(records_with(gw, msg)),
                      timeout * SCALE, f"{n} {msg!r} record(s)")


def frame_bytes(payload_len, masked):
    hdr = 2 if payload_len < 126 else 4 if payload_len < 65536 else 10
    return payload_len + hdr + (4 if masked else 0)


class Counted:
    """A wsclient.Client whose frames are counted in bytes (client -> gateway, gateway ->
    client), so that bytes_in / bytes_out can be checked."""

    def __init__(self, c):
        self.c = c
        self.out_bytes = 0  # frames we sent
        self.in_bytes = 0  # frames we received
        orig_send, orig_recv = c.ws.send, c.ws.recv
        self.in_bytes += frame_bytes(len(json.dumps(c.welcome).encode()), False)

        async def send(data):
            b = data.encode() if isinstance(data, str) else data
            self.out_bytes += frame_bytes(len(b), True)
            await orig_send(data)

        async def recv():
            m = await orig_recv()
            self.in_bytes += frame_bytes(len(m.encode() if isinstance(m, str) else m), False)
            return m

        c.ws.send, c.ws.recv = send, recv


def check_common(rec, node, t_lo, t_hi):
    assert isinstance(rec.get("ts"), str) and TS_RE.match(rec["ts"]), \
        f"ts is not RFC 3339 UTC with ms: {rec}"
    t = ts_epoch(rec["ts"])
    assert t_lo - 2 <= t <= t_hi + 2, f"ts {rec['ts']} is not the time of the run: {rec}"
    assert rec.get("level") in LEVELS, f"level: {rec}"
    assert isinstance(rec.get("msg"), str) and rec["msg"], f"msg: {rec}"
    assert rec.get("node") == node, f"node: {rec}"


@pytest.mark.usefixtures("token_leak_check")
def test_connection_records(gateway_factory, auth_keys):
    k = auth_keys
    gw = gateway_factory(*k.args())
    t_lo = time.time()
    secret_text = "this-text-must-not-be-logged-8d1f"
    info = {}

    async def body():
        a = Counted(await tokens.connect(gw, k.mint("alice"), "/chat/logroom"))
        b = Counted(await tokens.connect(gw, k.mint("bob"), "/ws", carrier="query"))
        c = Counted(await tokens.connect(gw, k.mint("carol", name="Carol C"), "/ws",
                                         carrier="header"))
        t_open = time.monotonic()
        await a.c.chat_confirmed(secret_text)
        await b.c.join("logroom")
        await c.c.send({"type": "ping"})
        await c.c.recv()
        await asyncio.sleep(0.4)
        for x, name in ((a, "alice"), (b, "bob"), (c, "carol")):
            info[name] = {"conn": x.c.conn, "user": x.c.user}
        await a.c.recv_until_pong()
        await a.c.close()  # 1000
        info["alice"]["held_ms"] = (time.monotonic() - t_open) * 1000
        info["alice"]["sent"] = a.out_bytes + frame_bytes(2, True)  # + our close frame
        info["alice"]["got"] = a.in_bytes
        wsclient.check_system(await b.c.recv(), "logroom", "leave", "alice")
        b.c.abort()  # 1006
        info["bob"]["sent"], info["bob"]["got"] = b.out_bytes, b.in_bytes
        await c.c.close()
        info["carol"]["sent"] = c.out_bytes + frame_bytes(2, True)
        info["carol"]["got"] = c.in_bytes
        info["t_all"] = (time.monotonic() - t_open) * 1000

    run(body())
    closed = wait_records(gw, "connection closed", 3)
    t_hi = time.time()
    text = gw.stdout_text()
    recs = strict_records(text)  # every line: one JSON object, unique keys
    for r in recs:
        check_common(r, "t1", t_lo, t_hi)
        for who in info.values():
            if isinstance(who, dict):
                for v in (who["conn"], who["user"]):
                    assert v not in r["msg"], f"msg is not a constant: {r}"
    assert secret_text not in text, "the chat text reached the log without --log-message-text"

    opened = {r["conn"]: r for r in records_with(gw, "connection opened")}
    closed = {r["conn"]: r for r in closed}
    late = []  # checked last, so that the rest is known too
    assert len(opened) == 3 and len(closed) == 3, (opened, closed)
    for name, room in (("alice", "logroom"), ("bob", None), ("carol", None)):
        r = opened[info[name]["conn"]]
        assert r["user"] == name and r["remote"] == "127.0.0.1" and r["level"] == "info", r
        if room:
            assert r.get("room") == room, r
        elif "room" in r:
            late.append(f"'room' on a /ws connection (no room applies): {r}")
    expect_code = {"alice": 1000, "bob": 1006, "carol": 1000}
    for name, code in expect_code.items():
        r = closed[info[name]["conn"]]
        assert r["user"] == name and r["remote"] == "127.0.0.1" and r["level"] == "info", r
        assert r["code"] == code, f"{name}: code {r['code']!r}, expected {code}: {r}"
        assert isinstance(r.get("reason"), str) and r["reason"], r
        for f in ("duration_ms", "bytes_in", "bytes_out"):
            assert is_int(r.get(f)) and r[f] >= 0, f"{f} is not an integer >= 0: {r}"
        sent, got = info[name]["sent"], info[name]["got"]
        assert sent <= r["bytes_in"] <= sent + 8192, \
            f"{name}: bytes_in {r['bytes_in']}, the client sent {sent} bytes of frames"
        assert got <= r["bytes_out"] <= got + 2048, \
            f"{name}: bytes_out {r['bytes_out']}, the client received {got} bytes of frames"
        assert r["duration_ms"] <= info["t_all"] + 1000 * SCALE, r
    assert closed[info["alice"]["conn"]]["duration_ms"] >= info["alice"]["held_ms"] - 100, \
        (closed[info["alice"]["conn"]], info["alice"]["held_ms"])
    assert not late, "\n".join(late)


@pytest.mark.parametrize("ratio,with_text", [("1", False), ("1", True), ("0", False)],
                         ids=["all", "all-with-text", "none"])
def test_sampled_chat_records(gateway_factory, ratio, with_text):
    args = ["--log-sample-messages", ratio, "--rate-limit", "0", "--user-rate-limit", "0"]
    if with_text:
        args.append("--log-message-text")
    gw = gateway_factory(*args)
    texts = [f"héllo-{i}-ünïcode" for i in range(30)]
    who = {}

    async def body():
        a = await Client.open(gw, "/chat/sampled")
        who["conn"], who["user"] = a.conn, a.user
        for t in texts:
            await a.chat_confirmed(t)
        await a.close()

    run(body())
    wait_records(gw, "connection closed", 1)  # logged after every chat record
    recs = [r for r in strict_records(gw.stdout_text()) if r.get("msg") == "chat message"]
    if ratio == "0":
        assert recs == [], f"--log-sample-messages 0 logged {len(recs)} chat records"
        return
    assert len(recs) == len(texts), f"--log-sample-messages 1: {len(recs)} records for 30 chats"
    for r, t in zip(recs, texts):
        assert r["conn"] == who["conn"] and r["user"] == who["user"] and \
            r["room"] == "sampled", r
        assert is_int(r.get("bytes_in")) and r["bytes_in"] == len(t.encode()), \
            f"bytes_in {r.get('bytes_in')} for a {len(t.encode())}-byte text: {r}"
        if with_text:
            assert r.get("text") == t, r
        else:
            assert "text" not in r, f"text logged without --log-message-text: {r}"


async def blast(gw, n, window=50, a=None, start_at=None):
    """n chats as fast as acks allow (at most `window` in flight) from a (a new member of
    "blast" when None), starting when time.monotonic() % 1 passes start_at (if given); returns
    the seconds taken."""
    a = a or await Client.open(gw, "/chat/blast")
    if start_at is not None:
        frac = time.monotonic() % 1.0
        await asyncio.sleep((start_at - frac) % 1.0)
    t0 = time.monotonic()
    sent = acked = 0
    for _ in range(n * 4 + 100):
        while sent - acked < window and sent < n:
            await a.chat(f"m{sent}")
            sent += 1
        if acked == n:
            break
        f = await a.recv()
        if f["type"] == "ack":
            acked += 1
        else:
            assert f["type"] == "chat", f
    took = time.monotonic() - t0
    await a.close()
    return took


def test_chat_records_at_most_100_in_any_second(gateway_factory):
    """--log-sample-messages 1 and a burst of 600 chats within a fraction of a second: at most
    100 "chat message" records in any one-second span (by their time stamps). The burst starts
    just before a whole second of CLOCK_MONOTONIC (the clock of event-loop timers), where a
    limiter that counts per whole second of that clock would let 200 through."""
    gw = gateway_factory("--log-sample-messages", "1", "--rate-limit", "0",
                         "--user-rate-limit", "0")
    n = 600

    async def body():
        a = await Client.open(gw, "/chat/blast")
        return await blast(gw, n, a=a, start_at=0.95)

    took = run(body())
    wait_records(gw, "connection closed", 1)
    recs = [r for r in loose_records(gw.stdout_text()) if r.get("msg") == "chat message"]
    ts = sorted(ts_epoch(r["ts"]) for r in recs)
    assert len(ts) >= 100, f"only {len(ts)} chat records for {n} chats (ratio 1)"
    busiest = max(sum(1 for u in ts[i:] if u < t + 1.0) for i, t in enumerate(ts))
    assert busiest <= 100, \
        f"{busiest} chat records within one second ({len(ts)} in all, for {n} chats sent in " \
        f"{took:.2f}s, first at {ts[0]:.3f}, last at {ts[-1]:.3f}): the cap is 100 per second"


def test_sample_ratio(gateway_factory):
    gw = gateway_factory("--log-sample-messages", "0.1", "--rate-limit", "0",
                         "--user-rate-limit", "0")
    run(blast(gw, 400))
    wait_records(gw, "connection closed", 1)
    n = len(records_with(gw, "chat message"))
    assert 15 <= n <= 70, f"--log-sample-messages 0.1 logged {n} of 400 chats (expected ~40)"


def refuse_one(gw):
    resp = rawws.http_exchange(gw.port, rawws.upgrade_request("/nope", port=gw.port))
    assert resp.status == 404, resp


async def open_close(gw):
    c = await Client.open(gw, "/chat/lv")
    await c.chat_confirmed("x")
    await c.close()


@pytest.mark.parametrize("level", ["error", "warn", "info", "debug", None])
def test_log_level(gateway_factory, level):
    gw = gateway_factory(*(["--log-level", level] if level else []))
    refuse_one(gw)  # a debug record where the gateway logs refusals at debug
    run(open_close(gw))
    if level in (None, "info", "debug"):
        wait_records(gw, "connection closed", 1)
    else:
        time.sleep(0.3)
    recs = strict_records(gw.stdout_text())
    allowed = LEVELS[:LEVELS.index(level or "info") + 1]
    bad = [r for r in recs if r["level"] not in allowed]
    assert not bad, f"--log-level {level}: records of other levels: {bad[:3]}"
    msgs = {r["msg"] for r in recs}
    if level in ("error", "warn"):
        assert "connection opened" not in msgs and "connection closed" not in msgs
    else:
        assert {"connection opened", "connection closed"} <= msgs
    if level == "debug":
        assert any(r["level"] == "debug" for r in recs), "--log-level debug: no debug record"


def test_text_format(gateway_factory):
    gw = gateway_factory("--log-format", "text")
    run(open_close(gw))
    wait_until(lambda: "connection closed" in gw.stdout_text(), 5 * SCALE, "a close record")
    lines = [x for x in gw.stdout_text().splitlines() if x]
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        assert not isinstance(obj, dict), f"--log-format text wrote a JSON object: {line}"
    opened = [x for x in lines if "connection opened" in x]
    assert len(opened) == 1 and re.search(r" conn=t1-\d+ ", opened[0]) and \
        " user=guest-t1-" in opened[0] and opened[0].endswith("room=lv"), opened
    assert TS_RE.match(opened[0].split()[0]), opened


TEXT_LINE_RE = re.compile(
    rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (error|warn |info |debug) \S")
TEXT_ESCAPES = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b'"': b'"', b"\\": b"\\"}


def text_field(line, key):
    """The bytes of field `key` of a text record line (bytes), read back from the quoting of
    docs/operations.md (\\n \\t \\r \\" \\\\ \\xNN); None when absent."""
    m = re.search(rb" " + key.encode() + rb'=(?:"((?:[^"\\]|\\.)*)"|([^ "]*))', line)
    if m is None:
        return None
    if m.group(2) is not None:
        return m.group(2)
    raw, out, i = m.group(1), bytearray(), 0
    while i < len(raw):
        if raw[i:i + 1] != b"\\":
            out += raw[i:i + 1]
            i += 1
        elif raw[i + 1:i + 2] == b"x":
            out.append(int(raw[i + 2:i + 4], 16))
            i += 4
        else:
            out += TEXT_ESCAPES[raw[i + 1:i + 2]]
            i += 2
    return bytes(out)


@pytest.mark.usefixtures("token_leak_check")
def test_text_format_escapes_token_values(gateway_factory, auth_keys):
    """A token's sub is the client's choice: with --log-format text, newlines, tabs, terminal
    escapes and a whole fake record in it stay inside one quoted, escaped value. One sub has no
    space (it used to be written raw), the other spaces, quotes, '=', a backslash and DEL."""
    k = auth_keys
    gw = gateway_factory("--log-format", "text", *k.args(hs=("k1",), pub=()))
    subs = {
        "bare": "mal\nlory\tx\x1b[31mred\x1b[0m\nlevel=error\tmsg=forged-record-1\r\n"
                "2026-01-01T00:00:00.000Z\terror\tforged-record-1",
        "spaced": "eve \"q\" a=b \\ \x7f\x07\x1b]0;title\x07\r\n"
                  "2026-01-01T00:00:00.000Z error forged-record-2 level=error msg=owned",
    }
    conns = {}

    async def body():
        for what, sub in subs.items():
            c = await tokens.connect(gw, k.mint(sub=sub), f"/chat/esc-{what}")
            assert c.user == sub, c.welcome
            conns[what] = c.conn
            await c.close()

    run(body())
    wait_until(lambda: gw.stdout_text().count("connection closed") >= 2, 5 * SCALE,
               "two close records")
    raw = (gw.workdir / "stdout.txt").read_bytes()
    bad = sorted({b for b in raw if (b < 0x20 and b != 0x0a) or b == 0x7f})
    assert not bad, f"raw control bytes {[hex(b) for b in bad]} in the text log: {raw!r}"
    lines = [x for x in raw.split(b"\n") if x]
    for line in lines:
        assert TEXT_LINE_RE.match(line), f"a line that is not a record of its own: {line!r}"
        assert not line.startswith(b"2026-01-01T00:00:00.000Z"), f"forged record: {line!r}"
    for i, (what, sub) in enumerate(subs.items(), 1):
        mine = [x for x in lines if f" conn={conns[what]} ".encode() in x]
        opened = [x for x in mine if b" connection opened " in x]
        closed = [x for x in mine if b" connection closed " in x]
        assert len(opened) == 1 and len(closed) == 1, (what, mine)
        marker = f"forged-record-{i}".encode()
        assert [x for x in lines if marker in x] == opened + closed, \
            f"{what}: the forged text is not inside exactly its two records: {lines}"
        for line in opened + closed:
            assert text_field(line, "user") == sub.encode(), \
                f"{what}: user does not read back to the token's sub: {line!r}"
        assert text_field(opened[0], "room") == f"esc-{what}".encode(), opened
        assert re.search(rb" code=1000 ", closed[0]), closed
    assert b' user="mal\\nlory\\tx\\x1b[31mred\\x1b[0m\\nlevel=error\\tmsg=' in raw, raw


def test_json_explicit_and_auto_on_a_terminal(gateway_factory, tmp_path):
    gw = gateway_factory("--log-format", "json")
    run(open_close(gw))
    wait_records(gw, "connection closed", 1)
    strict_records(gw.stdout_text())
    # auto (the default) with a terminal on stdout: text
    master, slave = pty.openpty()
    port = harness.free_port()
    proc = None
    try:
        proc = launch(tmp_path / "tty", ["--listen", f"127.0.0.1:{port}", "--node-id", "t1",
                                         "--admin-listen", f"127.0.0.1:{harness.free_port()}",
                                         "--drain-delay", "0"], stdout=slave, wait_port=port)
        os.close(slave)
        slave = None
        out = b""
        deadline = time.monotonic() + 5 * SCALE
        for _ in range(1000):
            if b"listening" in out or time.monotonic() > deadline:
                break
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break
        line = [x for x in out.decode(errors="replace").splitlines() if "listening" in x]
        assert line, f"no 'listening' record on the terminal: {out!r}"
        assert not line[0].lstrip().startswith("{"), \
            f"--log-format auto wrote JSON to a terminal: {line[0]!r}"
    finally:
        if slave is not None:
            os.close(slave)
        if proc is not None:
            assert stop_proc(proc) == 0
        os.close(master)


def test_sighup_toggles_debug_and_keeps_connections(gateway_factory):
    gw = gateway_factory()

    def debug_records():
        return [r for r in loose_records(gw.stdout_text()) if r.get("level") == "debug"]

    def level_changes():
        return records_with(gw, "log level changed")

    async def body():
        a = await Client.open(gw, "/chat/hup")
        b = await Client.open(gw, "/chat/hup")
        await a.recv_type("system")
        m0 = scrape(gw)
        # info: a refusal leaves no debug record (a later info record is the barrier)
        refuse_one(gw)
        x = await Client.open(gw, "/ws")
        await x.close()
        wait_records(gw, "connection closed", 1)
        assert debug_records() == [], debug_records()

        os.kill(gw.pid, signal.SIGHUP)
        wait_until(lambda: len(level_changes()) == 1, 5 * SCALE, "a 'log level changed' record")
        refuse_one(gw)
        wait_until(lambda: debug_records(), 5 * SCALE, "a debug record after SIGHUP")
        ack, _ = await a.chat_confirmed("after the first SIGHUP")
        assert (await b.recv_type("chat"))["id"] == ack["id"]

        os.kill(gw.pid, signal.SIGHUP)
        wait_until(lambda: len(level_changes()) == 2, 5 * SCALE, "a second 'log level changed'")
        n_debug = len(debug_records())
        refuse_one(gw)
        y = await Client.open(gw, "/ws")
        await y.close()
        wait_records(gw, "connection closed", 2)
        assert len(debug_records()) == n_debug, \
            f"debug records after the second SIGHUP: {debug_records()[n_debug:]}"
        ack, _ = await a.chat_confirmed("after the second SIGHUP")
        assert (await b.recv_type("chat"))["id"] == ack["id"]
        m1 = scrape(gw)
        # nothing dropped: a and b never closed, and both are still counted
        assert m1.get("chat_connections") == 2
        assert sum(v for _, v in m1.series("chat_connections_closed_total")) - \
            sum(v for _, v in m0.series("chat_connections_closed_total")) == 2  # x and y
        await a.close()
        await b.close()

    run(body())
    changes = level_changes()
    assert len(changes) == 2
    # the records themselves: the record's own level is its severity, the new level is another
    # field; every line must still be one JSON object with unique keys
    strict_records(gw.stdout_text())
    for r in changes:
        assert r["level"] in ("info", "warn"), r


def test_remote_from_trusted_proxy_only(gateway_factory):
    """remote is the TCP peer, or the X-Forwarded-For client when the peer is a trusted
    proxy."""
    trusting = gateway_factory("--trusted-proxies", "127.0.0.0/8")
    plain = gateway_factory(node_id="t2")

    async def body():
        for gw in (trusting, plain):
            c = await Client.open(gw, "/chat/xff", extra_headers={"X-Forwarded-For":
                                                                  "198.51.100.7"})
            await c.close()

    run(body())
    got = {}
    for gw in (trusting, plain):
        recs = wait_records(gw, "connection closed", 1)
        got[gw.node_id] = (records_with(gw, "connection opened")[0]["remote"], recs[0]["remote"])
    assert got == {"t1": ("198.51.100.7",) * 2, "t2": ("127.0.0.1",) * 2}, got


def test_remote_is_reformatted_and_zone_ids_refused(gateway_factory):
    """What is logged as remote comes from the parsed address, never the header's text: an IPv6
    address is written in its canonical form, and an entry with a zone id (fe80::1%<anything>,
    free text up to the next comma) stops the walk, so the peer's address stands."""
    gw = gateway_factory("--trusted-proxies", "127.0.0.0/8")
    cases = [
        ("2001:DB8:0:0::0001", "2001:db8::1"),
        ("fe80::1%eth0", "127.0.0.1"),
        ('fe80::1%" level=error msg=forged', "127.0.0.1"),
        ("fe80::1%25x, 198.51.100.9", "198.51.100.9"),  # the rightmost entry is the client
        ("198.51.100.9, fe80::1%x", "127.0.0.1"),
    ]

    async def body():
        for xff, _ in cases:
            c = await Client.open(gw, "/ws", extra_headers={"X-Forwarded-For": xff})
            await c.close()

    run(body())
    recs = wait_records(gw, "connection closed", len(cases))
    got = [r["remote"] for r in records_with(gw, "connection opened")]
    assert got == [want for _, want in cases], got
    assert all(r["remote"] == want for r, (_, want) in zip(recs, cases)), recs
    assert "forged" not in gw.stdout_text()
