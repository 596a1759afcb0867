"""HTTP and metrics edges (issue 10; docs/protocol.md "Refusals before the upgrade",
docs/operations.md):

- what RFC 9110/9112 require a server to refuse with 400 is refused on both listeners, with a
  message saying why: a missing Host in HTTP/1.1, two Host lines, an invalid Host, any
  Transfer-Encoding, Content-Length with Transfer-Encoding, an invalid or conflicting
  Content-Length, and any body at all (no request here has one: the bytes of a body declared on an
  upgrade would otherwise be read as WebSocket frames);
- every /metrics answer the tests read goes through ophelpers.Metrics, a strict parser of the
  Prometheus text format 0.0.4; its own refusals are tested here on crafted expositions, and a
  scrape with rooms named like the aggregate series (_other, _private) parses.

Raw sockets (rawws.py) send the exact bytes; every wait is bounded.
"""

import pytest

import rawws
from ophelpers import Metrics, delta, label_deltas, scrape
from rawws import RawWS, build_frame, check_json_refusal, http_exchange, upgrade_request
from wsclient import Client, run

TE = "Transfer-Encoding is not accepted: requests here have no body"
CL_TE = "Content-Length together with Transfer-Encoding"
BODY = "a request body is not accepted (Content-Length must be 0)"
BAD_CL = "invalid Content-Length"
CONFLICT = "conflicting Content-Length values"
NO_HOST = "missing Host header"
TWO_HOSTS = "more than one Host header"
BAD_HOST = "invalid Host header"

# (request head lines after the request line, body bytes, expected message); the Host line is
# added unless the case says otherwise (HOST_LINE marks where it goes)
HOST_LINE = object()
CASES = {
    "no_host": ([], b"", NO_HOST),
    "two_hosts": ([HOST_LINE, HOST_LINE], b"", TWO_HOSTS),
    "two_different_hosts": ([HOST_LINE, "Host: other.example"], b"", TWO_HOSTS),
    "host_with_path": (["Host: 127.0.0.1/ws"], b"", BAD_HOST),
    "host_with_userinfo": (["Host: user@127.0.0.1"], b"", BAD_HOST),
    "empty_host": (["Host:"], b"", BAD_HOST),
    "transfer_encoding": ([HOST_LINE, "Transfer-Encoding: chunked"], b"0\r\n\r\n", TE),
    "cl_and_te": ([HOST_LINE, "Content-Length: 5", "Transfer-Encoding: chunked"],
                  b"0\r\n\r\n", CL_TE),
    "te_and_cl": ([HOST_LINE, "Transfer-Encoding: chunked", "Content-Length: 0"], b"", CL_TE),
    "body": ([HOST_LINE, "Content-Length: 5"], b"hello", BODY),
    "two_lengths": ([HOST_LINE, "Content-Length: 5", "Content-Length: 6"], b"hello", CONFLICT),
    "length_list": ([HOST_LINE, "Content-Length: 0, 5"], b"hello", CONFLICT),
    "bad_length": ([HOST_LINE, "Content-Length: 5x"], b"", BAD_CL),
    "negative_length": ([HOST_LINE, "Content-Length: -1"], b"", BAD_CL),
}


def request(port, path, lines, body, upgrade=True):
    host = f"Host: 127.0.0.1:{port}"
    head = [f"GET {path} HTTP/1.1"] + [host if x is HOST_LINE else x for x in lines]
    if upgrade:
        head += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                 f"Sec-WebSocket-Key: {rawws.SAMPLE_KEY}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# ---- the public port ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_public_port_refuses_bad_framing_with_400(gateway_factory, case):
    lines, body, message = CASES[case]
    gw = gateway_factory()
    m0 = scrape(gw)
    for path, upgrade in (("/ws", True), ("/chat/lobby", True), ("/", False)):
        resp = http_exchange(gw.port, request(gw.port, path, lines, body, upgrade))
        got = check_json_refusal(resp, 400, "bad_request")
        assert got["message"] == message, f"{case} on {path}: {got}"
    m1 = scrape(gw)
    assert delta(m1, m0, "chat_handshake_rejected_total", status="400") == 3
    assert m1.get("chat_connections_opened_total") == 0


