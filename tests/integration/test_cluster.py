"""The multi-node cluster with real parts: redis-server, three gateway nodes and nginx, started by
deploy/local/cluster.sh (helpers in cluster.py), and real WebSocket clients.

- fan-out across nodes: exactly once, one order on every member, rooms isolated, acks match;
- subscriptions follow membership (PUBSUB NUMSUB, CLIENT LIST);
- Redis restarted / paused: unavailable instead of ack meanwhile, recovery on the same sockets;
- a node killed with SIGKILL: the others go on, its subscriptions disappear;
- nginx: 200 clients spread over the nodes, no query string in the access log, nginx -t;
- X-Forwarded-For is believed only from --trusted-proxies.

Under CHAT_TEST_ASAN=1 the nodes run with ASAN_OPTIONS (detect_leaks=1) and the fixture fails
the test if a node log holds a sanitizer report after `cluster.sh down`.
"""

import asyncio
import collections
import os
import json
import re
import resource
import secrets
import signal
import subprocess
import time
import warnings

import pytest

from cluster import Cluster, SCALE, pid_alive, wait_until
from wsclient import TIMEOUT, Client, check_chat, close_all, run

NODES = ("node1", "node2", "node3")


def room_channel(room):
    return f"chat:room:{room}"


def _raise_nofile(want=4096):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _finish(c):
    problems = c.finish()
    if problems:
        pytest.fail("cluster teardown:\n" + "\n".join(problems) +
                    f"\n(cluster dir {c.dir})", pytrace=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for the tests that leave it intact."""
    _raise_nofile()
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.up()
    except BaseException:
        c.finish()
        raise
    yield c
    _finish(c)


@pytest.fixture
def fresh_cluster(tmp_path):
    """A cluster of its own, for a test that breaks Redis or a node."""
    _raise_nofile()
    c = Cluster(tmp_path / "cluster")
    try:
        c.up()
    except BaseException:
        c.finish()
        raise
    yield c
    _finish(c)


# ---- async helpers ------------------------------------------------------------------------------

async def await_until(pred, timeout, what, interval=0.05):
    """Polls a quick synchronous pred() from async code without blocking the loop for long."""
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(int(timeout / interval) + 100):
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")


async def wait_numsub(cl, room, n, timeout=5.0):
    await await_until(lambda: cl.numsub(room_channel(room)) == n, timeout * SCALE,
                      f"PUBSUB NUMSUB {room_channel(room)} == {n}")


async def stays(pred, seconds, what):
    """pred() holds for `seconds` (checked every 50 ms)."""
    for _ in range(int(seconds / 0.05) + 1):
        assert pred(), f"no longer true: {what}"
        await asyncio.sleep(0.05)


async def open_on(ep, path, **kw):
    return await Client.open(ep, path, **kw)


async def collect(c, room, n_chats, n_acks=0, timeout=None, skip_rooms=()):
    """Reads frames until `n_chats` chats and `n_acks` acks arrived (bounded). The only other
    frames allowed are system notices of `room` (members joining/leaving). Returns (chats, acks)."""
    timeout = timeout or TIMEOUT * 3
    chats, acks = [], []
    deadline = time.monotonic() + timeout
    for _ in range((n_chats + n_acks) * 3 + 500):
        if len(chats) >= n_chats and len(acks) >= n_acks:
            return chats, acks
        left = deadline - time.monotonic()
        assert left > 0, (f"{c.user}: only {len(chats)}/{n_chats} chats and {len(acks)}/{n_acks}"
                          f" acks within {timeout}s; last chats {[f['text'] for f in chats[-5:]]}")
        try:
            f = await c.recv(left)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"{c.user}: only {len(chats)}/{n_chats} chats and {len(acks)}/{n_acks} acks "
                f"within {timeout}s; last chats {[f['text'] for f in chats[-5:]]}") from None
        if f["type"] == "chat":
            assert f["room"] == room, f"{c.user} (member of {room}) got a chat of another room: {f}"
            chats.append(f)
        elif f["type"] == "ack":
            assert f["room"] == room, f"{c.user}: ack for another room: {f}"
            acks.append(f)
        elif f["type"] == "system" and f.get("room") == room:
            pass
        else:
            raise AssertionError(f"{c.user} in {room}: unexpected frame {f}")
    raise AssertionError(f"{c.user}: frame budget exhausted")


async def chat_round(clients, room, tag):
    """Every client sends one chat (with a cid); every client must receive all of them exactly
    once, in one order, and each sender its ack (matching its own copy). Frames other than the
    room's chats, acks and system notices fail (an `unavailable` error included)."""
    cids = {}
    for i, c in enumerate(clients):
        text = f"{tag}|{i}|{c.user}"
        cids[c] = (await c.chat(text, room=room, cid=f"{tag}-{i}"), text)
    results = await asyncio.gather(*(collect(c, room, len(clients), 1) for c in clients))
    orders = []
    for c, (chats, acks) in zip(clients, results):
        texts = [f["text"] for f in chats]
        assert sorted(texts) == sorted(t for _, t in cids.values()), \
            f"{c.user} got {texts} in round {tag}"
        orders.append([f["id"] for f in chats])
        cid, text = cids[c]
        (ack,) = acks
        assert ack["cid"] == cid, ack
        own = [f for f in chats if f["text"] == text]
        assert len(own) == 1 and own[0]["user"] == c.user, own
        assert ack["id"] == own[0]["id"], f"ack {ack} does not match own copy {own[0]}"
    assert all(o == orders[0] for o in orders), f"members saw different orders: {orders}"


# ---- 1. fan-out across three nodes ------------------------------------------------------------

PER_SENDER = 30


def test_three_nodes_one_room_exactly_once_same_order_rooms_isolated(cluster):
    room_a, room_b = "fan-a", "fan-b"

    async def body():
        # two members of room A and one of room B on every node, connected directly
        a = [await open_on(cluster.node(i), f"/chat/{room_a}") for i in (1, 2, 3) for _ in (0, 1)]
        b = [await open_on(cluster.node(i), f"/chat/{room_b}") for i in (1, 2, 3)]
        try:
            for k, c in enumerate(a):
                assert c.welcome["node"] == NODES[k // 2], c.welcome
                assert c.user.startswith(f"guest-{NODES[k // 2]}-"), c.welcome
            for k, c in enumerate(b):
                assert c.welcome["node"] == NODES[k], c.welcome
            # the subscriptions are in place before anyone talks (a join is not a barrier
            # across nodes)
            await wait_numsub(cluster, room_a, 3)
            await wait_numsub(cluster, room_b, 3)

            senders_a = [a[0], a[2], a[4]]  # one per node
            senders_b = b
            per_b = 5

            async def send_all(c, room, n, tag):
                for k in range(n):
                    await c.chat(f"{room}|{tag}|{k}", room=room, cid=f"{tag}-{k}")

            recv_a = [asyncio.create_task(
                collect(c, room_a, 3 * PER_SENDER, PER_SENDER if c in senders_a else 0,
                        timeout=TIMEOUT * 6)) for c in a]
            recv_b = [asyncio.create_task(
                collect(c, room_b, 3 * per_b, per_b, timeout=TIMEOUT * 6)) for c in b]
            await asyncio.gather(
                *(send_all(c, room_a, PER_SENDER, f"s{j}") for j, c in enumerate(senders_a)),
                *(send_all(c, room_b, per_b, f"b{j}") for j, c in enumerate(senders_b)))
            res_a = await asyncio.gather(*recv_a)
            res_b = await asyncio.gather(*recv_b)

            # A marker after everything: nothing may arrive between the last expected chat and
            # the marker (no duplicate, no foreign room).
            await a[0].chat("END-A", room=room_a, cid="end-a")
            await b[0].chat("END-B", room=room_b, cid="end-b")
            for c in a + b:
                room = room_a if c in a else room_b
                marker = "END-A" if c in a else "END-B"
                chats, acks = await collect(c, room, 1, 1 if c in (a[0], b[0]) else 0)
                assert [f["text"] for f in chats] == [marker], \
                    f"{c.user}: extra chats before the marker: {chats}"

            expected_a = {f"{room_a}|s{j}|{k}": senders_a[j]
                          for j in range(3) for k in range(PER_SENDER)}
            ref_order = None
            for c, (chats, acks) in zip(a, res_a):
                ids = [f["id"] for f in chats]
                assert len(set(ids)) == len(ids), f"{c.user}: a message id twice"
                texts = [f["text"] for f in chats]
                assert sorted(texts) == sorted(expected_a), f"{c.user}: wrong set of messages"
                for f in chats:
                    check_chat(f, room_a, expected_a[f["text"]].user, f["text"])
                for j in range(3):  # each sender's messages in its sending order
                    mine = [t for t in texts if t.startswith(f"{room_a}|s{j}|")]
                    assert mine == [f"{room_a}|s{j}|{k}" for k in range(PER_SENDER)], mine
                if ref_order is None:
                    ref_order = ids
                assert ids == ref_order, f"{c.user} saw another order than {a[0].user}"
                if c in senders_a:
                    j = senders_a.index(c)
                    by_text = {f["text"]: f for f in chats}
                    assert sorted(x["cid"] for x in acks) == \
                        sorted(f"s{j}-{k}" for k in range(PER_SENDER)), acks
                    for ack in acks:
                        k = int(ack["cid"].split("-")[1])
                        own = by_text[f"{room_a}|s{j}|{k}"]
                        assert own["user"] == c.user
                        assert ack["id"] == own["id"], f"ack {ack} != own copy {own}"
                        assert ack["id"].startswith(c.welcome["node"] + "-"), ack
                else:
                    assert acks == []

            ref_b = None
            for c, (chats, acks) in zip(b, res_b):
                texts = [f["text"] for f in chats]
                assert sorted(texts) == sorted(f"{room_b}|b{j}|{k}" for j in range(3)
                                               for k in range(per_b)), texts
                ids = [f["id"] for f in chats]
                ref_b = ref_b or ids
                assert ids == ref_b
                assert len(acks) == per_b
        finally:
            await close_all(a + b)

    run(body(), timeout=90)


# ---- 2. subscriptions follow membership ---------------------------------------------------------

def test_subscriptions_follow_membership(cluster):
    room, other = "subs-x", "subs-other"
    ch = room_channel(room)

    async def body():
        # the rooms of earlier tests linger (cluster.ROOM_LINGER) before they unsubscribe
        await await_until(lambda: set(cluster.sub_counts().values()) == {1}, 5 * SCALE,
                          "only the canary subscribed on every node")
        assert cluster.numsub(ch) == 0
        c1 = await open_on(cluster.node(1), "/ws")
        c1b = await open_on(cluster.node(1), "/ws")
        c2 = await open_on(cluster.node(2), "/ws")
        c3 = await open_on(cluster.node(3), "/ws")
        w3 = await open_on(cluster.node(3), f"/chat/{other}")  # on node3, in another room
        try:
            await wait_numsub(cluster, other, 1)
            await c1.join(room)
            await wait_numsub(cluster, room, 1)
            await c1b.join(room)  # a second member on the same node: still one subscriber
            await stays(lambda: cluster.numsub(ch) == 1, 0.5, "NUMSUB 1 with two node1 members")
            await c2.join(room)
            await wait_numsub(cluster, room, 2)

            # node3 has no member of the room: not subscribed, and its client hears nothing
            subs = cluster.sub_counts()
            assert subs == {"node1": 2, "node2": 2, "node3": 2}, \
                f"subscriber links' channel counts (canary + rooms): {subs}"
            await chat_round([c1, c1b, c2], room, "two-nodes")
            await asyncio.sleep(0.3)
            await w3.assert_quiet(f"nothing of {room} on node3 before anyone there joined")

            await c3.join(room)
            await wait_numsub(cluster, room, 3)
            await chat_round([c1, c1b, c2, c3], room, "three-nodes")

            # leave message on node3 -> 2 (once the room lingered cluster.ROOM_LINGER there)
            await c3.leave(room, skip=("system",))
            await wait_numsub(cluster, room, 2)
            # disconnect (close frame) on node2 -> 1
            await c2.close()
            await wait_numsub(cluster, room, 1)
            # one of two node1 members leaves: node1 still subscribed
            await c1.leave(room, skip=("system",))
            await stays(lambda: cluster.numsub(ch) == 1, 0.5, "NUMSUB 1 while c1b is a member")
            # the last member drops its TCP connection without a close frame -> 0
            c1b.abort()
            await wait_numsub(cluster, room, 0)
            assert cluster.channels(ch) == []
            assert cluster.sub_counts() == {"node1": 1, "node2": 1, "node3": 2}

            # node3's member of the other room never heard any of it
            await w3.assert_quiet(f"nothing of {room} on a node3 member of {other}")
        finally:
            await close_all([c1, c1b, c2, c3, w3])

    run(body(), timeout=60)


# ---- 3. Redis restarted -------------------------------------------------------------------------

def _link_up_counts(cl):
    return {n: cl.count_in_log(n, "broker link up") for n in NODES}


async def wait_links_up_again(cl, before, timeout=25.0):
    await await_until(
        lambda: all(cl.count_in_log(n, "broker link up") > before[n] for n in NODES),
        timeout * SCALE, f"a new 'broker link up' in every node log (before: {before})",
        interval=0.1)


async def expect_unavailable(c, cid, room, timeout):
    """The sender's answer to a chat sent while Redis cannot take it: error unavailable with its
    cid and room, never an ack. System notices of the room may come first."""
    f = await c.recv_type("error", timeout=timeout, skip=("system",))
    assert f.get("code") == "unavailable", f"expected unavailable, got {f}"
    assert f.get("cid") == cid and f.get("room") == room, f
    return f


async def assert_no_stale_ack(clients, cids):
    for c in clients:
        got = await c.recv_until_pong()
        bad = [f for f in got if f["type"] == "ack" and f.get("cid") in cids]
        assert not bad, f"ack for a chat that got unavailable: {bad}"


def test_redis_restart_nodes_resubscribe_same_connections(fresh_cluster):
    cl = fresh_cluster
    room = "restart"

    async def body():
        cs = [await open_on(cl.node(i), f"/chat/{room}") for i in (1, 2, 3)]
        try:
            await wait_numsub(cl, room, 3)
            await chat_round(cs, room, "before")
            ups = _link_up_counts(cl)
            sockets = [c.ws for c in cs]

            t_stop = time.monotonic()
            cl.stop_redis()
            outage_cids = set()
            for i, c in enumerate(cs):
                cid = await c.chat(f"during outage {i}", room=room, cid=f"outage-{i}")
                outage_cids.add(cid)
                await expect_unavailable(c, cid, room, timeout=TIMEOUT * 2)
            await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - t_stop)))
            for c in cs:
                assert c.ws.open, f"{c.user}: connection closed while Redis was down"
            cl.start_redis()

            await wait_links_up_again(cl, ups)
            await wait_numsub(cl, room, 3, timeout=10)
            for n in NODES:
                assert "broker link down" in cl.log(n), f"{n} never logged the link going down"
            assert [c.ws for c in cs] == sockets
            for c in cs:
                assert c.ws.open
            await chat_round(cs, room, "after")
            await chat_round(list(reversed(cs)), room, "after2")
            await assert_no_stale_ack(cs, outage_cids)
        finally:
            await close_all(cs)

    run(body(), timeout=60)


