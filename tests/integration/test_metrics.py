"""GET /metrics on the admin listener (docs/operations.md): Prometheus text 0.0.4, every family
declared on a fresh node, and the exact counter deltas of scripted scenarios.

The expectations come from what the clients did and saw (every frame a client sent or received
is tallied by type), and are also checked against numbers worked out by hand for the script.
"""

import asyncio
import collections
import json
import os
import subprocess
import time

import pytest

import harness
import rawws
import tokens
import wsclient
from ophelpers import (AUTH_REASONS, DELIVERED_TYPES, FAMILIES, RATE_BUCKETS, RECEIVED_TYPES,
                       delta, deltas, label_deltas, readyz, scrape, wait_until)
from ophelpers import own_redis  # noqa: F401  (fixture)
from wsclient import check_joined, Client, run

SCALE = harness.TIMEOUT_SCALE
KNOWN_IN = {"join", "leave", "chat", "typing", "ping", "refresh"}
JOINS = 24


# ---- tallies of what clients sent and received ---------------------------------------------------

class Tally:
    def __init__(self):
        self.sent = collections.Counter()  # by received-type label (what the gateway must count)
        self.got = collections.Counter()  # frames received, by type


def tally(c, t):
    """Counts every frame c sends (as the gateway's received{type} label) and receives (by
    type) into the Tally t."""
    orig_recv, orig_send = c.recv, c.send

    async def recv(timeout=wsclient.TIMEOUT):
        f = await orig_recv(timeout)
        t.got[f["type"]] += 1
        return f

    async def send(obj):
        kind = obj.get("type") if isinstance(obj, dict) else None
        t.sent[kind if kind in KNOWN_IN else "invalid"] += 1
        await orig_send(obj)

    c.recv, c.send = recv, send
    return c


async def burst_responses(c, n, timeout=wsclient.TIMEOUT):
    """Reads exactly n frames (bounded)."""
    return [await c.recv(timeout) for _ in range(n)]


# ---- a fresh node --------------------------------------------------------------------------------

def version_of_binary():
    out = subprocess.run([harness.require_bin(), "--version"], capture_output=True, text=True,
                         timeout=10 * SCALE, env=harness.gateway_env()).stdout
    return out


def test_every_family_declared_on_a_fresh_node(gateway_factory):
    gw = gateway_factory()
    m = scrape(gw)
    for name, typ in FAMILIES.items():
        assert name in m.families, f"family {name} is not declared on a fresh node"
        fam = m.families[name]
        assert fam.get("help"), f"{name} has no (or an empty) # HELP line"
        assert fam.get("type") == typ, f"{name}: # TYPE {fam.get('type')}, expected {typ}"
    extra = sorted(n for n in m.families if not n.startswith("chat_"))
    assert not extra, f"families outside the chat_ namespace: {extra}"

    # nothing happened yet: every counter is zero, the gauges say "idle"
    for (name, labels), v in m.samples.items():
        fam = name if name in FAMILIES else name.rsplit("_", 1)[0]
        if FAMILIES.get(fam) in ("counter", "histogram"):
            assert v == 0, f"{name}{dict(labels)} = {v} on a fresh node"
    for name in ("chat_connections", "chat_rooms", "chat_send_queue_bytes"):
        assert m.get(name, None) == 0, f"{name} = {m.get(name, None)} on a fresh node"
    assert m.get("chat_broker_connected", None) == 1, "memory broker: chat_broker_connected 1"
    info = m.series("chat_build_info")
    assert len(info) == 1 and info[0][1] == 1 and set(info[0][0]) == {"version"}, info
    version = info[0][0]["version"]
    assert version and version in version_of_binary(), \
        f"chat_build_info version {version!r} is not in --version output {version_of_binary()!r}"

    # the histogram is complete before its first observation
    buckets = m.series("chat_delivery_latency_seconds_bucket")
    les = [lbl["le"] for lbl, _ in buckets]
    assert les and les[-1] == "+Inf", f"bucket le values {les} do not end with +Inf"
    bounds = [float(x) for x in les[:-1]]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), les
    assert m.has("chat_delivery_latency_seconds_sum")
    assert m.has("chat_delivery_latency_seconds_count")

    # the labelled families that have a fixed label set show it at zero
    for name, label, values in (("chat_messages_received_total", "type", RECEIVED_TYPES),
                                ("chat_messages_delivered_total", "type", DELIVERED_TYPES),
                                ("chat_rate_limited_total", "bucket", RATE_BUCKETS),
                                ("chat_auth_failures_total", "reason", AUTH_REASONS)):
        for v in values:
            assert m.has(name, **{label: v}), f"{name}{{{label}=\"{v}\"}} is missing"
    assert m.has("chat_messages_dropped_total", reason="send_queue_full")

    # the process gauges describe this process
    rss = m.get("chat_process_resident_memory_bytes")
    real = gw.rss_bytes()
    assert real / 2 <= rss <= real * 2, f"resident memory {rss} vs VmRSS {real}"
    fds = m.get("chat_process_open_fds")
    real_fds = len(os.listdir(f"/proc/{gw.pid}/fd"))
    assert abs(fds - real_fds) <= 3, f"open fds {fds} vs /proc/{gw.pid}/fd: {real_fds}"


