"""The documented example responses are what a real gateway answers.

- docs/protocol.md: every fenced block that holds an HTTP exchange (a request, then a line
  `HTTP/1.1 NNN Reason`): the request is sent as written (a line `...` stands for the rest of a
  valid upgrade request), and the real answer must have the documented status line, exactly the
  documented headers (Content-Length included: the gateway sends no varying header such as
  Date) and byte for byte the documented body.
- docs/operations.md: the admin endpoints' table gives `NNN {json}` answers for `GET /healthz` and
  `GET /readyz`; each is produced for real (for a 503 of /readyz, a gateway in exactly the
  listed failed conditions: broker down, draining, at --max-connections) and must match in
  status and body bytes.
"""

import asyncio
import json
import re
import signal

import harness
import rawws
from ophelpers import wait_exit, wait_until
from wsclient import Client, close_all, run

DOCS = harness.REPO_ROOT / "docs"
SCALE = harness.TIMEOUT_SCALE


# ---- docs/protocol.md: HTTP exchanges in fenced blocks -------------------------------------------

def http_examples(text):
    """[(request lines, status line, [(name, value)], body bytes)] of every fenced block that
    holds an HTTP response."""
    out = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S):
        lines = block.split("\n")
        at = [i for i, line in enumerate(lines) if re.match(r"HTTP/1\.[01] \d{3} ", line)]
        if not at:
            continue
        assert len(at) == 1, f"one response per example block: {block!r}"
        i = at[0]
        request = [line for line in lines[:i] if line.strip()]
        head, body = [], []
        rest = lines[i + 1:]
        for k, line in enumerate(rest):
            if not line.strip():
                body = rest[k + 1:]
                break
            head.append(line)
        headers = []
        for line in head:
            name, sep, value = line.partition(":")
            assert sep, f"bad header line {line!r} in {block!r}"
            headers.append((name.strip().lower(), value.strip()))
        out.append((request, lines[i], headers, "\n".join(body).rstrip("\n").encode()))
    return out


UPGRADE_HEADERS = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", rawws.SAMPLE_KEY)]


def build_request(lines, port):
    """The example's request as bytes: its request line and headers, plus Host; a line `...`
    adds the headers of a valid upgrade that the example does not give itself."""
    method, path, version = lines[0].split(" ")
    assert version == "HTTP/1.1", lines[0]
    given = []
    for line in lines[1:]:
        if line.strip() != "...":
            name, sep, value = line.partition(":")
            assert sep, f"bad request line {line!r}"
            given.append((name.strip(), value.strip()))
    names = {n.lower() for n, _ in given}
    headers = [] if "host" in names else [("Host", f"127.0.0.1:{port}")]
    if any(line.strip() == "..." for line in lines[1:]):
        headers += [(n, v) for n, v in UPGRADE_HEADERS if n.lower() not in names]
    headers += given
    head = [lines[0]] + [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def test_protocol_md_http_examples(gateway_factory):
    examples = http_examples((DOCS / "protocol.md").read_text())
    assert examples, "no HTTP example found in docs/protocol.md (the parser or the doc changed)"
    gw = gateway_factory()
    for request, status_line, headers, body in examples:
        resp = rawws.http_exchange(gw.port, build_request(request, gw.port))
        real_status = f"HTTP/1.1 {resp.status} {resp.reason}"
        where = f"docs/protocol.md example {request[0]!r}"
        assert real_status == status_line, \
            f"{where}: documented {status_line!r}, the gateway answers {real_status!r}"
        assert sorted(resp.headers) == sorted(headers), \
            f"{where}: documented headers {headers}, the gateway sends {resp.headers}"
        assert resp.body == body, \
            f"{where}: documented body {body!r}, the gateway sends {resp.body!r}"
        documented_length = dict(headers).get("content-length")
        if documented_length is not None:
            assert int(documented_length) == len(body), \
                f"{where}: Content-Length {documented_length} for a {len(body)}-byte body"


# ---- docs/operations.md: the admin endpoints' answers --------------------------------------------

def admin_examples(text):
    """{path: [(status, body text)]} from the rows `| `GET /path` | ... `NNN {...}` ... |`."""
    out = {}
    for m in re.finditer(r"^\| `GET (/[a-z]+)` \|(.*)$", text, re.M):
        found = re.findall(r"`(\d{3}) (\{[^`]*\})`", m.group(2))
        if found:
            out[m.group(1)] = [(int(s), b) for s, b in found]
    return out


def admin_get(port, path):
    resp = rawws.http_exchange(port, rawws.plain_request(path, port=port))
    assert (resp.header("content-type") or "").startswith("application/json"), resp
    return resp


def failed_conditions(body):
    obj = json.loads(body)
    return obj.get("failed", []) if obj.get("ready") is False else []


CONDITIONS = {"broker", "draining", "capacity"}


def test_operations_md_admin_examples(gateway_factory):
    examples = admin_examples((DOCS / "operations.md").read_text())
    assert set(examples) >= {"/healthz", "/readyz"}, \
        f"docs/operations.md: no example answers found for /healthz and /readyz: {examples}"
    for path, answers in sorted(examples.items()):
        for status, body in answers:
            where = f"docs/operations.md: GET {path} -> {status} {body}"
            failed = failed_conditions(body) if path == "/readyz" else []
            unknown = set(failed) - CONDITIONS
            assert not unknown, f"{where}: the test does not know the condition(s) {unknown}"
            resp = produce(gateway_factory, path, set(failed))
            assert (resp.status, resp.body.decode()) == (status, body), \
                f"{where}: the gateway answers {resp.status} {resp.body!r}"


def produce(gateway_factory, path, failed):
    """GET path on the admin port of a new gateway whose readiness fails exactly `failed`."""
    args = []
    if "broker" in failed:  # a Redis that is not there
        args += ["--redis-url", f"redis://127.0.0.1:{harness.free_port()}", "--redis-timeout",
                 "1s"]
    if "capacity" in failed:
        args += ["--max-connections", "1"]
    if "draining" in failed:
        args += ["--drain-delay", "3s", "--drain-timeout", "6s"]
    gw = gateway_factory(*args)
    if not failed:
        return admin_get(gw.admin_port, path)

    result = {}

    async def body():
        # One open connection: fills --max-connections 1, and keeps a draining node from
        # exiting at once.
        c = await Client.open(gw)
        try:
            if "draining" in failed:
                gw.proc.send_signal(signal.SIGTERM)

            def settled():
                r = admin_get(gw.admin_port, path)
                return r if r.status == 503 and \
                    set(failed_conditions(r.body.decode())) == failed else None

            loop = asyncio.get_running_loop()
            try:
                result["resp"] = await loop.run_in_executor(
                    None, lambda: wait_until(settled, 2.5 * SCALE,
                                             f"/readyz to fail exactly {sorted(failed)}"))
            except AssertionError:
                result["resp"] = admin_get(gw.admin_port, path)
        finally:
            await close_all([c])

    run(body(), timeout=30)
    if "draining" in failed:
        rc, _ = wait_exit(gw, 10 * SCALE)
        assert rc == 0, f"exit code {rc} after the drain"
    return result["resp"]