# ---- 4. Redis paused ----------------------------------------------------------------------------

def test_redis_paused_unavailable_after_timeout_then_recovers(fresh_cluster):
    cl = fresh_cluster
    room = "pause"
    pause_s = 5.0

    async def body():
        cs = [await open_on(cl.node(i), f"/chat/{room}") for i in (1, 2, 3)]
        rpid = cl.pid("redis")
        try:
            await wait_numsub(cl, room, 3)
            await chat_round(cs, room, "before")
            ups = _link_up_counts(cl)
            downs = {n: cl.count_in_log(n, "broker link down") for n in NODES}
            late = {n: cl.count_in_log(n, "canary not back") for n in NODES}

            os.kill(rpid, signal.SIGSTOP)
            t0 = time.monotonic()
            try:
                cid = await cs[0].chat("during pause", room=room, cid="paused-1")
                await expect_unavailable(cs[0], cid, room, timeout=TIMEOUT * 2)
                took = time.monotonic() - t0
                # Not refused at once: the node gave up after its 2 s Redis timeout. That timeout runs
                # from the oldest pending command (possibly a canary PUBLISH up to 1 s older than
                # this chat), checked every 0.5 s: so 1..2.5 s after the chat.
                assert 0.9 <= took <= 2.0 + 3.0 * SCALE, f"unavailable after {took:.2f}s"
                await asyncio.sleep(max(0.0, pause_s - (time.monotonic() - t0)))
                for n in NODES:
                    noticed = (cl.count_in_log(n, "broker link down") > downs[n] or
                               cl.count_in_log(n, "canary not back") > late[n])
                    assert noticed, f"{n}: no 'broker link down' / canary warning during the " \
                                    f"pause:\n{cl.log(n)[-2000:]}"
                for c in cs:
                    assert c.ws.open
            finally:
                os.kill(rpid, signal.SIGCONT)

            await wait_links_up_again(cl, ups)
            await wait_numsub(cl, room, 3, timeout=10)
            # The PUBLISH of the paused chat sat in Redis' socket buffer: Redis may still run it
            # after SIGCONT and deliver it over a subscription that survived the pause. Whatever
            # happens, the sender never gets an ack for it, and if it is delivered then exactly
            # once to every member (one id).
            late = []
            for c in cs:
                got = await c.recv_until_pong()
                assert not [f for f in got if f["type"] == "ack"], f"{c.user}: ack after {got}"
                chats = [f for f in got if f["type"] == "chat"]
                assert all(f["text"] == "during pause" for f in chats), chats
                assert len(chats) <= 1, f"{c.user}: the paused chat twice: {chats}"
                late.append(chats)
            if any(late):
                assert all(len(x) == 1 for x in late), f"delivered to some members only: {late}"
                assert len({x[0]["id"] for x in late}) == 1, late
                warnings.warn(f"the chat answered with 'unavailable' during the Redis pause was "
                              f"delivered to all {len(cs)} members after SIGCONT "
                              f"(id {late[0][0]['id']}): a client that retries it duplicates it")
            await chat_round(cs, room, "after")
            await chat_round(list(reversed(cs)), room, "after2")
        finally:
            if pid_alive(rpid):
                os.kill(rpid, signal.SIGCONT)
            await close_all(cs)

    run(body(), timeout=60)


