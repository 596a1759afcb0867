#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets: gen_corpus.py [OUT_DIR] (default: the
corpus/ directory next to this file). Each seed is named after what it holds; the input layouts
are described at the top of each fuzz_*.c. Run it again after changing a layout, and commit the
result (run.sh fuzzes a copy, so the committed corpus only changes here)."""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")

WHOLE = b"\xff\xff\xff"  # chunk sizes: 255-byte feeds
BYTES = b"\x00\x00\x00"  # chunk sizes: empty feed + 1 byte, every time
MIXED = b"\x01\x07\x40"  # chunk sizes: 1, 7, 64, ...
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 sample key


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- http_upgrade: 1 byte head limit (0 = 8192, else b * 32), 3 chunk sizes, the request ----

def req(target="/ws", method="GET", version="1.1", headers=None, eol="\r\n", end=True):
    if headers is None:
        headers = [("Host", "chat.example"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Key", KEY), ("Sec-WebSocket-Version", "13")]
    s = f"{method} {target} HTTP/{version}{eol}"
    s += "".join(f"{k}: {v}{eol}" for k, v in headers)
    if end:
        s += eol
    return s.encode("latin-1")


def http(name, body, limit=0, chunks=WHOLE):
    write("http_upgrade", name, bytes([limit]) + chunks + body)


def std_headers(**over):
    h = {"Host": "chat.example", "Upgrade": "websocket", "Connection": "Upgrade",
         "Sec-WebSocket-Key": KEY, "Sec-WebSocket-Version": "13"}
    h.update(over)
    return [(k, v) for k, v in h.items() if v is not None]


http("upgrade_ws_whole", req())
http("upgrade_ws_bytewise", req(), chunks=BYTES)
http("upgrade_chat_room_subprotocol", req("/chat/lobby", headers=std_headers(
    **{"Sec-WebSocket-Protocol": "chat.v1"})), chunks=MIXED)
http("upgrade_subprotocol_list", req("/chat/room-1", headers=std_headers(
    **{"Sec-WebSocket-Protocol": "superchat, chat.v1 ,x"})), chunks=b"\x03\x00\x11")
http("upgrade_subprotocol_other_case", req("/ws", headers=std_headers(
    **{"Sec-WebSocket-Protocol": "CHAT.V1"})))
http("upgrade_token_lists", req("/ws", headers=std_headers(
    Connection="keep-alive, Upgrade", Upgrade="h2c,\tWebSocket")))
http("upgrade_then_frame", req() + bytes([0x81, 0x85, 1, 2, 3, 4]) + bytes(
    b ^ [1, 2, 3, 4][i % 4] for i, b in enumerate(b"hello")), chunks=MIXED)
http("upgrade_query", req("/ws?token=abc.def&x=?y"))
http("upgrade_bare_lf", req(eol="\n"), chunks=b"\x05\x05\x05")
http("upgrade_lowercase_ows",
     b"GET /ws HTTP/1.1\r\nhost:chat.example:80\r\nupgrade:websocket\r\n"
     b"connection: \t upgrade \t\r\n"
     b"sec-websocket-key:   " + KEY.encode() + b"\r\nsec-websocket-version:13\r\nX-Empty:\r\n"
     b"X-Obs: caf\xe9\r\n\r\n")
http("demo_page", req("/", headers=[("Host", "chat.example"), ("Accept", "text/html")]))
http("refuse_post_405", req(method="POST"))
http("refuse_unknown_path_404", req("/nope"))
http("refuse_upgrade_on_root_404", req("/"))
http("refuse_no_upgrade_400", req(headers=std_headers(Upgrade=None)))
http("refuse_version_426", req(headers=std_headers(**{"Sec-WebSocket-Version": "8"})))
http("refuse_bad_key_400",  # the last character leaves non-zero padding bits
     req(headers=std_headers(**{"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZR=="})))
http("refuse_short_key_400", req(headers=std_headers(**{"Sec-WebSocket-Key": "abc"})))
http("refuse_http10_400", req(version="1.0"))
http("refuse_room_name_400", req("/chat/bad!room"))
http("refuse_room_too_long_400", req("/chat/" + "r" * 65))
http("refuse_no_host_400", req(headers=std_headers(Host=None)))
http("refuse_two_hosts_400", req(headers=std_headers() + [("host", "chat.example")]))
http("refuse_bad_host_400", req(headers=std_headers(Host="chat.example/x")))
http("refuse_body_400", req(headers=std_headers(**{"Content-Length": "5"})) + b"hello")
http("refuse_content_length_conflict_400", req(headers=std_headers(
    **{"Content-Length": "0, 5"})))
http("refuse_transfer_encoding_400", req(headers=std_headers(
    **{"Transfer-Encoding": "chunked"})) + b"0\r\n\r\n", chunks=MIXED)
http("refuse_cl_and_te_400", req(headers=std_headers(
    **{"Content-Length": "4", "Transfer-Encoding": "chunked"})) + b"0\r\n\r\n")
http("upgrade_content_length_0", req(headers=std_headers(**{"Content-Length": "0"})))
http("oversized_head_431", req(headers=std_headers(**{"X-Pad": "p" * 9000})))
http("small_limit_431", req(), limit=2, chunks=MIXED)
http("too_many_headers_431", req(headers=[(f"X-H{i}", str(i)) for i in range(65)]))
http("malformed_obs_fold", b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n continued\r\n\r\n")
http("malformed_space_before_colon", b"GET /ws HTTP/1.1\r\nUpgrade : websocket\r\n\r\n")
http("malformed_absolute_form", b"GET http://chat.example/ws HTTP/1.1\r\n\r\n")
http("malformed_http2", b"GET /ws HTTP/2.0\r\n\r\n")
http("malformed_nul_in_value", b"GET /ws HTTP/1.1\r\nX-A: a\x00b\r\n\r\n")
http("incomplete_head", req(end=False), chunks=BYTES)
http("tls_client_hello", bytes.fromhex("160301020001000200030300") + b"\x00" * 40)


# ---- ws_input: 1 config byte, 3 chunk sizes, the client's frames ------------------------------
# config: bits 0-2 max message 16 << k; bit 3 close from on_message; bit 4 gw_ws_close at the
# end; bit 5 over-long reason; bit 6 gw_ws_ping after every feed

MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def frame(op, payload=b"", fin=True, rsv=0, mask=True):
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    m = 0x80 if mask else 0
    if n < 126:
        hdr = bytes([b0, m | n])
    elif n <= 0xFFFF:
        hdr = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if not mask:
        return hdr + payload
    return hdr + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def ws(name, frames, cfg=6, chunks=WHOLE):
    write("ws_input", name, bytes([cfg]) + chunks + b"".join(frames))


TEXT, BIN, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10
ws("text_hello", [frame(TEXT, b"hello")])
ws("text_bytewise", [frame(TEXT, "héllo wörld €𝄞".encode())], chunks=BYTES)
ws("text_empty", [frame(TEXT)])
ws("binary", [frame(BIN, bytes(range(200)))], cfg=4)
ws("several_in_one_feed", [frame(TEXT, b"a"), frame(BIN, b"\xff\x00"), frame(TEXT, b"c")],
   chunks=MIXED)
ws("fragmented_text", [frame(TEXT, b"frag", fin=False), frame(CONT, b"men", fin=False),
                       frame(CONT, b"ted")], chunks=b"\x02\x03\x05")
ws("fragmented_with_ping", [frame(TEXT, b"one", fin=False), frame(PING, b"mid"),
                            frame(CONT, b"two")])
ws("utf8_split_across_fragments", [frame(TEXT, "€".encode()[:1], fin=False),
                                   frame(CONT, "€".encode()[1:] + "𝄞".encode()[:2], fin=False),
                                   frame(CONT, "𝄞".encode()[2:])], chunks=BYTES)
ws("ping_pong", [frame(PING, b"are you there"), frame(PING), frame(PING, b"x" * 125)])
ws("unsolicited_pong", [frame(PONG, b"hi"), frame(TEXT, b"after")])
ws("close_1000_reason", [frame(CLOSE, struct.pack(">H", 1000) + b"bye")])
ws("close_no_code", [frame(CLOSE)])
ws("close_one_byte", [frame(CLOSE, b"\x03")])
ws("close_code_1005_invalid", [frame(CLOSE, struct.pack(">H", 1005))])
ws("close_code_4000", [frame(CLOSE, struct.pack(">H", 4000) + "ok ✓".encode())], chunks=MIXED)
ws("close_reason_bad_utf8", [frame(CLOSE, struct.pack(">H", 1000) + b"\xc3\x28")])
# a valid reason split across reads: wslay 1.1.1 answers 1007 (see run.sh, CHAT_FUZZ_KNOWN)
ws("close_reason_split", [frame(CLOSE, struct.pack(">H", 1001) + "é".encode() * 10)],
   chunks=b"\x07\x01\x02")
ws("invalid_utf8_1007", [frame(TEXT, b"ok \xc3\x28 bad")])
ws("surrogate_1007", [frame(TEXT, b"\xed\xa0\x80")])
ws("overlong_1007", [frame(TEXT, b"\xc0\xaf")], chunks=BYTES)
ws("truncated_utf8_at_end", [frame(TEXT, "€".encode()[:2])])
ws("too_big_1009", [frame(TEXT, b"x" * 100)], cfg=0)
ws("too_big_fragmented_1009", [frame(TEXT, b"x" * 10, fin=False), frame(CONT, b"y" * 10)], cfg=0)
ws("length16", [frame(BIN, b"z" * 300)], cfg=7, chunks=b"\x40\x80\xff")
ws("length64_top_bit", [bytes([0x82, 0xFF]) + b"\x80" + b"\x00" * 7 + MASK])
ws("length16_non_minimal", [bytes([0x82, 0x80 | 126, 0, 10]) + frame(BIN, b"q" * 10)[2:]])
ws("unmasked_1002", [frame(TEXT, b"plain", mask=False)])
ws("rsv_bits_1002", [frame(TEXT, b"rsv", rsv=4)])
ws("reserved_opcode_1002", [frame(3, b"op3")])
ws("control_too_long_1002", [frame(PING, b"p" * 126)])
ws("fragmented_ping_1002", [frame(PING, b"p", fin=False)])
ws("continuation_first_1002", [frame(CONT, b"orphan")])
ws("text_inside_fragmented_1002", [frame(TEXT, b"a", fin=False), frame(TEXT, b"b")])
ws("close_from_on_message", [frame(TEXT, b"first"), frame(TEXT, b"second")], cfg=6 | 0x08)
ws("close_at_end", [frame(TEXT, b"hi")], cfg=6 | 0x10)
ws("close_at_end_long_reason", [frame(PING, b"x")], cfg=6 | 0x10 | 0x20, chunks=MIXED)
ws("ping_after_feeds",
   [frame(TEXT, b"a"), frame(PING, b"b"), frame(CLOSE, struct.pack(">H", 1000))],
   cfg=6 | 0x40, chunks=b"\x04\x06\x08")
ws("data_after_close", [frame(CLOSE, struct.pack(">H", 1000)), frame(TEXT, b"late")])


# ---- envelope: the message as a client sends it ----------------------------------------------

def env(name, s):
    write("envelope", name, s.encode() if isinstance(s, str) else s)


env("join", '{"type":"join","room":"lobby","cid":"c1"}')
env("leave", '{"type":"leave","room":"lobby"}')
env("chat", '{"type":"chat","room":"lobby","text":"hello \\"world\\"","cid":"42"}')
env("chat_no_room", '{"type":"chat","text":"to my rooms"}')
env("typing", '{"type":"typing","room":"lobby"}')
env("ping", '{"type":"ping"}')
env("ping_cid_spaces", ' \r\n\t{ "cid" : "p-1" , "type" : "ping" } \n')
env("ignored_fields",
    '{"type":"chat","text":"x","user":"mallory","id":"forged","ts":1,"extra":[1,{"a":null}]}')
env("duplicate_keys", '{"type":"join","type":"leave","room":"a","room":"b"}')
env("unicode_escapes",
    '{"type":"chat","text":"\\u00e9\\u20ac\\ud834\\udd1e \\u2028 \\/ \\b\\f\\n\\r\\t"}')
env("nul_in_text", '{"type":"chat","text":"before\\u0000after","cid":"a\\u0000b"}')
env("nul_in_room", '{"type":"join","room":"a\\u0000b","cid":"j"}')
env("nul_in_key", '{"type":"chat","text\\u0000x":"a","text":"b","x":{"\\u0000":1}}')
env("nul_raw_byte", b'{"type":"chat","text":"ab\x00cd","cid":"c"}')
env("nul_escaped_backslash", '{"type":"chat","text":"a\\\\u0000b","cid":"\\\\\\u0000"}')
env("jwt_nul_raw_byte", b'{"sub":"admin\x00x"}')
env("raw_utf8_and_line_sep", '{"type":"chat","text":"caf\u00e9 \u2028 \U0001d11e"}')
env("empty_strings", '{"type":"join","room":"","cid":""}')
env("not_json", "hello")
env("truncated", '{"type":"chat","text":"abc')
env("array", '[{"type":"ping"}]')
env("string_top", '"ping"')
env("trailing_garbage", '{"type":"ping"} x')
env("two_objects", '{"type":"ping"}{"type":"ping"}')
env("type_missing", '{"room":"lobby"}')
env("type_number", '{"type":7}')
env("type_unknown", '{"type":"shout","cid":"c9"}')
env("room_number", '{"type":"join","room":5,"cid":"c2"}')
env("text_missing", '{"type":"chat","room":"lobby"}')
env("text_object", '{"type":"chat","text":{"nested":true}}')
env("cid_number", '{"type":"ping","cid":12}')
env("cid_too_long", '{"type":"ping","cid":"' + "c" * 129 + '"}')
env("cid_max", '{"type":"ping","cid":"' + "c" * 128 + '"}')
env("lone_surrogate", '{"type":"chat","text":"\\ud800"}')
env("bad_escape", '{"type":"chat","text":"\\x41"}')
env("numbers", '{"type":"ping","n":[-0,1e308,1e-400,123456789012345678901234567890,-1.5E+3]}')
env("nesting_16_ok", '{"type":"ping","d":' + "[" * 15 + "]" * 15 + "}")
env("nesting_17_refused", '{"type":"ping","d":' + "[" * 16 + "]" * 16 + "}")
env("nesting_deep_1000", "[" * 1000 + "]" * 1000)
env("nesting_in_string", '{"type":"ping","s":"' + "[{" * 40 + '"}')
env("keys_64_ok", "{" + ",".join(f'"k{i}":{i}' for i in range(63)) + ',"type":"ping"}')
env("keys_65_refused", "{" + ",".join(f'"k{i}":{i}' for i in range(64)) + ',"type":"ping"}')
env("bom_prefix", b'\xef\xbb\xbf{"type":"ping"}')
env("invalid_utf8_in_string", b'{"type":"chat","text":"\xc3\x28\xff"}')
env("empty", "")
env("refresh", '{"type":"refresh","token":"eyJhbGciOiJIUzI1NiJ9.e30.sig","cid":"r1"}')
env("refresh_token_missing", '{"type":"refresh"}')
# history, recovery and presence (issue 11)
env("join_since", '{"type":"join","room":"lobby","since":{"seq":41,"epoch":"Ep0ch_-"},"cid":"j2"}')
env("join_since_spelled", '{"type":"join","room":"r","since":{ "epoch" : "e", "seq" : 4.1e1 }}')
env("join_since_2_53", '{"type":"join","room":"r","since":{"seq":9007199254740992,"epoch":"e"}}')
env("join_since_2_53_plus_1",
    '{"type":"join","room":"r","since":{"seq":9007199254740993,"epoch":"e"}}')
env("join_since_fraction", '{"type":"join","room":"r","since":{"seq":4503599627370496.5,"epoch":"e"}}')
env("join_since_extra_member", '{"type":"join","room":"r","since":{"seq":1,"epoch":"e","x":0}}')
env("join_since_bad_epoch", '{"type":"join","room":"r","since":{"seq":1,"epoch":"a.b"}}')
env("join_since_epoch_33", '{"type":"join","room":"r","since":{"seq":1,"epoch":"' + "e" * 33 + '"}}')
env("join_since_nul_epoch", '{"type":"join","room":"r","since":{"seq":1,"epoch":"e\\u0000x"}}')
env("join_since_not_object", '{"type":"join","room":"r","since":41}')
env("history", '{"type":"history","room":"lobby","before":42,"limit":50,"cid":"h1"}')
env("history_defaults", '{"type":"history","room":"lobby"}')
env("history_limit_clamped", '{"type":"history","room":"r","limit":1e3}')
env("history_limit_zero", '{"type":"history","room":"r","limit":0}')
env("history_before_fraction", '{"type":"history","room":"r","before":41.5}')
env("history_exponents", '{"type":"history","room":"r","before":1000e-1,"limit":-0}')
env("presence", '{"type":"presence","room":"dm:alice:bob","cid":"p1"}')
env("presence_no_room", '{"type":"presence"}')
# relayed envelopes (chat_env_check_relayed): a stored chat, and one with half of seq/epoch
env("relayed_stored_chat", '{"type":"chat","room":"r","id":"n1-k-1","user":"u","name":"U",'
    '"text":"hi","ts":1700000000000,"seq":41,"epoch":"Ep0ch"}')
env("relayed_seq_without_epoch", '{"type":"chat","room":"r","id":"i","user":"u","text":"t",'
    '"ts":1,"seq":41}')
env("relayed_typing_with_seq", '{"type":"typing","room":"r","user":"u","seq":1,"epoch":"e"}')
env("relayed_system", '{"type":"system","room":"r","event":"leave","user":"u","ts":5}')

# the same target feeds every input to the JWT header and claims parsers too
env("jwt_header", '{"alg":"HS256","typ":"JWT","kid":"key-2024"}')
env("jwt_header_kid_number", '{"alg":"HS256","kid":5}')
env("jwt_header_kid_too_long", '{"alg":"HS256","kid":"' + "k" * 256 + '"}')
env("jwt_header_crit", '{"alg":"ES256","crit":["b64"],"b64":false}')
env("jwt_claims", '{"sub":"alice","name":"Alice \\u00e9","iss":"https://issuer","aud":["chat","x"],'
    '"rooms":["lobby","team-*"],"exp":1900000000.5,"nbf":1700000000,"iat":1700000000.25}')
env("jwt_claims_aud_string", '{"sub":"","aud":"chat","rooms":[],"exp":9007199254740993}')
env("jwt_duplicate_keys", '{"sub":"admin","sub":"mallory"}')
env("jwt_nul_escape", '{"sub":"admin\\u0000x"}')

# credentials: gw_http_req_token() on every complete request
http("token_subprotocol", req("/chat/lobby", headers=std_headers(
    **{"Sec-WebSocket-Protocol": "chat.v1, bearer.eyJhbGciOiJIUzI1NiJ9.e30.c2ln"})))
http("token_authorization", req("/ws", headers=std_headers(Authorization="Bearer  eyJ0.e30.sig ")))
http("token_authorization_basic", req("/ws", headers=std_headers(Authorization="Basic YTpi")))
http("token_query", req("/ws?room=a&token=eyJ0.e30.sig&x=1"), chunks=MIXED)
http("token_query_empty", req("/ws?token=&token=second"))
http("query_since_epoch", req("/chat/lobby?since=41&epoch=Ep0ch&token=t"), chunks=MIXED)
http("query_since_odd", req("/chat/r?sincex=1&since&since=&epoch=a%2Fb&since=2"))