def test_metrics_only_on_the_admin_listener(gateway_factory):
    gw = gateway_factory()
    resp = rawws.http_exchange(gw.port, rawws.plain_request("/metrics", port=gw.port))
    assert resp.status == 404, f"GET /metrics on the public port answered {resp}"
    for path in ("/healthz", "/readyz"):
        resp = rawws.http_exchange(gw.port, rawws.plain_request(path, port=gw.port))
        assert resp.status == 404, f"GET {path} on the public port answered {resp}"


# ---- the scripted scenario -----------------------------------------------------------------------

@pytest.mark.usefixtures("token_leak_check")
def test_scripted_scenario_exact_deltas(gateway_factory, auth_keys):
    """A scripted session on a node with keys and tight rate limits; every counter the issue
    names must move by exactly what happened."""
    k = auth_keys
    gw = gateway_factory(*k.args(), "--rate-limit", "1", "--rate-burst", "20",
                         "--user-rate-limit", "1", "--user-rate-burst", "30",
                         "--max-rooms-per-conn", "2")
    t = Tally()
    m0 = scrape(gw)
    obs = {}
    minted = {}

    def tok(sub, **kw):
        minted[sub] = k.mint(sub, **kw)
        return minted[sub]

    async def body():
        # three members; alice and bob join "lobby" by path, carol opens /ws
        alice = tally(await tokens.connect(gw, tok("alice"), "/chat/lobby"), t)
        bob = tally(await tokens.connect(gw, tok("bob"), "/chat/lobby", carrier="header"), t)
        carol = tally(await tokens.connect(gw, tok("carol"), "/ws", carrier="query"), t)
        wsclient.check_system(await alice.recv(), "lobby", "join", "bob")

        await carol.join("lobby")
        for c in (alice, bob):
            wsclient.check_system(await c.recv(), "lobby", "join", "carol")

        for i in range(3):
            ack, copy = await alice.chat_confirmed(f"hello {i}", room="lobby")
            for c in (bob, carol):
                f = await c.recv()
                assert f["type"] == "chat" and f["id"] == ack["id"], f

        await bob.send({"type": "typing", "room": "lobby"})
        for c in (alice, carol):
            f = await c.recv()
            assert f["type"] == "typing" and f["user"] == "bob", f

        await carol.send({"type": "ping"})
        assert await carol.recv() == {"type": "pong"}
        await carol.send("this is not JSON")
        await carol.error("bad_json")
        await carol.send({"type": "bogus"})
        await carol.error("unknown_type")
        await carol.send({"type": "join", "room": "private:ops"})
        await carol.error("forbidden")
        await carol.leave("lobby")
        for c in (alice, bob):
            wsclient.check_system(await c.recv(), "lobby", "leave", "carol")

        await alice.send({"type": "refresh", "token": tok("alice")})
        f = await alice.recv()
        assert f["type"] == "refreshed", f

        # dave: typing, join and message buckets, all sent back to back
        dave = tally(await tokens.connect(gw, tok("dave"), "/chat/side"), t)
        for i in range(6):
            await dave.send({"type": "typing", "room": "side", "cid": f"t{i}"})
        for i in range(JOINS):  # the join bucket: burst 20 at least (2 x rooms per connection)
            await dave.send({"type": "join", "room": "side", "cid": f"j{i}"})
        for i in range(25):
            await dave.send({"type": "ping", "cid": f"p{i}"})
        rl = collections.Counter()
        joins = pongs = 0
        for _ in range(200):
            if joins == JOINS and pongs == 25:
                break
            f = await dave.recv()
            if f["type"] == "error":
                assert f["code"] == "rate_limited", f
                rl[f["cid"][0]] += 1
                if f["cid"][0] == "j":
                    joins += 1
                elif f["cid"][0] == "p":
                    pongs += 1
            elif f["type"] == "joined" and check_joined(f, "side"):
                joins += 1
            elif f == {"type": "pong"}:
                pongs += 1
            else:
                raise AssertionError(f"dave: unexpected {f}")
        assert (joins, pongs) == (JOINS, 25)
        obs["typing"], obs["join"], obs["message"] = rl["t"], rl["j"], rl["p"]
        for b in ("typing", "join", "message"):
            assert obs[b] >= 1, f"no {b} rate limit hit (observed {dict(rl)}): the script is off"

        # erin: two connections of one user share the user bucket (burst 30)
        erin1 = tally(await tokens.connect(gw, tok("erin"), "/ws"), t)
        erin2 = tally(await tokens.connect(gw, tok("erin"), "/ws"), t)
        for i in range(20):
            await erin1.send({"type": "ping", "cid": f"a{i}"})
        got1 = await burst_responses(erin1, 20)
        assert got1 == [{"type": "pong"}] * 20, got1
        for i in range(12):
            await erin2.send({"type": "ping", "cid": f"b{i}"})
        got2 = await burst_responses(erin2, 12)
        obs["user"] = sum(1 for f in got2 if f.get("code") == "rate_limited")
        assert all(f == {"type": "pong"} or f.get("code") == "rate_limited" for f in got2), got2
        assert obs["user"] >= 1, f"no user-bucket refusal: {got2}"

        mid = scrape(gw)
        assert mid.get("chat_connections") == 6, mid.get("chat_connections")
        assert mid.get("chat_rooms") == 2, mid.get("chat_rooms")

        # refusals before the upgrade
        now = int(time.time())
        tokens.refused(gw, 401, "missing_token")
        bad = tokens.forge({"alg": "HS256", "kid": "k1"}, tokens.claims("mallory"),
                           tokens.hmac_signer("another-secret-0123456789abcdef"))
        tokens.refused(gw, 401, "invalid_token", tok=bad)
        tokens.refused(gw, 401, "expired", tok=k.mint("frank", exp=now - 3600))
        tokens.refused(gw, 403, "forbidden", path="/chat/private:ops", tok=tok("alice"))
        for req, status, error in (
                (rawws.upgrade_request("/nope", port=gw.port), 404, "not_found"),
                (rawws.upgrade_request("/chat/bad!room", port=gw.port), 400, "bad_request"),
                (rawws.upgrade_request("/ws", port=gw.port, ws_version="12"), 426,
                 "upgrade_required"),
                (rawws.upgrade_request("/ws", method="POST", port=gw.port), 405,
                 "method_not_allowed")):
            rawws.check_json_refusal(rawws.http_exchange(gw.port, req), status, error)
        demo = rawws.http_exchange(gw.port, rawws.plain_request("/", port=gw.port))
        assert demo.status == 200, demo  # the demo page is not a refusal

        # closes: 1000 (alice), 3000 echoed (bob), 1006 (carol), 1003 (dave), 1000 x2 (erin)
        await alice.ws.close()
        assert alice.ws.close_code == 1000, alice.ws.close_code
        wsclient.check_system(await bob.recv(), "lobby", "leave", "alice")
        await bob.ws.close(code=3000)
        assert bob.ws.close_code == 3000, \
            f"the gateway answered bob's 3000 with {bob.ws.close_code}"
        carol.abort()
        await dave.ws.send(b"\x00binary")
        assert await dave.expect_closed() == 1003
        await erin1.close()
        await erin2.close()

    run(body(), timeout=60)

    def all_closed():
        m = scrape(gw)
        return m if m.get("chat_connections") == 0 and \
            m.get("chat_connections_opened_total") - sum(
                v for _, v in m.series("chat_connections_closed_total")) == 0 else None

    m1 = wait_until(all_closed, 5 * SCALE, "every connection counted as closed")

    # connections
    assert delta(m1, m0, "chat_connections_opened_total") == 6
    assert label_deltas(m1, m0, "chat_connections_closed_total", "code") == \
        {"1000": 3, "3000": 1, "1006": 1, "1003": 1}
    # messages from clients: what the clients sent, and what the script says they sent
    got_in = deltas(m1, m0, "chat_messages_received_total", "type", RECEIVED_TYPES)
    assert got_in == {ty: t.sent[ty] for ty in RECEIVED_TYPES}, \
        f"received by type {got_in}, the clients sent {dict(t.sent)}"
    assert t.sent["chat"] == 3 and t.sent["typing"] == 7 and t.sent["join"] == 2 + JOINS and \
        t.sent["leave"] == 1 and t.sent["invalid"] == 2 and t.sent["refresh"] == 1, t.sent
    # frames queued to clients: exactly what the clients received
    got_out = deltas(m1, m0, "chat_messages_delivered_total", "type", DELIVERED_TYPES)
    assert got_out == {ty: t.got[ty] for ty in DELIVERED_TYPES}, \
        f"delivered by type {got_out}, the clients received {dict(t.got)}"
    assert got_out == {"chat": 9, "typing": 2, "system": 6}, got_out
    assert delta(m1, m0, "chat_messages_dropped_total", reason="send_queue_full") == 0
    # rate limits: what the clients were told
    assert deltas(m1, m0, "chat_rate_limited_total", "bucket", RATE_BUCKETS) == obs, \
        f"rate limited {deltas(m1, m0, 'chat_rate_limited_total', 'bucket', RATE_BUCKETS)}, " \
        f"the clients saw {obs}"
    # auth failures and refusals
    assert deltas(m1, m0, "chat_auth_failures_total", "reason", AUTH_REASONS) == \
        {"missing_token": 1, "invalid_token": 1, "expired": 1, "forbidden": 2}
    assert label_deltas(m1, m0, "chat_handshake_rejected_total", "status") == \
        {"401": 3, "403": 1, "404": 1, "400": 1, "426": 1, "405": 1}
    # rooms and the broker
    assert label_deltas(m1, m0, "chat_room_messages_total", "room") == {"lobby": 3}
    typing_published = 1 + (6 - obs["typing"])
    # joins: alice, bob, carol, dave; leaves: carol, alice. The last leave of each room (bob in
    # lobby, dave in side) is not published: nobody else is in the room by then.
    system_published = 6
    published = 3 + typing_published + system_published
    assert delta(m1, m0, "chat_broker_published_total") == published
    # every publication comes back (the rooms linger, still subscribed, after their last member)
    assert delta(m1, m0, "chat_broker_received_total") == published
    assert delta(m1, m0, "chat_broker_publish_errors_total") == 0
    assert delta(m1, m0, "chat_broker_reconnects_total") == 0
    # latency: one observation per broker message delivered on the node; at least the 8 with a
    # recipient (3 chats, bob's typing, 4 notices), at most every message the node received
    lat = delta(m1, m0, "chat_delivery_latency_seconds_count")
    assert 8 <= lat <= published, f"latency observations {lat}"
    assert m1.get("chat_delivery_latency_seconds_bucket", le="+Inf") == \
        m1.get("chat_delivery_latency_seconds_count")
    assert m1.get("chat_broker_connected") == 1
    # gauges back at rest
    assert m1.get("chat_connections") == 0
    assert m1.get("chat_rooms") == 0
    assert m1.get("chat_send_queue_bytes") == 0
    # no user id or token in any label
    secrets_ = ["alice", "bob", "carol", "dave", "erin", "frank", "mallory", "guest-"]
    secrets_ += list(minted.values())
    for value in m1.label_values():
        for s in secrets_:
            assert s not in value, f"label value {value!r} carries {s[:20]!r}"