# ---- 4b. Redis frozen past the canary ---------------------------------------------------------

FREEZE_S = 8.0


def test_redis_frozen_every_node_replaces_its_subscriber_connection(fresh_cluster):
    """SIGSTOP of redis-server for 8 s: each node's canary is late, so each node must drop its
    subscriber connection and build a new one (a new CLIENT LIST id, the old one gone), subscribe
    every room it has members in again, and carry chats again, all without client action."""
    cl = fresh_cluster
    room, other = "frozen", "frozen-two"

    async def body():
        cs = [await open_on(cl.node(i), f"/chat/{room}") for i in (1, 2, 3)]
        two = [await open_on(cl.node(i), f"/chat/{other}") for i in (1, 2)]  # not on node3
        rpid = cl.pid("redis")
        try:
            await wait_numsub(cl, room, 3)
            await wait_numsub(cl, other, 2)
            await chat_round(cs, room, "before")
            old = cl.link_ids("sub")
            assert sorted(old) == list(NODES) and all(len(v) == 1 for v in old.values()), \
                f"one subscriber connection per node before the freeze: {old}"
            late = {n: cl.count_in_log(n, "redis canary late") for n in NODES}
            ups = _link_up_counts(cl)

            os.kill(rpid, signal.SIGSTOP)
            try:
                await asyncio.sleep(FREEZE_S)
            finally:
                os.kill(rpid, signal.SIGCONT)

            def replaced():
                now = cl.link_ids("sub")
                ok = all(len(now.get(n, [])) == 1 and now[n] != old[n] for n in NODES)
                return now if ok else None

            try:
                new = await await_until(replaced, 15 * SCALE,
                                        "a new subscriber connection on every node", interval=0.1)
            except AssertionError:
                raise AssertionError(f"subscriber connections before the freeze {old}, after "
                                     f"{cl.link_ids('sub')}") from None
            for n in NODES:
                assert old[n][0] not in new[n], (n, old, new)
                assert cl.count_in_log(n, "redis canary late") > late[n], \
                    f"{n} never logged its late canary:\n{cl.log(n)[-2000:]}"
            await wait_links_up_again(cl, ups)
            await wait_numsub(cl, room, 3, timeout=10)
            await wait_numsub(cl, other, 2, timeout=10)
            # the new connections carry exactly the canary and the rooms with local members
            assert cl.sub_counts() == {"node1": 3, "node2": 3, "node3": 2}, cl.sub_counts()
            assert cl.link_ids("sub") == new, "subscriber connections changed again"
            for c in cs + two:
                assert c.ws.open, f"{c.user}: connection closed by the freeze"
            await chat_round(cs, room, "after")
            await chat_round(list(reversed(two)), other, "after")
        finally:
            if pid_alive(rpid):
                os.kill(rpid, signal.SIGCONT)
            await close_all(cs + two)

    run(body(), timeout=90)


