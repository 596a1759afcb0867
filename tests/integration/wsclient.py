"""A small asyncio client over python3-websockets 10.4 that speaks the gateway's JSON protocol.

Every receive is bounded by a timeout; every loop by a count. Frame types are never skipped
silently: helpers that skip take the explicit set of types they may skip.
"""

import asyncio
import json
import re
import time

import websockets
import websockets.exceptions

from harness import TIMEOUT_SCALE

TIMEOUT = 5.0 * TIMEOUT_SCALE  # one expected frame
MAX_FRAMES = 2000  # frames one helper call will look at, at most

ConnectionClosed = websockets.exceptions.ConnectionClosed


def run(coro, timeout=30.0):
    """Runs one async test body with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout * TIMEOUT_SCALE))


def now_ms():
    return int(time.time() * 1000)


async def ws_connect(gw, path="/ws", **kw):
    opts = dict(open_timeout=10 * TIMEOUT_SCALE, close_timeout=3 * TIMEOUT_SCALE,
                ping_interval=None, max_size=2 ** 20)
    opts.update(kw)
    return await websockets.connect(gw.url + path, **opts)


def decode(msg):
    assert isinstance(msg, str), f"expected a text frame, got binary {msg!r}"
    obj = json.loads(msg)
    assert isinstance(obj, dict), f"frame is not a JSON object: {msg!r}"
    assert isinstance(obj.get("type"), str), f"frame without a string type: {msg!r}"
    return obj


class Client:
    """One WebSocket connection. After open(): .welcome, .user, .conn (and the room of
    /chat/{room} already joined)."""

    def __init__(self, ws, welcome):
        self.ws = ws
        self.welcome = welcome
        self.user = welcome.get("user")
        self.conn = welcome.get("conn")
        self._cid = 0

    @classmethod
    async def open(cls, gw, path="/ws", **kw):
        ws = await ws_connect(gw, path, **kw)
        try:
            first = decode(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert first["type"] == "welcome", f"first frame is not welcome: {first}"
            c = cls(ws, first)
            if path.startswith("/chat/"):
                room = path[len("/chat/"):].split("?", 1)[0]
                c.joined = check_joined(await c.recv(), room,
                                        recovery="since=" in path.split("?", 1)[-1])
            return c
        except BaseException:
            ws.transport.abort()
            raise

    def next_cid(self):
        self._cid += 1
        return f"c-{self._cid}"

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv(self, timeout=TIMEOUT):
        """The next frame, whatever its type."""
        return decode(await asyncio.wait_for(self.ws.recv(), timeout))

    async def recv_type(self, type_, timeout=TIMEOUT, skip=()):
        """The next frame of type `type_`; frames whose type is in `skip` are dropped, any other
        frame fails the test."""
        deadline = time.monotonic() + timeout
        for _ in range(MAX_FRAMES):
            left = deadline - time.monotonic()
            assert left > 0, f"no {type_!r} frame within {timeout}s"
            try:
                f = await self.recv(left)
            except asyncio.TimeoutError:
                raise AssertionError(f"no {type_!r} frame within {timeout}s") from None
            if f["type"] == type_:
                return f
            assert f["type"] in skip, f"expected a {type_!r} frame, got {f}"
        raise AssertionError(f"no {type_!r} frame within {MAX_FRAMES} frames")

    async def recv_until_pong(self, timeout=TIMEOUT):
        """Sends {"type":"ping"} and returns every frame that arrived before the pong.

        The gateway answers in order, so this is a barrier: anything the gateway had queued for
        this connection before it read our ping is in the returned list."""
        await self.send({"type": "ping"})
        got = []
        deadline = time.monotonic() + timeout
        for _ in range(MAX_FRAMES):
            left = deadline - time.monotonic()
            assert left > 0, f"no pong within {timeout}s (got {got[:20]})"
            try:
                f = await self.recv(left)
            except asyncio.TimeoutError:
                raise AssertionError(f"no pong within {timeout}s (got {got[:20]})") from None
            if f == {"type": "pong"}:
                return got
            got.append(f)
        raise AssertionError(f"no pong within {MAX_FRAMES} frames")

    async def assert_quiet(self, what="nothing"):
        """Fails if any frame is pending for this connection (ping/pong barrier)."""
        got = await self.recv_until_pong()
        assert got == [], f"expected {what}, but received {got}"

    async def join(self, room, skip=(), since=None):
        """Joins room (since: {"seq":..,"epoch":..} asks for recovery) and returns `joined`."""
        msg = {"type": "join", "room": room}
        if since is not None:
            msg["since"] = since
        await self.send(msg)
        return check_joined(await self.recv_type("joined", skip=skip), room,
                            recovery=since is not None)

    async def leave(self, room, skip=()):
        await self.send({"type": "leave", "room": room})
        f = await self.recv_type("left", skip=skip)
        assert f == {"type": "left", "room": room}
        return f

    async def chat(self, text, room=None, cid=None, **extra):
        """Sends a chat; returns its cid."""
        cid = cid or self.next_cid()
        msg = {"type": "chat", "text": text, "cid": cid}
        if room is not None:
            msg["room"] = room
        msg.update(extra)
        await self.send(msg)
        return cid

    async def chat_confirmed(self, text, room=None, skip=(), **extra):
        """Sends a chat and waits for both its ack and the sender's own copy (either order).
        Returns (ack, copy) after checking that they match each other."""
        cid = await self.chat(text, room=room, **extra)
        ack = copy = None
        for _ in range(MAX_FRAMES):
            if ack is not None and copy is not None:
                break
            f = await self.recv()
            if f["type"] == "ack" and ack is None:
                ack = f
            elif f["type"] == "chat" and copy is None and f.get("user") == self.user \
                    and f.get("text") == text:
                copy = f
            else:
                assert f["type"] in skip, f"while waiting for ack+copy of {cid}: unexpected {f}"
        assert ack is not None and copy is not None
        assert ack["cid"] == cid, f"ack for another cid: {ack} (sent {cid})"
        assert ack["id"] == copy["id"], f"ack id {ack['id']!r} != own copy id {copy['id']!r}"
        assert ack["room"] == copy["room"]
        return ack, copy

    async def error(self, code, timeout=TIMEOUT):
        f = await self.recv(timeout)
        assert f.get("type") == "error", f"expected error {code}, got {f}"
        assert f.get("code") == code, f"expected error code {code}, got {f}"
        assert isinstance(f.get("message"), str) and f["message"], f"error without message: {f}"
        return f

    async def expect_closed(self, timeout=TIMEOUT):
        """Reads (and drops, bounded) frames until the gateway closes the connection; returns
        the close code the gateway sent."""
        deadline = time.monotonic() + timeout
        for _ in range(MAX_FRAMES):
            left = deadline - time.monotonic()
            assert left > 0, f"connection still open after {timeout}s"
            try:
                await asyncio.wait_for(self.ws.recv(), left)
            except ConnectionClosed:
                return self.ws.close_code
            except asyncio.TimeoutError:
                raise AssertionError(f"connection still open after {timeout}s") from None
        raise AssertionError("connection not closed")

    async def close(self):
        await self.ws.close()

    def abort(self):
        """Drops the TCP connection without a close frame."""
        self.ws.transport.abort()


async def open_clients(gw, paths):
    return [await Client.open(gw, p) for p in paths]


async def close_all(clients):
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


EPOCH_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


def check_position(frame):
    """seq and epoch as history puts them on joined and chat frames (when history is on)."""
    seq, epoch = frame["seq"], frame["epoch"]
    assert isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= 2 ** 53, frame
    assert isinstance(epoch, str) and EPOCH_RE.fullmatch(epoch), frame


def check_joined(frame, room, recovery=False):
    """A `joined` for room: with history on it carries seq and epoch; after a join with since,
    "recovered" (a boolean). Returns the frame."""
    assert frame["type"] == "joined" and frame["room"] == room, f"expected joined {room}: {frame}"
    keys = {"type", "room"}
    if "seq" in frame or "epoch" in frame:
        check_position(frame)
        keys |= {"seq", "epoch"}
    if recovery:
        assert isinstance(frame.get("recovered"), bool), frame
        keys.add("recovered")
    assert set(frame) == keys, f"fields of {frame}"
    return frame


def check_chat(frame, room, user, text):
    """A delivered chat frame has exactly the documented fields with the server's values (seq
    and epoch with history on)."""
    assert frame["type"] == "chat"
    keys = {"type", "room", "id", "user", "text", "ts"}
    if "seq" in frame or "epoch" in frame:
        check_position(frame)
        assert frame["seq"] >= 1, frame
        keys |= {"seq", "epoch"}
    assert set(frame) == keys, f"fields of {frame}"
    assert frame["room"] == room
    assert frame["user"] == user
    assert frame["text"] == text
    assert isinstance(frame["id"], str) and frame["id"], frame
    check_ts(frame["ts"])


def check_ts(ts, slack_ms=10_000):
    assert isinstance(ts, int) and not isinstance(ts, bool), f"ts is not an integer: {ts!r}"
    assert abs(ts - now_ms()) <= slack_ms * TIMEOUT_SCALE, f"ts {ts} is not close to now {now_ms()}"


def check_system(frame, room, event, user):
    assert frame["type"] == "system", frame
    assert frame["room"] == room, frame
    assert frame["event"] == event, frame
    assert frame["user"] == user, frame
    check_ts(frame["ts"])


USER_RE = r"guest-{node}-\d+"


def user_pattern(node_id):
    return re.compile(USER_RE.format(node=re.escape(node_id)))