# ---- the top-rooms cap ---------------------------------------------------------------------------

def test_top_rooms_cap_and_other(gateway_factory):
    rooms = [f"busy-{i:02d}" for i in range(60)]
    gw = gateway_factory("--metrics-top-rooms", "50", "--rate-limit", "0",
                         "--user-rate-limit", "0")
    sent = collections.Counter()
    m0 = scrape(gw)

    async def body():
        a = await Client.open(gw, "/ws")
        for r in rooms:
            await a.join(r)
        for i, r in enumerate(rooms):
            for j in range(1 + i % 3):
                await a.chat_confirmed(f"m{j}", room=r)
                sent[r] += 1
        await a.close()

    run(body(), timeout=60)
    m1 = scrape(gw)
    total = sum(sent.values())
    assert total == 120
    series = label_deltas(m1, m0, "chat_room_messages_total", "room")
    named = {r: v for r, v in series.items() if r not in ("_other", "_private")}
    assert len(m1.series("chat_room_messages_total")) <= 52, \
        f"{len(m1.series('chat_room_messages_total'))} series of chat_room_messages_total"
    assert 1 <= len(named) <= 50, f"{len(named)} room labels with --metrics-top-rooms 50"
    assert series.get("_other", 0) > 0, f"60 busy rooms, cap 50, but no _other: {series}"
    assert sum(series.values()) == total, \
        f"sum over room labels {sum(series.values())} != chats sent {total}"
    for r, v in named.items():
        assert r in sent, f"unknown room label {r!r}"
        assert v <= sent[r], f"room {r}: counted {v}, sent {sent[r]}"
    assert delta(m1, m0, "chat_messages_received_total", type="chat") == total