# ---- 5. a node killed ---------------------------------------------------------------------------

def test_node_killed_others_keep_chatting_subscriptions_vanish(fresh_cluster):
    cl = fresh_cluster
    room = "kill"

    async def body():
        cs = [await open_on(cl.node(i), f"/chat/{room}") for i in (1, 2, 3)]
        extra = await open_on(cl.node(2), f"/chat/{room}")
        via_nginx = []
        try:
            await wait_numsub(cl, room, 3)
            assert cl.channels("chat:node:*") == [f"chat:node:{n}" for n in NODES]
            await chat_round(cs + [extra], room, "before")

            cl.kill_node(3)
            code = await cs[2].expect_closed(timeout=TIMEOUT)
            assert code == 1006, f"client of the killed node: close code {code}"

            await wait_numsub(cl, room, 2)
            await await_until(lambda: cl.channels("chat:node:*") == ["chat:node:node1",
                                                                      "chat:node:node2"],
                              5 * SCALE, "node3's canary channel to disappear")
            survivors = [cs[0], cs[1], extra]
            for r in range(3):
                await chat_round(survivors, room, f"after{r}")
            # new users still get in through nginx (it skips the dead node)
            for _ in range(4):
                c = await open_on(cl.nginx, f"/chat/{room}")
                via_nginx.append(c)
                assert c.welcome["node"] in ("node1", "node2"), c.welcome
            await wait_numsub(cl, room, 2)
            await chat_round(survivors + via_nginx, room, "nginx")
        finally:
            await close_all(cs[:2] + [extra] + via_nginx)

    run(body(), timeout=60)


