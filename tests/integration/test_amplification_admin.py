"""The admin listener and descriptor exhaustion (docs/limits.md "Admin listener" and "File
descriptors"; issue 10): silent admin connections get the public port's --handshake-timeout
(408) and at most --admin-max-connections are served at once (503 beyond), so they can neither
pile up nor take the descriptors the public port needs; a connection that would leave the
process without a descriptor is answered 503, counted (chat_accept_errors_total) and logged
(once a second at most), the public listener leaving the last --admin-max-connections + 8 to the
admin listener, and the loop stays idle meanwhile.

The gateway's soft RLIMIT_NOFILE is lowered to 256 with prlimit(2) on its PID right after start;
the test process raises its own. Loads are bounded (300 connections), every wait has a deadline, and
the gateway's descriptors and CPU time are read from /proc/<pid>/fd and /proc/<pid>/stat.
"""

import os
import resource
import selectors
import socket
import time

import harness
from ophelpers import healthz, raise_nofile, scrape, strict_records, wait_until
from rawws import (RawWS, Response, check_json_refusal, http_exchange, parse_head,
                   plain_request)

SCALE = harness.TIMEOUT_SCALE
LIMIT = 256  # the gateway's RLIMIT_NOFILE in these tests
ADMIN_MAX = 16  # the default --admin-max-connections
RESERVE = 8  # GW_FD_RESERVE: left free by the public listener besides ADMIN_MAX


# ---- /proc and sockets -------------------------------------------------------------------------