ROOM_SERIES = "chat_room_messages_total"
AGGREGATES = ("_other", "_private")


def room_values(m):
    """{room label: value} of chat_room_messages_total in one scrape."""
    return m.by_label(ROOM_SERIES, "room")


def test_busy_rooms_after_quiet_ones_get_their_series(gateway_factory):
    """--metrics-top-rooms 5: five quiet rooms take the five slots with one chat each, then
    three rooms send 50 chats each. The busy rooms take the places of three quiet ones and each
    gets a series holding all its 50 chats (the old first-come slots left them in _other); the
    three evicted quiet rooms' counts move to _other. In every scrape along the way the sum over
    the room series is the number of chats sent, there are at most 5 room series plus _other and
    _private, and no series goes down."""
    gw = gateway_factory("--metrics-top-rooms", "5", "--rate-limit", "0",
                         "--user-rate-limit", "0")
    quiet = [f"quiet-{i}" for i in range(5)]
    busy = ["busy-a", "busy-b", "busy-c"]
    m0 = scrape(gw)
    scrapes = [(0, m0)]

    async def body():
        a = await Client.open(gw, "/ws")
        for r in quiet + busy:
            await a.join(r)
        sent = 0
        for r in quiet:
            await a.chat_confirmed("hi", room=r)
            sent += 1
            scrapes.append((sent, scrape(gw)))
        for r in busy:
            for i in range(50):
                await a.chat_confirmed(f"m{i}", room=r)
                sent += 1
                if i % 10 == 9:
                    scrapes.append((sent, scrape(gw)))
        await a.close()

    run(body(), timeout=60)
    m1 = scrapes[-1][1]
    vals = room_values(m1)
    for r in busy:
        assert vals.get(r) == 50, f"busy room {r}: {vals.get(r)} in {vals}"
    kept = {r: v for r, v in vals.items() if r in quiet}
    assert len(kept) == 2 and set(kept.values()) == {1}, \
        f"expected two quiet rooms left with 1 each, got {kept}"
    assert vals.get("_other") == 3, f"the three evicted quiet rooms' chats: {vals}"
    assert vals.get("_private") == 0, vals
    prev = {}
    for sent, m in scrapes:
        vals = room_values(m)
        assert sum(vals.values()) == sent, \
            f"after {sent} chats the room series sum to {sum(vals.values())}: {vals}"
        named = {r: v for r, v in vals.items() if r not in AGGREGATES}
        assert len(named) <= 5 and set(AGGREGATES) <= set(vals), vals
        assert set(named) <= set(quiet + busy), f"unknown room labels in {vals}"
        for r, v in vals.items():
            # no room comes back after losing its series in this script: nothing may go down
            assert v >= prev.get(r, 0), f"{r} went from {prev[r]} to {v} (after {sent} chats)"
        prev = vals
    assert delta(m1, m0, "chat_messages_received_total", type="chat") == 155


