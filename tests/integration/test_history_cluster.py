"""History and recovery across nodes on a real redis-server (docs/reliability.md): three gateway
processes on one Redis, users with real HS256 tokens (so one user can come back on another node),
real WebSocket clients.

- join with since on another node after 20 chats sent while disconnected, with another member
  publishing during the replay: exactly those 20, in order, then the live ones, none twice;
- a node killed with SIGKILL: its clients recover on the other nodes;
- Redis flushed, or restarted without persistence: recovered:false and a new epoch; restarted
  with appendonly yes: every acked chat is still in the history, same epoch;
- SCRIPT FLUSH: the scripts are loaded again and chatting goes on;
- a retried cid on another node: one message, the same ack;
- Redis paused 5 s while one node keeps sending: every acked chat reaches the member on the other
  node, once, in seq order (the node fills what its resubscribe missed from the history);
- the Redis keys: <prefix>{<room>}:history and :meta, with a TTL.
"""

import asyncio
import os
import signal
import subprocess
import tempfile
import time

import pytest

import harness
from ophelpers import readyz, scrape, wait_until
from test_history import chat_seq, chats_until, history
from tokens import Keys, connect
from wsclient import TIMEOUT, close_all, run

SCALE = harness.TIMEOUT_SCALE


class Redis:
    """A redis-server of the test's own (loopback, stopped by PID), restartable on its port and
    directory."""

    def __init__(self, appendonly=False):
        self.port = harness.free_port()
        self.dir = tempfile.mkdtemp(prefix="chat-hist-redis-")
        self.proc = None
        self.start(appendonly)

    def start(self, appendonly=False):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always",
             "--daemonize", "no", "--dir", self.dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: harness.port_accepts(self.port), 10 * SCALE, "redis-server up")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.port), *map(str, args)],
                           capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r
        return r.stdout.strip()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.stop()


@pytest.fixture
def keys(tmp_path):
    return Keys(tmp_path / "keys")


def start_nodes(gateway_factory, redis, keys, n=3, *extra):
    nodes = [gateway_factory("--redis-url", redis.url, "--redis-timeout", "1s",
                             "--room-linger", "1s", *keys.args(pub=()), *extra,
                             node_id=f"n{i}") for i in range(1, n + 1)]
    for gw in nodes:  # the admin listener may open a moment after the public one
        wait_until(lambda gw=gw: harness.port_accepts(gw.admin_port) and readyz(gw)[0] == 200,
                   10 * SCALE, f"{gw.node_id} ready")
    return nodes


async def user(gw, keys, sub, path="/ws"):
    return await connect(gw, keys.mint(sub=sub), path=path)


async def pair(gw_a, gw_b, keys, room):
    """alice on gw_a and bob on gw_b, both in room (alice's join notice of bob consumed)."""
    alice = await user(gw_a, keys, "alice")
    await alice.join(room)
    bob = await user(gw_b, keys, "bob")
    await bob.join(room)
    await alice.recv_type("system")
    return alice, bob


def kill9(gw):
    """SIGKILL by PID; the fixture then expects nothing more of this gateway."""
    os.kill(gw.pid, signal.SIGKILL)
    gw.proc.wait(10)
    gw.stopped = True
    gw.returncode = 0


def test_recovery_on_another_node_with_publishing_during_the_replay(gateway_factory, redis,
                                                                    keys):
    n1, n2, n3 = start_nodes(gateway_factory, redis, keys)

    async def body():
        alice, bob = await pair(n1, n2, keys, "x")
        _, last = await chat_seq(alice, "seen by bob")
        assert (await chats_until(bob, 1)) == [last]
        since = {"seq": last["seq"], "epoch": last["epoch"]}
        await bob.close()
        missed = [(await chat_seq(alice, f"m{i}", room="x"))[1] for i in range(20)]
        carol = await user(n1, keys, "carol")
        await carol.join("x")
        bob = await user(n3, keys, "bob")  # back, on another node
        await bob.send({"type": "join", "room": "x", "since": since})
        for i in range(20):  # carol keeps publishing while bob's replay is read
            await carol.chat(f"live{i}")
        j = await bob.recv_type("joined")
        assert j["recovered"] is True and j["epoch"] == since["epoch"], j
        got = await chats_until(bob, 40, skip=("system",))
        assert got[:20] == missed, "exactly the 20 missed chats, in order, as delivered"
        assert [f["text"] for f in got[20:]] == [f"live{i}" for i in range(20)]
        assert [f["seq"] for f in got] == list(range(since["seq"] + 1, since["seq"] + 41))
        await bob.assert_quiet("none twice")
        await close_all([alice, bob, carol])
    run(body(), timeout=60)