# ---- 6. through nginx -------------------------------------------------------------------------

N_CLIENTS = 200
N_ROOMS = 10


def test_nginx_200_clients_spread_and_chat(cluster):
    rooms = [f"mass-{r:02d}" for r in range(N_ROOMS)]
    secret = "SECRET" + secrets.token_hex(8)

    r = subprocess.run(["nginx", "-t", "-c", str(cluster.dir / "nginx.conf")],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"nginx -t failed:\n{r.stdout}{r.stderr}"
    assert "test is successful" in r.stderr, r.stderr

    async def body():
        sem = asyncio.Semaphore(40)

        async def open_one(room):
            async with sem:
                return await open_on(cluster.nginx, f"/chat/{room}")

        members = [rooms[k % N_ROOMS] for k in range(N_CLIENTS)]
        clients = await asyncio.gather(*(open_one(room) for room in members),
                                       return_exceptions=True)
        ok = [c for c in clients if isinstance(c, Client)]
        try:
            errors = [c for c in clients if not isinstance(c, Client)]
            assert not errors, f"{len(errors)} connections failed, first: {errors[0]!r}"
            per_node = collections.Counter(c.welcome["node"] for c in clients)
            assert set(per_node) == set(NODES), f"clients per node: {dict(per_node)}"
            # least_conn over three nodes: every node holds a fair share
            assert min(per_node.values()) >= N_CLIENTS // 10, f"clients per node: {per_node}"
            by_room = collections.defaultdict(list)
            for room, c in zip(members, clients):
                by_room[room].append(c)
            for room in rooms:
                nodes = {c.welcome["node"] for c in by_room[room]}
                await wait_numsub(cluster, room, len(nodes))

            for room in rooms:
                for k, c in enumerate(by_room[room]):
                    await c.chat(f"{room}|{k}|{c.user}", room=room, cid=f"m-{k}")
            results = await asyncio.gather(*(collect(c, room, len(by_room[room]), 1,
                                                     timeout=TIMEOUT * 6)
                                             for room, c in zip(members, clients)))
            orders = {}
            for room, c, (chats, acks) in zip(members, clients, results):
                texts = sorted(f["text"] for f in chats)
                assert texts == sorted(f"{room}|{k}|{m.user}"
                                       for k, m in enumerate(by_room[room])), c.user
                ids = [f["id"] for f in chats]
                assert orders.setdefault(room, ids) == ids, f"{room}: members disagree on order"
                own = [f for f in chats if f["user"] == c.user]
                assert len(own) == 1 and acks[0]["id"] == own[0]["id"], (acks, own)
            nodes_per_room = {room: sorted({c.welcome["node"] for c in by_room[room]})
                              for room in rooms}
            print(f"clients per node: {dict(per_node)}; nodes per room: {nodes_per_room}")
        finally:
            await close_all(ok)

        # a token in the query string must not reach the access log
        t = await open_on(cluster.nginx, f"/chat/lobby?token={secret}")
        await t.chat_confirmed("with a token")
        await t.close()

    run(body(), timeout=90)

    access = cluster.dir / "nginx-access.log"

    def logged():  # nginx writes a WebSocket's line when it closes
        text = access.read_text(errors="replace")
        return text.count(" /chat/mass-") >= N_CLIENTS and " /chat/lobby " in text

    wait_until(logged, 10 * SCALE, "the access log lines of every closed WebSocket",
               interval=0.1)
    text = access.read_text(errors="replace")
    lobby = [ln for ln in text.splitlines() if " /chat/lobby " in ln]
    assert lobby and " 101 " in lobby[-1], lobby
    assert secret not in text, f"the query string reached the access log: {lobby}"
    assert "token=" not in text


# ---- 7. X-Forwarded-For -----------------------------------------------------------------------

def _opened(text, c):
    """The "connection opened" record of connection c in a JSON log, or None."""
    for line in text.splitlines():
        if '"connection opened"' not in line:
            continue
        r = json.loads(line)
        if r.get("conn") == c.conn and r.get("user") == c.user:
            return r
    return None


def _remote_in(log_text_fn, c, timeout=5.0):
    """(remote, room) logged when c's connection opened."""
    deadline = time.monotonic() + timeout * SCALE
    for _ in range(int(timeout * SCALE / 0.05) + 10):
        r = _opened(log_text_fn(), c)
        if r:
            return r["remote"], r.get("room", "")
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"no open line for {c.conn} in the log:\n{log_text_fn()[-2000:]}")