@pytest.mark.usefixtures("token_leak_check")
def test_dm_and_private_rooms_never_get_a_series(gateway_factory, auth_keys):
    """dm: and private: rooms count into room="_private", even while slots are free: their names
    carry user ids or show who is in them. Public rooms still get theirs."""
    k = auth_keys
    gw = gateway_factory(*k.args(), "--metrics-top-rooms", "50", "--rate-limit", "0",
                         "--user-rate-limit", "0")
    m0 = scrape(gw)
    skip = ("chat", "system")

    async def body():
        a = await tokens.connect(gw, k.mint("alice", rooms=["private:ops"]))
        b = await tokens.connect(gw, k.mint("bob"))
        await a.join("private:ops")
        await a.join("dm:alice:bob")
        await b.join("dm:alice:bob", skip=skip)
        await a.join("lobby", skip=skip)
        for i in range(3):
            await a.chat_confirmed(f"ops {i}", room="private:ops", skip=skip)
        for i in range(2):
            await a.chat_confirmed(f"to bob {i}", room="dm:bob:alice", skip=skip)
            await b.chat_confirmed(f"to alice {i}", room="dm:alice:bob", skip=skip)
        for i in range(2):
            await a.chat_confirmed(f"lobby {i}", room="lobby", skip=skip)
        await a.close()
        await b.close()

    run(body(), timeout=30)
    m1 = scrape(gw)
    vals = room_values(m1)
    for r in vals:
        assert not r.startswith(("dm:", "private:")), f"a series for {r!r}: {vals}"
        assert "alice" not in r and "bob" not in r, f"a user id in room label {r!r}"
    for value in m1.label_values():
        assert "alice" not in value and "bob" not in value, f"label value {value!r}"
    assert label_deltas(m1, m0, ROOM_SERIES, "room") == {"_private": 7, "lobby": 2}
    assert sum(vals.values()) == 9 == delta(m1, m0, "chat_messages_received_total",
                                            type="chat")


def test_rooms_named_like_the_aggregate_series(gateway_factory):
    """Public rooms may be named "_other" or "_private": they count into _other, so the
    exposition never has two series with one label set (the old code gave "_other" a second
    one, and the scrape did not parse)."""
    gw = gateway_factory("--metrics-top-rooms", "50", "--rate-limit", "0",
                         "--user-rate-limit", "0")
    m0 = scrape(gw)

    async def body():
        a = await Client.open(gw, "/ws")
        for r in ("_other", "_private", "_others"):
            await a.join(r)
        for r, n in (("_other", 2), ("_private", 3), ("_others", 1)):
            for i in range(n):
                await a.chat_confirmed(f"m{i}", room=r)
        await a.close()

    run(body(), timeout=30)
    m1 = scrape(gw)  # parses: no duplicate series
    assert label_deltas(m1, m0, ROOM_SERIES, "room") == {"_other": 5, "_others": 1}
    assert len(m1.series(ROOM_SERIES)) == 3, m1.series(ROOM_SERIES)

# ---- the delivery latency histogram --------------------------------------------------------------