def test_killed_node_clients_recover_on_other_nodes(gateway_factory, redis, keys):
    n1, n2, n3 = start_nodes(gateway_factory, redis, keys)

    async def body():
        alice, bob = await pair(n1, n2, keys, "k")
        _, last = await chat_seq(alice, "before the kill")
        assert (await chats_until(bob, 1)) == [last]
        kill9(n2)
        missed = [(await chat_seq(alice, f"k{i}", room="k"))[1] for i in range(10)]
        bob.abort()
        bob = await user(n3, keys, "bob")
        j = await bob.join("k", since={"seq": last["seq"], "epoch": last["epoch"]})
        assert j["recovered"] is True, j
        assert (await chats_until(bob, 10, skip=())) == missed
        await bob.assert_quiet("none twice")
        await close_all([alice, bob])
    run(body(), timeout=60)


def test_flushall_and_restart_without_persistence_start_a_new_epoch(gateway_factory, redis,
                                                                    keys):
    n1, n2 = start_nodes(gateway_factory, redis, keys, 2)

    async def body():
        alice = await user(n1, keys, "alice")
        j0 = await alice.join("f")
        _, c = await chat_seq(alice, "one")
        redis.cli("FLUSHALL")
        bob = await user(n2, keys, "bob")
        j = await bob.join("f", since={"seq": c["seq"], "epoch": c["epoch"]})
        assert j["recovered"] is False and j["epoch"] != j0["epoch"] and j["seq"] == 0, j
        await bob.assert_quiet("no replay")
        _, c2 = await chat_seq(alice, "two")  # alice's node learns the new epoch from its chat
        assert c2["seq"] == 1 and c2["epoch"] == j["epoch"], c2
        assert (await chats_until(bob, 1)) == [c2]
        # restarted without persistence: everything lost, a new epoch again
        redis.stop()
        redis.start(appendonly=False)
        for gw in (n1, n2):
            wait_until(lambda gw=gw: readyz(gw)[0] == 200, 20 * SCALE, "ready again")
        h = await history(bob, "f")
        assert h["epoch"] not in (j0["epoch"], j["epoch"]) and h["seq"] == 0, h
        await close_all([alice, bob])
    run(body(), timeout=60)


def test_redis_restarted_with_appendonly_keeps_every_acked_chat(gateway_factory, keys):
    r = Redis(appendonly=True)
    try:
        n1, n2 = start_nodes(gateway_factory, r, keys, 2)

        async def body():
            alice = await user(n1, keys, "alice")
            await alice.join("aof")
            acked = [(await chat_seq(alice, f"a{i}"))[0] for i in range(20)]
            r.stop()  # SIGTERM: redis writes its AOF before exiting
            r.start(appendonly=True)
            for gw in (n1, n2):
                wait_until(lambda gw=gw: readyz(gw)[0] == 200, 20 * SCALE, "ready again")
            acked += [(await chat_seq(alice, f"b{i}"))[0] for i in range(5)]
            bob = await user(n2, keys, "bob")
            h = await history(bob, "aof")
            assert [m["id"] for m in h["messages"]] == [a["id"] for a in acked]
            assert [m["seq"] for m in h["messages"]] == list(range(1, 26))
            await close_all([alice, bob])
        run(body(), timeout=60)
    finally:
        r.stop()


def test_script_flush_reloads_the_scripts(gateway_factory, redis, keys):
    (n1,) = start_nodes(gateway_factory, redis, keys, 1)

    async def body():
        alice = await user(n1, keys, "alice")
        await alice.join("sf")
        await chat_seq(alice, "before")
        redis.cli("SCRIPT", "FLUSH")
        ok = errors = 0
        for i in range(20):  # the first may fail (NOSCRIPT): unavailable, never a crash
            cid = await alice.chat(f"after{i}")
            for _ in range(5):
                f = await alice.recv()
                if f["type"] == "ack" and f["cid"] == cid:
                    ok += 1
                    break
                if f["type"] == "error":
                    assert f["code"] == "unavailable" and f["cid"] == cid, f
                    errors += 1
                    break
        assert ok >= 18 and errors <= 2, (ok, errors)
        h = await history(alice, "sf")
        assert h["messages"][-1]["text"] == "after19"
        await alice.close()
    run(body(), timeout=60)


def test_a_retried_cid_on_another_node_is_one_message(gateway_factory, redis, keys):
    n1, n2, n3 = start_nodes(gateway_factory, redis, keys)

    async def body():
        bob = await user(n3, keys, "bob")
        await bob.join("dup")
        alice = await user(n1, keys, "alice")
        await alice.join("dup")
        ack1, copy = await chat_seq(alice, "hello once", cid="tab-1-7")
        alice.abort()  # say the ack was lost: alice retries from another node
        alice = await user(n2, keys, "alice")
        await alice.join("dup")
        await alice.send({"type": "chat", "room": "dup", "text": "hello once", "cid": "tab-1-7"})
        ack2 = await alice.recv_type("ack", skip=("system",))
        assert ack2 == ack1, (ack1, ack2)
        got = [f for f in await bob.recv_until_pong() if f["type"] == "chat"]
        assert got == [copy], got
        h = await history(bob, "dup")
        assert [m["id"] for m in h["messages"]] == [ack1["id"]]
        await close_all([alice, bob])
    run(body(), timeout=60)