def test_a_declared_body_is_not_read_as_websocket_frames(gateway_factory):
    """An upgrade that declares its following bytes as a body (Content-Length, or chunked)
    would get them read as WebSocket frames: a proxy that forwards the "body" has smuggled a
    join. Refused: no 101, nothing joined. (Before: 101, welcome, joined.)"""
    gw = gateway_factory()
    frame = build_frame(rawws.OP_TEXT, b'{"type":"join","room":"smuggled"}')
    for extra in ([f"Content-Length: {len(frame)}"], ["Transfer-Encoding: chunked"]):
        with RawWS(gw.port) as ws:
            ws.sock.sendall(upgrade_request("/ws", port=gw.port, extra=extra) + frame)
            head = ws._read_until(b"\r\n\r\n")
            status, _, _ = rawws.parse_head(head)
            assert status == 400, f"{extra}: answered {head!r} {ws.buf[:200]!r}"
            ws.expect_eof()
    assert scrape(gw).get("chat_rooms") == 0


def test_what_the_framing_rules_still_accept(gateway_factory):
    """Content-Length: 0 is no body; an HTTP/1.0 request needs no Host (the demo page); Host
    may carry a port, an IPv6 literal or a name."""
    gw = gateway_factory()
    for extra, host in ((["Content-Length: 0"], None), ([], "[::1]:8080"), ([], "chat.example"),
                        (["content-length: 00"], "localhost")):
        req = upgrade_request("/ws", port=gw.port, extra=extra)
        if host is not None:
            req = req.replace(f"Host: 127.0.0.1:{gw.port}".encode(), f"Host: {host}".encode())
        with RawWS(gw.port) as ws:
            ws.open(request=req)
            assert ws.recv_json()["type"] == "welcome"
    resp = http_exchange(gw.port, b"GET / HTTP/1.0\r\n\r\n")
    assert resp.status == 200 and resp.header("content-type").startswith("text/html"), resp


# ---- the admin port: the same parser, the same rules --------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_admin_port_refuses_bad_framing_with_400(gateway_factory, case):
    lines, body, message = CASES[case]
    gw = gateway_factory()
    for path in ("/healthz", "/metrics", "/readyz"):
        resp = http_exchange(gw.admin_port, request(gw.admin_port, path, lines, body, False))
        got = check_json_refusal(resp, 400, "bad_request")
        assert got["message"] == message, f"{case} on {path}: {got}"
    m = scrape(gw)
    assert m.get("chat_admin_refused_total", reason="bad_request") == 3


def test_admin_port_head_limit_is_431(gateway_factory):
    gw = gateway_factory()
    req = request(gw.admin_port, "/healthz", [HOST_LINE, "X-Pad: " + "p" * 5000], b"", False)
    check_json_refusal(http_exchange(gw.admin_port, req), 431, "header_too_large")
    assert scrape(gw).get("chat_admin_refused_total", reason="bad_request") == 1


# ---- the strict Prometheus parser ---------------------------------------------------------------

GOOD = """\
# HELP a_total Things, with a \\\\ and a \\n in the help.
# TYPE a_total counter
a_total{k="v",q="x\\"y\\\\z\\nw"} 3
a_total{k="w"} 0
# HELP g A gauge.
# TYPE g gauge
g -1.5e3
# HELP empty_total Declared before its first sample.
# TYPE empty_total counter
# HELP h_seconds A histogram.
# TYPE h_seconds histogram
h_seconds_bucket{le="0.1"} 1
h_seconds_bucket{le="1"} 3
h_seconds_bucket{le="+Inf"} 4
h_seconds_sum 2.5
h_seconds_count 4
"""