def check_histogram(m1, m0, expected_count, what):
    name = "chat_delivery_latency_seconds"
    buckets = m1.series(name + "_bucket")
    les = [lbl["le"] for lbl, _ in buckets]
    vals = [v for _, v in buckets]
    assert les[-1] == "+Inf"
    assert vals == sorted(vals), f"{what}: buckets are not cumulative: {list(zip(les, vals))}"
    assert vals[-1] == m1.get(name + "_count"), \
        f"{what}: +Inf bucket {vals[-1]} != _count {m1.get(name + '_count')}"
    count = delta(m1, m0, name + "_count")
    assert count == expected_count, \
        f"{what}: _count moved by {count}, expected {expected_count} broker messages delivered"
    d = [m1.get(name + "_bucket", le=le) - m0.get(name + "_bucket", le=le) for le in les]
    assert d == sorted(d) and d[-1] == count, f"{what}: bucket deltas {list(zip(les, d))}"
    s = delta(m1, m0, name + "_sum")
    assert 0 <= s <= count * 10, f"{what}: _sum moved by {s} for {count} observations"
    ten = m1.get(name + "_bucket", le="10") - m0.get(name + "_bucket", le="10")
    assert ten == count, f"{what}: observations over 10 s on loopback ({count - ten})"


def test_latency_histogram_counts_broker_deliveries(gateway_factory):
    gw = gateway_factory("--rate-limit", "0", "--user-rate-limit", "0")

    async def body():
        a = await Client.open(gw, "/chat/lat")
        b = await Client.open(gw, "/chat/lat")
        c = await Client.open(gw, "/chat/lat")
        for x, joins in ((a, 2), (b, 1)):
            for _ in range(joins):
                await x.recv_type("system")
            assert await x.recv_until_pong() == []
        m0 = scrape(gw)
        for i in range(20):
            await a.chat_confirmed(f"n{i}")
        for x in (a, b, c):
            for _ in range(2):
                await x.send({"type": "typing"})
        for x in (a, b, c):
            for _ in range(4):  # 2 from each of the two others
                await x.recv_type("typing", skip=("chat",))
            await x.recv_until_pong()
        m1 = scrape(gw)
        check_histogram(m1, m0, 20 + 6, "one node, memory broker")
        assert delta(m1, m0, "chat_messages_delivered_total", type="chat") == 60
        assert delta(m1, m0, "chat_messages_delivered_total", type="typing") == 12
        for x in (a, b, c):
            await x.close()

    run(body(), timeout=40)


def test_latency_histogram_per_node_with_redis(own_redis, gateway_factory):
    """Two nodes on one Redis: each node observes every message it delivers, wherever it was
    published; the broker counters follow."""
    redis = own_redis.start()
    opts = ("--redis-url", redis.url, "--rate-limit", "0", "--user-rate-limit", "0")
    ga = gateway_factory(*opts, node_id="na")
    gb = gateway_factory(*opts, node_id="nb")
    for g in (ga, gb):
        wait_until(lambda: readyz(g)[0] == 200, 15 * SCALE, f"{g.node_id} ready")

    async def body():
        a = await Client.open(ga, "/chat/lat")
        b1 = await Client.open(gb, "/chat/lat")
        b2 = await Client.open(gb, "/chat/lat")
        # until both nodes hear each other (subscriptions are asynchronous)
        for i in range(100):
            await a.chat_confirmed(f"warm{i}", skip=("system",))
            got = [f for f in await b1.recv_until_pong() if f["type"] == "chat"]
            if got:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("node nb never received from na")
        await asyncio.sleep(0.3)
        for x in (a, b1, b2):
            await x.recv_until_pong()
        ma0, mb0 = scrape(ga), scrape(gb)
        for i in range(20):
            await a.chat_confirmed(f"n{i}")
        for _ in range(20):
            for x in (b1, b2):
                await x.recv_type("chat")
        for _ in range(3):
            await b1.send({"type": "typing"})
        for x in (a, b2):
            for _ in range(3):
                await x.recv_type("typing")
        for x in (a, b1, b2):
            assert await x.recv_until_pong() == []
        ma1, mb1 = scrape(ga), scrape(gb)
        check_histogram(ma1, ma0, 23, "node na")
        check_histogram(mb1, mb0, 23, "node nb")
        assert delta(ma1, ma0, "chat_broker_published_total") == 20
        assert delta(mb1, mb0, "chat_broker_published_total") == 3
        assert delta(ma1, ma0, "chat_broker_received_total") == 23
        assert delta(mb1, mb0, "chat_broker_received_total") == 23
        assert delta(ma1, ma0, "chat_room_messages_total", room="lat") == 20
        assert delta(mb1, mb0, "chat_room_messages_total", room="lat") == 0
        for m in (ma1, mb1):
            assert m.get("chat_broker_connected") == 1
            assert delta(m, ma0 if m is ma1 else mb0, "chat_broker_publish_errors_total") == 0
        for x in (a, b1, b2):
            await x.close()

    run(body(), timeout=60)


# ---- drops: typing and system frames for a full send queue ---------------------------------------