def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid):
    """utime + stime of the process (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def limit_fds(gw, n=LIMIT):
    """Sets the gateway's soft RLIMIT_NOFILE to n (the hard one stays, so it can be raised
    again)."""
    hard = resource.prlimit(gw.pid, resource.RLIMIT_NOFILE)[1]
    resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (n, hard))
    assert resource.prlimit(gw.pid, resource.RLIMIT_NOFILE)[0] == n


def connect_many(port, n, timeout=5.0):
    """n TCP connections that send nothing."""
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=timeout * SCALE))
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks):
    for s in socks:
        s.close()


def collect(socks, wait):
    """Reads every socket until the gateway closes it or `wait` seconds pass. Returns a list of
    (bytes received, how it ended: "eof", "reset" or "open"), in the order of socks."""
    sel = selectors.DefaultSelector()
    data = {s: b"" for s in socks}
    how = {s: "open" for s in socks}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + wait
    for _ in range(1000000):
        left = deadline - time.monotonic()
        if left <= 0 or not sel.get_map():
            break
        for key, _ in sel.select(left):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                how[s] = "reset"
                sel.unregister(s)
                continue
            if chunk:
                data[s] += chunk
            else:
                how[s] = "eof"
                sel.unregister(s)
    sel.close()
    return [(data[s], how[s]) for s in socks]


def response_of(data, how):
    """The HTTP response in `data` (None when nothing arrived)."""
    if not data:
        return None
    assert b"\r\n\r\n" in data, f"a partial response {data[:300]!r}"
    head, _, body = data.partition(b"\r\n\r\n")
    status, reason, headers = parse_head(head)
    resp = Response(status, reason, headers, body, how != "open")
    assert int(resp.header("content-length")) == len(body), resp
    return resp


def records(gw, msg):
    return [r for r in strict_records(gw.stdout_text()) if r.get("msg") == msg]


def counted(gw, msg, **fields):
    """The sum of "count" over the records `msg` whose fields match."""
    return sum(r["count"] for r in records(gw, msg)
               if all(r.get(k) == v for k, v in fields.items()))


def assert_upgrade_works(gw):
    with RawWS(gw.port) as ws:
        ws.open()
        assert ws.recv_json()["type"] == "welcome"


# ---- silent admin connections -------------------------------------------------------------------

def test_silent_admin_connections_are_capped_and_time_out(gateway_factory):
    """300 admin connections that never send a byte, under a limit of 256 descriptors: at most
    16 are held (the rest get 503 at once), the public port keeps upgrading meanwhile, the held
    ones get 408 after --handshake-timeout (2 s), then /healthz answers, and the refusals are in
    the metrics and the logs. (Before: all 300 stayed open for good, the process ran out of
    descriptors, public handshakes and /healthz failed, and nothing was logged.)"""
    raise_nofile(4096)
    gw = gateway_factory("--handshake-timeout", "2s")
    limit_fds(gw)
    base = open_fds(gw.pid)
    t0 = time.monotonic()
    socks = connect_many(gw.admin_port, 300)
    try:
        connected = time.monotonic() - t0
        assert connected < 1.5, f"300 connections took {connected:.1f}s (the test needs < 1.5s)"
        time.sleep(0.3)
        held = open_fds(gw.pid)
        assert held <= base + ADMIN_MAX + 4, \
            f"{held - base} more descriptors with 300 silent admin connections (cap {ADMIN_MAX})"
        assert_upgrade_works(gw)
        results = collect(socks, 2.0 + 2.0 * SCALE)
    finally:
        close_all(socks)
    still_open = sum(1 for _, how in results if how == "open")
    assert still_open == 0, \
        f"{still_open} silent admin connections still open {time.monotonic() - t0:.1f}s later"
    timed_out = refused = 0
    for data, how in results:
        resp = response_of(data, how)
        if resp is not None and resp.status == 408:
            body = check_json_refusal(resp, 408, "timeout")
            assert body["message"] == "the request took too long", body
            timed_out += 1
        else:  # refused at once: a 503, or the close reached the client first
            assert resp is None or resp.status == 503, resp
            if resp is not None:
                check_json_refusal(resp, 503, "unavailable")
                assert resp.header("retry-after") == "5", resp
            refused += 1
    assert timed_out >= ADMIN_MAX and timed_out + refused == 300, (timed_out, refused)
    assert healthz(gw) == (200, {"status": "ok"})
    assert open_fds(gw.pid) <= base + 2
    m = scrape(gw)
    assert m.get("chat_admin_refused_total", reason="timeout") == timed_out
    assert m.get("chat_admin_refused_total", reason="max_connections") == refused
    assert m.get("chat_admin_connections") == 1  # the scrape itself
    assert m.get("chat_accept_errors_total", listener="admin", reason="fd_limit") == 0
    # one record per reason and second at most, and together they count every refusal
    wait_until(lambda: (counted(gw, "admin connection refused", reason="max_connections"),
                        counted(gw, "admin connection refused", reason="timeout"))
               == (refused, timed_out), 3 * SCALE, "the records of the refused connections")
    recs = records(gw, "admin connection refused")
    assert len(recs) <= 2 * (time.monotonic() - t0 + 2), f"{len(recs)} records: not rate-limited"
    assert all(r["level"] == "warn" and r["max_connections"] == ADMIN_MAX for r in recs), recs


def test_partial_admin_request_gets_408_like_the_public_port(gateway_factory):
    """A request head that never ends gets the public port's answer: 408, a JSON body,
    Connection: close, within --handshake-timeout."""
    gw = gateway_factory("--handshake-timeout", "1s")
    for port in (gw.port, gw.admin_port):
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5 * SCALE) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            (data, how), = collect([s], 1.0 + 3.0 * SCALE)
        took = time.monotonic() - t0
        assert how != "open", f"port {port}: still open after {took:.1f}s"
        check_json_refusal(response_of(data, how), 408, "timeout")
        assert 0.9 <= took <= 1.0 + 2.0 * SCALE, f"port {port}: 408 after {took:.2f}s"


def test_admin_max_connections_flag_and_env(gateway_factory):
    """--admin-max-connections (and CHAT_ADMIN_MAX_CONNECTIONS): with 2 silent connections held,
    a third gets 503 at once; once one of them goes, requests are served again."""
    harness.require_options("--admin-max-connections")
    for args, env in ((("--admin-max-connections", "2"), None),
                      ((), {"CHAT_ADMIN_MAX_CONNECTIONS": "2"})):
        gw = gateway_factory("--handshake-timeout", "30s", *args, env=env)
        silent = connect_many(gw.admin_port, 2)
        try:
            wait_until(lambda: open_fds(gw.pid) >= 2, 2 * SCALE, "the two connections")
            resp = http_exchange(gw.admin_port, plain_request("/healthz", port=gw.admin_port))
            check_json_refusal(resp, 503, "unavailable")
            assert resp.header("retry-after") == "5", resp
            silent[0].close()
            wait_until(lambda: healthz_status(gw) == 200, 3 * SCALE,
                       "/healthz once a connection went away")
        finally:
            close_all(silent)
        m = scrape(gw)
        assert m.get("chat_admin_refused_total", reason="max_connections") >= 1


def healthz_status(gw):
    try:
        return http_exchange(gw.admin_port, plain_request("/healthz", port=gw.admin_port)).status
    except (AssertionError, OSError):
        return None


# ---- descriptor exhaustion ----------------------------------------------------------------------

def test_public_descriptor_exhaustion_is_refused_counted_and_leaves_admin_working(
        gateway_factory):
    """300 silent public connections (a long --handshake-timeout) under a limit of 256: the
    public listener stops taking descriptors 16 + 8 before the limit, answering 503, so /healthz
    and /metrics still work; each refusal is counted and logged (rate-limited); the loop stays
    idle while exhausted and after more attempts; when the clients go, upgrades work again.
    (Before: the connections took every descriptor, libuv closed new ones without a word, and
    /healthz failed with them.)"""
    raise_nofile(4096)
    gw = gateway_factory("--handshake-timeout", "60s")
    limit_fds(gw)
    t0 = time.monotonic()
    socks = connect_many(gw.port, 300)
    extra = []
    try:
        results = collect(socks, 1.0 * SCALE)
        held = [s for s, (_, how) in zip(socks, results) if how == "open"]
        refused = [(d, how) for d, how in results if how != "open"]
        fds = open_fds(gw.pid)
        assert fds <= LIMIT - ADMIN_MAX - RESERVE + 1, \
            f"{fds} descriptors open: the public listener took the admin listener's reserve"
        assert len(held) >= LIMIT - ADMIN_MAX - RESERVE - 20, \
            f"only {len(held)} public connections held under a limit of {LIMIT}"
        assert len(refused) == 300 - len(held)
        for data, how in refused:
            resp = response_of(data, how)
            if resp is not None:
                check_json_refusal(resp, 503, "unavailable")
        # the operators still see the node
        assert healthz(gw) == (200, {"status": "ok"})
        m = scrape(gw)
        assert m.get("chat_accept_errors_total", listener="public", reason="fd_limit") == \
            len(refused)
        # no busy loop while every descriptor the public port may use is taken
        c0 = cpu_seconds(gw.pid)
        time.sleep(2.0)
        idle = cpu_seconds(gw.pid) - c0
        assert idle < 0.1, f"{idle:.2f}s of CPU in 2s while exhausted and idle"
        # 100 more attempts are refused at once (one may take a descriptor that a closed
        # connection, such as the harness's port probe, left below the reserve)
        extra = connect_many(gw.port, 100)
        more = collect(extra, 2.0 * SCALE)
        extra_refused = sum(1 for _, how in more if how != "open")
        fds = open_fds(gw.pid)
        assert extra_refused >= 98 and fds <= LIMIT - ADMIN_MAX - RESERVE + 1, \
            f"{100 - extra_refused} of 100 attempts held while exhausted, {fds} descriptors open"
        c0 = cpu_seconds(gw.pid)
        time.sleep(2.0)
        idle = cpu_seconds(gw.pid) - c0
        assert idle < 0.1, f"{idle:.2f}s of CPU in 2s after the attempts"
        assert healthz(gw) == (200, {"status": "ok"})
    finally:
        close_all(extra)
        close_all(socks)
    total = len(refused) + extra_refused
    m = scrape(gw)
    assert m.get("chat_accept_errors_total", listener="public", reason="fd_limit") == total
    for reason in ("emfile", "enfile", "other"):
        assert m.get("chat_accept_errors_total", listener="public", reason=reason) == 0
    wait_until(lambda: counted(gw, "connection refused: no file descriptor left",
                               listener="public") == total,
               3 * SCALE, "records counting every refused connection")
    recs = records(gw, "connection refused: no file descriptor left")
    assert len(recs) <= time.monotonic() - t0 + 2, f"{len(recs)} records: not rate-limited"
    assert all(r["limit"] == LIMIT and r["reserved"] == ADMIN_MAX + RESERVE for r in recs), recs
    # the held connections are gone: upgrades work again
    wait_until(lambda: open_fds(gw.pid) < 40, 5 * SCALE, "the closed connections to be dropped")
    assert_upgrade_works(gw)


def test_admin_listener_takes_the_last_descriptors_and_refuses_beyond(gateway_factory):
    """With --admin-max-connections larger than what the limit leaves (100, under a limit of
    64), the admin listener takes descriptors up to the last one and answers 503 beyond, rather
    than run the process out of them; those refusals count under listener="admin"."""
    raise_nofile(4096)
    gw = gateway_factory("--handshake-timeout", "60s", "--admin-max-connections", "100")
    limit_fds(gw, 64)
    socks = connect_many(gw.admin_port, 80)
    try:
        results = collect(socks, 1.0 * SCALE)
        held = sum(1 for _, how in results if how == "open")
        assert 30 <= held < 64, f"{held} admin connections held under a limit of 64"
        assert open_fds(gw.pid) < 64, "the process ran out of descriptors"
        for data, how in results:
            if how != "open" and data:
                check_json_refusal(response_of(data, how), 503, "unavailable")
    finally:
        close_all(socks)
    wait_until(lambda: healthz_status(gw) == 200, 5 * SCALE, "/healthz after the clients left")
    m = scrape(gw)
    assert m.get("chat_accept_errors_total", listener="admin", reason="fd_limit") == 80 - held
    assert m.get("chat_admin_refused_total", reason="max_connections") == 0


def test_accept_failing_with_emfile_does_not_spin(gateway_factory):
    """When accept() itself fails with EMFILE and libuv cannot shed the load on its own (its
    spare descriptor, the highest /dev/null one, lies at or above the limit, so it cannot be
    reopened), libuv 1.44 calls the connection callback with UV_EMFILE again and again without
    returning to the loop. The gateway then gives up its own spare descriptor (a lower one), so
    that the next accept succeeds and is refused with 503: the loop stays idle, the failure is
    counted and logged once, and the node recovers when the limit is raised. (Before: 100% CPU,
    connections hung, and a record per failed accept.)"""
    gw = gateway_factory()
    table = {int(fd): os.readlink(f"/proc/{gw.pid}/fd/{fd}") for fd in os.listdir(
        f"/proc/{gw.pid}/fd")}
    nulls = sorted(fd for fd, target in table.items() if fd > 2 and target == "/dev/null")
    assert nulls, f"no spare descriptor on /dev/null in {table}"
    limit_fds(gw, nulls[-1])
    c0, t0 = cpu_seconds(gw.pid), time.monotonic()
    socks = []
    try:
        for _ in range(5):
            socks.append(socket.create_connection(("127.0.0.1", gw.port), timeout=5 * SCALE))
            time.sleep(0.1)
        results = collect(socks, 2.0 * SCALE)
        time.sleep(1.0)
        busy, took = cpu_seconds(gw.pid) - c0, time.monotonic() - t0
    finally:
        close_all(socks)
        limit_fds(gw, 1024)
    assert all(how != "open" for _, how in results), f"connections hung: {results}"
    for data, how in results:
        if data:
            check_json_refusal(response_of(data, how), 503, "unavailable")
    assert busy < 0.15 * took, f"{busy:.2f}s of CPU in {took:.1f}s: the accept loop spins"
    assert_upgrade_works(gw)
    m = scrape(gw)
    assert m.get("chat_accept_errors_total", listener="public", reason="emfile") >= 1
    assert m.get("chat_accept_errors_total", listener="public", reason="emfile") + \
        m.get("chat_accept_errors_total", listener="public", reason="fd_limit") >= 5
    failed = records(gw, "accept failed")
    assert failed and all(r["listener"] == "public" and r["reason"] == "emfile"
                          for r in failed), failed
    assert len(failed) <= took + 1, f"{len(failed)} 'accept failed' records: not rate-limited"


def start_with_nofile(gateway_factory, soft, *args):
    """A gateway started with a soft RLIMIT_NOFILE of `soft` (inherited from this process, whose
    own limit is lowered only while the gateway starts)."""
    own = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert len(os.listdir("/proc/self/fd")) + 16 < soft, "the test process has too many files"
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, own[1]))
    try:
        gw = gateway_factory(*args)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, own)
    assert resource.prlimit(gw.pid, resource.RLIMIT_NOFILE)[0] == soft
    return gw


def test_start_warns_when_the_limit_leaves_few_descriptors(gateway_factory):
    """At start, a node whose RLIMIT_NOFILE leaves fewer than 64 descriptors for connections, or
    fewer than --max-connections, says so (and how many it has room for); one with room for
    its --max-connections does not."""
    msg = "few file descriptors for connections (raise ulimit -n)"
    low = start_with_nofile(gateway_factory, 80)
    capped = start_with_nofile(gateway_factory, 256, "--max-connections", "1000")
    fine = start_with_nofile(gateway_factory, 256, "--max-connections", "200")
    for gw, limit in ((low, 80), (capped, 256)):
        recs = records(gw, msg)
        assert len(recs) == 1 and recs[0]["level"] == "warn", gw.stdout_text()
        room = recs[0]["connections"]
        assert recs[0]["limit"] == limit and limit - ADMIN_MAX - RESERVE - 20 <= room \
            < limit - ADMIN_MAX - RESERVE, recs[0]
    assert records(fine, msg) == [], fine.stdout_text()