BAD = {
    "sample_before_type": ("# HELP x X.\nx 1\n# TYPE x counter\n", "before"),
    "no_help": ("# TYPE x counter\nx 1\n", "HELP"),
    "help_only": ("# HELP x X.\n", "HELP or # TYPE"),
    "help_after_samples": ("# TYPE x counter\nx 1\n# HELP x X.\n", "HELP"),
    "family_twice": ("# HELP x X.\n# TYPE x counter\nx 1\n# HELP y Y.\n# TYPE y gauge\ny 1\n"
                     "# HELP x X.\n", "declared again"),
    "type_twice": ("# HELP x X.\n# TYPE x counter\n# TYPE x counter\nx 1\n", "second # TYPE"),
    "bad_metric_name": ("# HELP 1x X.\n# TYPE 1x counter\n1x 1\n", ""),
    "bad_label_name": ('# HELP x X.\n# TYPE x counter\nx{a-b="1"} 1\n', "label"),
    "reserved_label_name": ('# HELP x X.\n# TYPE x counter\nx{__a="1"} 1\n', "reserved"),
    "bad_escape": ('# HELP x X.\n# TYPE x counter\nx{a="\\t"} 1\n', "escape"),
    "raw_quote": ('# HELP x X.\n# TYPE x counter\nx{a="b"c"} 1\n', "label"),
    "bad_help_escape": ("# HELP x X \\\" Y.\n# TYPE x counter\nx 1\n", "escape"),
    "duplicate_series": ('# HELP x X.\n# TYPE x counter\nx{a="1",b="2"} 1\nx{b="2",a="1"} 2\n',
                         "duplicate"),
    "negative_counter": ("# HELP x X.\n# TYPE x counter\nx -1\n", "counter sample"),
    "nan_counter": ("# HELP x X.\n# TYPE x counter\nx NaN\n", "counter sample"),
    "text_value": ("# HELP x X.\n# TYPE x counter\nx one\n", "value"),
    "hex_value": ("# HELP x X.\n# TYPE x counter\nx 0x10\n", "value"),
    "foreign_sample": ("# HELP x X.\n# TYPE x gauge\nx_total 1\n", "TYPE"),
    "summary_bucket": ('# HELP s S.\n# TYPE s summary\ns_bucket{le="1"} 1\n', "does not belong"),
    "not_contiguous": ("# HELP x X.\n# TYPE x counter\nx{a=\"1\"} 1\n# HELP y Y.\n# TYPE y gauge\n"
                       "y 1\nx{a=\"2\"} 1\n", "contiguous"),
    "blank_line": ("# HELP x X.\n\n# TYPE x counter\nx 1\n", "blank"),
    "other_comment": ("# HELP x X.\n# TYPE x counter\n# a comment\nx 1\n", "neither"),
    "no_final_newline": ("# HELP x X.\n# TYPE x counter\nx 1", "newline"),
    "buckets_not_cumulative": ('# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 3\n'
                               'h_bucket{le="2"} 2\nh_bucket{le="+Inf"} 3\nh_sum 1\nh_count 3\n',
                               "bucket"),
    "inf_bucket_not_count": ('# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 1\n'
                             'h_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n', "_count"),
    "no_inf_bucket": ('# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\n'
                      'h_count 1\n', "+Inf"),
    "no_sum": ('# HELP h H.\n# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n', "_sum"),
    "bucket_without_le": ('# HELP h H.\n# TYPE h histogram\nh_bucket 1\nh_sum 1\nh_count 1\n',
                          "le"),
    "le_not_a_number": ('# HELP h H.\n# TYPE h histogram\nh_bucket{le="x"} 1\n'
                        'h_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', "value"),
    "histogram_plain_sample": ('# HELP h H.\n# TYPE h histogram\nh 1\n', "does not belong"),
}


def test_strict_parser_accepts_a_valid_exposition():
    m = Metrics(GOOD)
    assert m.get("a_total", k="v", q='x"y\\z\nw') == 3
    assert m.families["a_total"]["help"] == "Things, with a \\ and a \n in the help."
    assert m.get("h_seconds_bucket", le="+Inf") == 4 and m.families["empty_total"]
    assert m.get("g") == -1500


@pytest.mark.parametrize("case", sorted(BAD))
def test_strict_parser_refuses(case):
    text, why = BAD[case]
    with pytest.raises(AssertionError) as e:
        Metrics(text)
    assert why in str(e.value), f"{case}: refused for another reason: {e.value}"


def test_rooms_named_like_the_overflow_series_keep_the_exposition_valid(gateway_factory):
    """Rooms called _other and _private next to the real overflow (--metrics-top-rooms 2, so a
    third public room evicts one into _other): every scrape along the way parses strictly (one
    series per label set, histogram buckets cumulative up to _count), and the room series add
    up to the chats sent."""
    gw = gateway_factory("--metrics-top-rooms", "2", "--rate-limit", "0",
                         "--user-rate-limit", "0")
    m0 = scrape(gw)
    plan = (("busy", 4), ("_other", 2), ("_private", 3), ("quiet", 1), ("extra", 1))
    scrapes = []

    async def body():
        a = await Client.open(gw, "/ws")
        for room, _ in plan:
            await a.join(room)
        for room, n in plan:
            for i in range(n):
                await a.chat_confirmed(f"m{i}", room=room)
            scrapes.append(scrape(gw))
        await a.close()

    run(body(), timeout=30)
    sent = 0
    for (room, n), m in zip(plan, scrapes):
        sent += n
        series = m.series("chat_room_messages_total")
        assert sum(v for _, v in series) == sent, (room, series)
        assert len({tuple(sorted(lbl.items())) for lbl, _ in series}) == len(series)
    deltas = label_deltas(scrapes[-1], m0, "chat_room_messages_total", "room")
    assert deltas["busy"] == 4 and deltas["_other"] >= 5 and sum(deltas.values()) == 11, deltas
    assert set(deltas) <= {"busy", "quiet", "extra", "_other"}, deltas
    assert scrapes[-1].get("chat_delivery_latency_seconds_count") > 0