QUEUE_LIMIT = 262144
BIG = 50000
FREE_LEFT = 16  # bytes left free in the slow member's queue: no typing/system frame fits


def queued(gw):
    return int(scrape(gw).get("chat_send_queue_bytes"))


def frame_len(payload_len):
    return payload_len + (2 if payload_len < 126 else 4 if payload_len < 65536 else 10)


def test_dropped_frames_for_a_full_send_queue(gateway_factory):
    """A member that stopped reading has its queue filled with chats to within a few bytes of
    --send-queue-bytes; the join and typing frames that follow must be dropped for it (counted
    in chat_messages_dropped_total) and delivered to everyone else (counted as delivered); chats
    are never dropped: when the slow member reads again, it finds every chat and no dropped
    frame. chat_send_queue_bytes moves by the exact frame sizes."""
    gw = gateway_factory("--send-queue-bytes", str(QUEUE_LIMIT), "--max-text-bytes", "60000",
                         "--rate-limit", "0", "--user-rate-limit", "0")
    slow = rawws.RawWS(gw.port, rcvbuf=4096).open("/chat/q")
    t = Tally()
    try:
        assert slow.recv_json()["type"] == "welcome"
        check_joined(slow.recv_json(), "q")

        async def body():
            a = tally(await Client.open(gw, "/chat/q"), t)
            chats = 0
            q = queued(gw)
            assert q == 0, f"queue bytes {q} with everybody reading"
            # fill the kernel buffers until the gateway's own queue starts to hold bytes
            for _ in range(400):
                await a.chat_confirmed("x" * BIG)
                chats += 1
                q = queued(gw)
                if q > 0:
                    break
            assert q > 0, "the slow member's queue never grew"
            # fill the queue with whole chats, then one cut to leave FREE_LEFT bytes
            for _ in range(100):
                ack, copy = await a.chat_confirmed("x" * BIG)
                chats += 1
                q1 = queued(gw)
                flen = frame_len(len(json.dumps(copy, separators=(",", ":")).encode()))
                assert q1 - q == flen, \
                    f"chat_send_queue_bytes moved by {q1 - q} for one {flen}-byte frame"
                q = q1
                if QUEUE_LIMIT - q < 2 * flen + 1000:
                    break
            overhead = flen - BIG
            for _ in range(3):
                free = QUEUE_LIMIT - q
                if free <= FREE_LEFT:
                    break
                text = "y" * min(BIG, free - FREE_LEFT - overhead)
                ack, copy = await a.chat_confirmed(text)
                chats += 1
                q = queued(gw)
            free = QUEUE_LIMIT - q
            assert 0 <= free < 40, f"test setup: {free} bytes free in the slow queue"
            m0 = scrape(gw)
            t.got.clear()
            # two more members join, each sends 3 typing
            t1 = tally(await Client.open(gw, "/chat/q"), t)
            t2 = tally(await Client.open(gw, "/chat/q"), t)
            for x in (t1, t2):
                for _ in range(3):
                    await x.send({"type": "typing"})
            # a: both joins and 6 typing; t1: t2's join and 3 typing; t2: 3 typing (the pong
            # of a ping is no barrier for what other members publish meanwhile)
            for x, want in ((a, {"system": 2, "typing": 6}), (t1, {"system": 1, "typing": 3}),
                            (t2, {"typing": 3})):
                got = collections.Counter()
                for _ in range(sum(want.values())):
                    got[(await x.recv())["type"]] += 1
                assert got == want, f"{x.user} received {dict(got)}, expected {want}"
                assert await x.recv_until_pong() == []
            m1 = scrape(gw)
            # to the slow member: 2 joins + 6 typing, none fits
            assert delta(m1, m0, "chat_messages_dropped_total", reason="send_queue_full") == 8
            assert (t.got["system"], t.got["typing"]) == (3, 12), t.got
            got_out = deltas(m1, m0, "chat_messages_delivered_total", "type", DELIVERED_TYPES)
            assert m1.get("chat_send_queue_bytes") == q, "dropped frames changed the queue"
            # the slow member reads again: every chat, in order, and none of the dropped frames
            loop = asyncio.get_running_loop()

            def read_all():
                slow.send_json({"type": "ping"})
                frames = []
                for _ in range(chats + 100):
                    f = slow.recv_json(timeout=10 * SCALE)
                    if f == {"type": "pong"}:
                        return frames
                    frames.append(f)
                raise AssertionError("no pong")

            frames = await loop.run_in_executor(None, read_all)
            kinds = [f["type"] for f in frames]
            # a's join notice (queued before the queue filled up), then every chat, nothing else
            assert kinds == ["system"] + ["chat"] * chats, \
                f"the slow member read {collections.Counter(kinds)} ({kinds[:3]}...), " \
                f"expected a's join and exactly {chats} chats"
            wsclient.check_system(frames[0], "q", "join", a.user)
            for x in (a, t1, t2):
                await x.close()
            # checked last, so that everything above is known too
            assert got_out == {"chat": 0, "typing": 12, "system": 3}, \
                f"delivered {got_out}: the clients received typing {t.got['typing']}, " \
                f"system {t.got['system']}; 8 frames were dropped, not queued"

        run(body(), timeout=90)
        slow.send_frame(rawws.OP_CLOSE, b"\x03\xe8")
        assert slow.expect_close() == 1000
    finally:
        slow.close()