def test_x_forwarded_for_only_from_trusted_proxies(cluster, gateway_factory):
    forged = {"X-Forwarded-For": "6.6.6.6"}
    untrusting = gateway_factory("--trusted-proxies", "10.0.0.0/8", node_id="xff-10")
    trusting = gateway_factory("--trusted-proxies", "127.0.0.1/32", node_id="xff-lo")

    async def body():
        # through nginx: nginx is the trusted peer and names the real client (127.0.0.1)
        via = await open_on(cluster.nginx, "/chat/xff")
        n = via.welcome["node"]
        assert _remote_in(lambda: cluster.log(n), via) == ("127.0.0.1", "xff")

        # directly to a gateway that does not trust loopback: the forged header is ignored
        c = await open_on(untrusting, "/chat/xff", extra_headers=forged)
        assert _remote_in(untrusting.stdout_text, c) == ("127.0.0.1", "xff")
        # a gateway that trusts loopback believes it (the peer is a "proxy" it trusts)
        d = await open_on(trusting, "/chat/xff", extra_headers=forged)
        assert _remote_in(trusting.stdout_text, d) == ("6.6.6.6", "xff")
        # and so does a cluster node (cluster.sh trusts 127.0.0.1/32, where nginx runs)
        e = await open_on(cluster.node(1), "/chat/xff", extra_headers=forged)
        assert _remote_in(lambda: cluster.log("node1"), e) == ("6.6.6.6", "xff")
        # without the header, a direct client is its TCP peer
        f = await open_on(untrusting, "/ws")
        assert _remote_in(untrusting.stdout_text, f) == ("127.0.0.1", "")
        await close_all([via, c, d, e, f])

    run(body(), timeout=30)