def test_redis_pause_every_acked_chat_reaches_the_other_node(gateway_factory, redis, keys):
    n1, n2 = start_nodes(gateway_factory, redis, keys, 2)

    async def body():
        alice, bob = await pair(n1, n2, keys, "p")
        acked = {}
        received = []

        async def reader():
            for _ in range(100000):
                f = await bob.recv(30 * SCALE)
                if f["type"] == "chat":
                    received.append(f)

        rtask = asyncio.ensure_future(reader())
        t_end = time.monotonic() + 9.0
        paused = resumed = False
        i = 0
        while time.monotonic() < t_end:
            if not paused and time.monotonic() > t_end - 8.0:
                redis.proc.send_signal(signal.SIGSTOP)
                paused = True
            if paused and not resumed and time.monotonic() > t_end - 3.0:
                redis.proc.send_signal(signal.SIGCONT)
                resumed = True
            cid = await alice.chat(f"p{i}", room="p")
            i += 1
            await asyncio.sleep(0.07)  # within the 20/s rate limit
            for _ in range(50):  # drain what alice got so far, without waiting
                try:
                    f = await alice.recv(0.001)
                except asyncio.TimeoutError:
                    break
                if f["type"] == "ack":
                    acked[f["id"]] = f["seq"]
        # settle: the last acks, then every acked chat must be at bob's
        deadline = time.monotonic() + 15 * SCALE
        for _ in range(10000):
            try:
                f = await alice.recv(0.2)
                if f["type"] == "ack":
                    acked[f["id"]] = f["seq"]
            except asyncio.TimeoutError:
                pass
            if set(acked) <= {f["id"] for f in received} or time.monotonic() > deadline:
                break
        rtask.cancel()
        ids = [f["id"] for f in received]
        missing = set(acked) - set(ids)
        assert not missing, f"{len(missing)} acked chats never reached bob (of {len(acked)})"
        assert len(ids) == len(set(ids)), "a chat reached bob twice"
        seqs = [f["seq"] for f in received]
        assert seqs == sorted(seqs), "bob got the chats out of seq order"
        m = scrape(n2)
        print("acked", len(acked), "filled", m.get("chat_history_filled_total"),
              "gaps", m.get("chat_history_gaps_total"))
        await close_all([alice, bob])
    run(body(), timeout=90)


def test_room_keys_are_hash_tagged_and_expire(gateway_factory, redis, keys):
    (n1,) = start_nodes(gateway_factory, redis, keys, 1)

    async def body():
        alice = await user(n1, keys, "alice")
        await alice.join("tag")
        await chat_seq(alice, "k")
        assert redis.cli("TYPE", "chat:{tag}:history") == "stream"
        assert redis.cli("TYPE", "chat:{tag}:meta") == "hash"
        for k in ("chat:{tag}:history", "chat:{tag}:meta"):
            ttl = int(redis.cli("PTTL", k))
            assert 0 < ttl <= 24 * 3600 * 1000, (k, ttl)
        await alice.close()
    run(body())


def test_quiet_room_is_filled_after_a_subscriber_reconnect(gateway_factory, redis, keys):
    """Chats published while a node rebuilds its subscriber connection, and then silence: the
    node reads the history after resubscribing and delivers them without waiting for another
    chat to reveal the gap."""
    n1, n2 = start_nodes(gateway_factory, redis, keys, 2)

    def sub_id(node):
        for line in redis.cli("CLIENT", "LIST").splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if fields.get("name") == f"chat-gateway:{node}:sub":
                return fields["id"]
        return None

    async def body():
        alice, bob = await pair(n1, n2, keys, "quiet")
        exercised = 0
        for attempt in range(5):
            before = scrape(n2).get("chat_history_filled_total")
            redis.cli("CLIENT", "KILL", "ID", sub_id("n2"))
            cids = [await alice.chat(f"q{attempt}-{i}", room="quiet") for i in range(8)]
            acks = {}
            for _ in range(100):
                if len(acks) == len(cids):
                    break
                f = await alice.recv_type("ack", skip=("chat",))
                acks[f["cid"]] = f
            got = await chats_until(bob, len(cids), timeout=10 * SCALE)
            assert sorted(f["id"] for f in got) == sorted(a["id"] for a in acks.values())
            seqs = [f["seq"] for f in got]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
            await bob.assert_quiet("nothing twice")
            wait_until(lambda: sub_id("n2") is not None, 10 * SCALE, "n2 resubscribed")
            if scrape(n2).get("chat_history_filled_total") > before:
                exercised += 1
                break
        assert exercised, "no attempt published while n2 was resubscribing"
        await close_all([alice, bob])
    run(body(), timeout=90)