# ---- close codes and refusals by cause -----------------------------------------------------------

def closed_by_code_settled(gw, m0, n):
    """Waits (bounded) until n more connections were counted as closed; returns the scrape."""
    def settled():
        m = scrape(gw)
        got = sum(label_deltas(m, m0, "chat_connections_closed_total", "code").values())
        return m if got >= n and m.get("chat_connections") == 0 else None

    return wait_until(settled, 10 * SCALE, f"{n} closes counted")


def test_close_codes_by_cause(gateway_factory):
    """Each close is counted under the code of the close frame the gateway sent (the client's
    own code echoed when it closed first), 1006 without a close handshake."""
    gw = gateway_factory("--max-message-bytes", "1000", "--idle-timeout", "800ms")
    m0 = scrape(gw)
    causes = {
        1002: lambda ws: ws.send_frame(rawws.OP_TEXT, b'{"type":"ping"}', masked=False),
        1007: lambda ws: ws.send_frame(rawws.OP_TEXT, b'{"type":"\xff\xfe"}'),
        1009: lambda ws: ws.send_frame(rawws.OP_TEXT, b"x" * 2000),
        1003: lambda ws: ws.send_frame(rawws.OP_BINARY, b"\x01\x02"),
        4001: lambda ws: None,  # idle: no application message
    }
    socks = []
    try:
        for code, act in causes.items():
            ws = rawws.RawWS(gw.port).open("/ws")
            socks.append(ws)
            assert ws.recv_json()["type"] == "welcome"
            act(ws)
            assert ws.expect_close(timeout=5 * SCALE) == code
            ws.close()
        # the client closes first with its own code: echoed, counted under it
        ws = rawws.RawWS(gw.port).open("/ws")
        socks.append(ws)
        assert ws.recv_json()["type"] == "welcome"
        ws.send_frame(rawws.OP_CLOSE, (4321).to_bytes(2, "big") + b"bye")
        code, _, _ = ws.recv_close()
        assert code == 4321, f"the gateway answered a 4321 close with {code}"
        ws.close()
        # no close handshake at all
        ws = rawws.RawWS(gw.port).open("/ws")
        socks.append(ws)
        assert ws.recv_json()["type"] == "welcome"
        ws.close()
        m1 = closed_by_code_settled(gw, m0, 7)
    finally:
        for ws in socks:
            ws.close()
    assert label_deltas(m1, m0, "chat_connections_closed_total", "code") == \
        {"1002": 1, "1007": 1, "1009": 1, "1003": 1, "4001": 1, "4321": 1, "1006": 1}
    assert delta(m1, m0, "chat_connections_opened_total") == 7


def test_handshake_rejections_by_status(gateway_factory):
    gw = gateway_factory("--handshake-timeout", "300ms", "--max-header-bytes", "1024",
                         "--allowed-origins", "https://ok.example", "--max-connections", "1")
    m0 = scrape(gw)
    big = rawws.upgrade_request("/ws", port=gw.port, extra=["X-Pad: " + "p" * 2000])
    rawws.check_json_refusal(rawws.http_exchange(gw.port, big), 431, "header_too_large")
    partial = b"GET /ws HTTP/1.1\r\nHost: x\r\n"
    rawws.check_json_refusal(rawws.http_exchange(gw.port, partial, timeout=5 * SCALE), 408,
                             "timeout")
    evil = rawws.upgrade_request("/ws", port=gw.port, extra=["Origin: https://evil.example"])
    rawws.check_json_refusal(rawws.http_exchange(gw.port, evil), 403, "forbidden_origin")
    ok = rawws.upgrade_request("/ws", port=gw.port, extra=["Origin: https://ok.example"])
    first = rawws.RawWS(gw.port).open(request=ok)
    try:
        assert first.recv_json()["type"] == "welcome"
        rawws.check_json_refusal(
            rawws.http_exchange(gw.port, rawws.upgrade_request("/ws", port=gw.port)), 503,
            "unavailable")
        m1 = scrape(gw)
    finally:
        first.close()
    assert label_deltas(m1, m0, "chat_handshake_rejected_total", "status") == \
        {"431": 1, "408": 1, "403": 1, "503": 1}
    assert deltas(m1, m0, "chat_auth_failures_total", "reason", AUTH_REASONS) == \
        {r: 0 for r in AUTH_REASONS}, "an Origin refusal is not an auth failure"
    assert delta(m1, m0, "chat_connections_opened_total") == 1
