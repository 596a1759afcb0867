"""Raw-socket helpers: exact HTTP request bytes, and a minimal blocking WebSocket peer that can
send frames a correct client never would (unmasked, reserved opcodes, invalid UTF-8...)."""

import base64
import hashlib
import json
import os
import socket
import struct
import time

from harness import TIMEOUT_SCALE

TIMEOUT = 5.0 * TIMEOUT_SCALE
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def upgrade_request(path="/ws", method="GET", port=0, version="HTTP/1.1", upgrade="websocket",
                    connection="Upgrade", ws_version="13", key=SAMPLE_KEY, extra=()):
    """Builds a request head; any header given as None is left out."""
    lines = [f"{method} {path} {version}", f"Host: 127.0.0.1:{port}"]
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    if ws_version is not None:
        lines.append(f"Sec-WebSocket-Version: {ws_version}")
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def plain_request(path="/", method="GET", port=0, extra=()):
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Response:
    def __init__(self, status, reason, headers, body, closed):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lower-case name, value)
        self.body = body
        self.closed = closed  # the gateway closed the TCP connection after the response

    def header(self, name):
        vals = [v for n, v in self.headers if n == name.lower()]
        return vals[0] if vals else None

    def header_tokens(self, name):
        return {t.strip().lower() for n, v in self.headers if n == name.lower()
                for t in v.split(",")}

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:300]!r} closed={self.closed}>"


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert len(parts) >= 2 and parts[0].startswith("HTTP/1."), f"bad status line {lines[0]!r}"
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        assert sep, f"bad header line {line!r}"
        headers.append((name.strip().lower(), value.strip()))
    return status, reason, headers


def http_exchange(port, request, timeout=TIMEOUT, chunk_delay=None, check_length=True):
    """Sends `request` (bytes), reads the response until the gateway closes the connection or
    the timeout. chunk_delay: send one byte at a time with that pause. check_length: the body
    must be exactly Content-Length bytes (not for answers to HEAD)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if chunk_delay is None:
            s.sendall(request)
        else:
            for i in range(len(request)):
                s.sendall(request[i:i + 1])
                time.sleep(chunk_delay)
        data = b""
        closed = False
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    assert b"\r\n\r\n" in data, f"no complete response head within {timeout}s: {data[:500]!r}"
    head, _, rest = data.partition(b"\r\n\r\n")
    status, reason, headers = parse_head(head)
    resp = Response(status, reason, headers, rest, closed)
    cl = resp.header("content-length")
    if cl is not None and check_length:
        assert int(cl) == len(rest), f"Content-Length {cl} but body has {len(rest)} bytes: {resp}"
    return resp


def mask_payload(payload, key):
    n = len(payload)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def build_frame(opcode, payload=b"", fin=True, rsv=0, masked=True, key=None):
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = key or os.urandom(4)
    return head + key + mask_payload(payload, key)


class RawWS:
    """Blocking raw WebSocket client. open() does the handshake and keeps any bytes after the
    101 head as the start of the frame stream."""

    def __init__(self, port, timeout=TIMEOUT, rcvbuf=None):
        """rcvbuf: SO_RCVBUF set before connecting (a small one makes a client that stops
        reading fill up fast)."""
        self.port = port
        self.timeout = timeout
        if rcvbuf is None:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.response = None

    def open(self, path="/ws", request=None, extra_after_head=b""):
        req = request if request is not None else upgrade_request(path, port=self.port)
        self.sock.sendall(req + extra_after_head)
        head = self._read_until(b"\r\n\r\n")
        status, reason, headers = parse_head(head)
        self.response = Response(status, reason, headers, b"", False)
        assert status == 101, f"handshake refused: {status} {reason} {headers} {self.buf[:300]!r}"
        return self

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out waiting for data")
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the gateway")
        self.buf += chunk

    def _read_until(self, sep):
        deadline = time.monotonic() + self.timeout
        for _ in range(100000):
            if sep in self.buf:
                head, _, self.buf = self.buf.partition(sep)
                return head
            self._fill(deadline)
        raise AssertionError("no response head")

    def _read_exact(self, n, deadline):
        for _ in range(100000):
            if len(self.buf) >= n:
                out, self.buf = self.buf[:n], self.buf[n:]
                return out
            self._fill(deadline)
        raise AssertionError("short read")

    def send_frame(self, opcode, payload=b"", fin=True, rsv=0, masked=True):
        self.sock.sendall(build_frame(opcode, payload, fin=fin, rsv=rsv, masked=masked))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def recv_frame(self, timeout=None):
        """Returns (fin, rsv, opcode, payload). Server frames must not be masked."""
        deadline = time.monotonic() + (timeout or self.timeout)
        b0, b1 = self._read_exact(2, deadline)
        assert not b1 & 0x80, "the gateway sent a masked frame"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read_exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read_exact(8, deadline))[0]
        payload = self._read_exact(n, deadline)
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload

    def recv_json(self, timeout=None):
        fin, rsv, op, payload = self.recv_frame(timeout)
        assert (fin, rsv, op) == (True, 0, OP_TEXT), f"expected a text frame, got op {op} {payload!r}"
        return json.loads(payload.decode("utf-8"))

    def expect_close(self, timeout=None, max_frames=100):
        """Reads frames (dropping data frames) until a close frame; answers it; returns its code
        (None when the close frame had no code)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        for _ in range(max_frames):
            fin, rsv, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op == OP_CLOSE:
                try:
                    self.send_frame(OP_CLOSE, payload[:2])
                except OSError:
                    pass
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        raise AssertionError("no close frame")

    def expect_eof(self, timeout=None):
        """The gateway closes the TCP connection within the timeout (no more data)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        for _ in range(1000):
            left = deadline - time.monotonic()
            assert left > 0, "the gateway kept the TCP connection open"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError("the gateway kept the TCP connection open") from None
            except ConnectionResetError:
                return
            if not chunk:
                return
        raise AssertionError("the gateway kept sending data")

    def recv_close(self, timeout=None, max_frames=100, answer_pings=False):
        """Reads frames until a close frame, which it does not answer. Returns (code, reason,
        frames before it as (opcode, payload)); code None when the close frame had no code.
        answer_pings: answer each ping with a pong carrying its payload."""
        deadline = time.monotonic() + (timeout or self.timeout)
        before = []
        for _ in range(max_frames):
            fin, rsv, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return code, payload[2:].decode("utf-8", "replace"), before
            if op == OP_PING and answer_pings:
                self.send_frame(OP_PONG, payload)
            before.append((op, payload))
        raise AssertionError(f"no close frame within {max_frames} frames")

    def tcp_state(self):
        """The kernel's TCP state of this socket (TCP_ESTABLISHED, TCP_CLOSE_WAIT, ...)."""
        return tcp_state(self.sock)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- helpers for the connection-safety tests ---------------------------------------------------

TCP_ESTABLISHED, TCP_CLOSE, TCP_CLOSE_WAIT = 1, 7, 8
TCP_STATE_NAMES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
                   6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
                   11: "CLOSING"}


def open_raw(gw, path="/ws"):
    """A RawWS upgraded on gw's port, past the welcome (and the joined of /chat/{room})."""
    ws = RawWS(gw.port).open(path)
    assert ws.recv_json()["type"] == "welcome"
    if path.startswith("/chat/"):
        assert ws.recv_json()["type"] == "joined"
    return ws


def tcp_state(sock):
    """tcpi_state from TCP_INFO (Linux): whether the peer's FIN (CLOSE_WAIT) or reset (CLOSE)
    arrived, without reading the data that is still queued before it."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def check_json_refusal(resp, status, error):
    """What a refused client sees: `status`, Connection: close, a JSON body
    {"error": error, "message": non-empty}, and the connection closed by the gateway."""
    assert resp.status == status, f"expected {status} {error}, got {resp}"
    assert "close" in resp.header_tokens("connection"), f"no Connection: close in {resp}"
    assert (resp.header("content-type") or "").startswith("application/json"), resp
    body = resp.json()
    assert isinstance(body, dict), resp
    assert body.get("error") == error, f"expected error {error!r}, body {body}"
    assert isinstance(body.get("message"), str) and body["message"], f"body {body}"
    assert resp.closed, "the gateway did not close the connection after the refusal"
    assert resp.header("sec-websocket-accept") is None, resp
    return body
