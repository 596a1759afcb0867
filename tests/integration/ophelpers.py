"""Helpers for the operability tests (test_metrics.py, test_readyz.py, test_logs.py,
test_drain.py): the admin endpoints over urllib, a strict parser of the Prometheus text format
0.0.4, strict JSON log-line parsing, signals with bounded waits, and a redis-server of the test's
own on a free port (stopped by its PID).

Every wait is bounded (a deadline and a loop count); processes are only signalled by PID.
"""

import json
import math
import os
import re
import resource
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import harness
from cluster import wait_until  # noqa: F401  (re-exported: bounded polling)

SCALE = harness.TIMEOUT_SCALE
HTTP_TIMEOUT = 5.0 * SCALE

# Every family of docs/operations.md with its type.
FAMILIES = {
    "chat_connections": "gauge",
    "chat_connections_opened_total": "counter",
    "chat_connections_closed_total": "counter",
    "chat_handshake_rejected_total": "counter",
    "chat_rooms": "gauge",
    "chat_messages_received_total": "counter",
    "chat_messages_delivered_total": "counter",
    "chat_messages_dropped_total": "counter",
    "chat_rate_limited_total": "counter",
    "chat_auth_failures_total": "counter",
    "chat_room_messages_total": "counter",
    "chat_delivery_latency_seconds": "histogram",
    "chat_send_queue_bytes": "gauge",
    "chat_broker_connected": "gauge",
    "chat_broker_reconnects_total": "counter",
    "chat_broker_published_total": "counter",
    "chat_broker_received_total": "counter",
    "chat_broker_publish_errors_total": "counter",
    "chat_build_info": "gauge",
    "chat_process_resident_memory_bytes": "gauge",
    "chat_process_open_fds": "gauge",
    "chat_accept_errors_total": "counter",
    "chat_admin_connections": "gauge",
    "chat_admin_refused_total": "counter",
}

RECEIVED_TYPES = ("invalid", "join", "leave", "chat", "typing", "ping", "refresh")
DELIVERED_TYPES = ("chat", "typing", "system")
RATE_BUCKETS = ("message", "user", "typing", "join")
AUTH_REASONS = ("missing_token", "invalid_token", "expired", "forbidden")


# ---- HTTP ------------------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


class HttpResult:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case name -> value
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<HTTP {self.status} {self.headers} {self.body[:300]!r}>"


def http(url, method="GET", timeout=HTTP_TIMEOUT):
    """One request with urllib (no proxy); an HTTP error status is a result, not an exception."""
    req = urllib.request.Request(url, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return HttpResult(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        try:
            return HttpResult(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())
        finally:
            e.close()


def admin(gw, path, method="GET"):
    base = gw if isinstance(gw, str) else gw.admin
    assert base, "this gateway has no admin listener"
    return http(base + path, method)


def readyz(gw):
    """(status, parsed JSON body) of GET /readyz."""
    r = admin(gw, "/readyz")
    assert (r.headers.get("content-type") or "").startswith("application/json"), r
    return r.status, r.json()


def healthz(gw):
    r = admin(gw, "/healthz")
    assert (r.headers.get("content-type") or "").startswith("application/json"), r
    return r.status, r.json()


def check_not_ready(status, body, failed):
    """503 {"ready": false, "failed": [...]} with exactly the names in `failed` (any order)."""
    assert status == 503, f"/readyz answered {status} {body}, expected 503 failed={failed}"
    assert body.get("ready") is False, body
    assert isinstance(body.get("failed"), list), body
    assert sorted(body["failed"]) == sorted(failed), \
        f"/readyz failed={body['failed']}, expected {sorted(failed)}"


def check_ready(status, body):
    assert (status, body) == (200, {"ready": True}), f"/readyz answered {status} {body}"


# ---- Prometheus text format 0.0.4 ---------------------------------------------------------------
# https://prometheus.io/docs/instrumenting/exposition_formats/ ("Text format details"), read
# strictly: the gateway writes the format, so anything a lenient scraper would merely tolerate is
# an error here.

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_NAME_RE = re.compile(rf"^{_NAME}$")
_SAMPLE_RE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$")
_LABEL_RE = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*')
_HELP_RE = re.compile(rf"^# HELP ({_NAME})(?: (.*))?$")
_TYPE_RE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")
_FLOAT_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")

# the sample names a family of each type may have, as suffixes of the family name
_SUFFIXES = {"counter": ("",), "gauge": ("",), "untyped": ("",),
             "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


def _unescape(v, allowed='\\"n', what="label value"):
    out, i = [], 0
    while i < len(v):
        c = v[i]
        if c == "\\":
            assert i + 1 < len(v), f"a lone backslash at the end of the {what} {v!r}"
            nxt = v[i + 1]
            assert nxt in allowed, f"bad escape \\{nxt} in {what} {v!r}"
            out.append("\n" if nxt == "n" else nxt)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _parse_labels(text, line):
    labels, pos = {}, 0
    for _ in range(1000):
        if pos >= len(text):
            break
        m = _LABEL_RE.match(text, pos)
        assert m, f"bad label set in {line!r}"
        name, value = m.group(1), _unescape(m.group(2))
        assert not name.startswith("__"), f"reserved label name {name} in {line!r}"
        assert name not in labels, f"label {name} twice in {line!r}"
        labels[name] = value
        pos = m.end()
        if pos < len(text):
            assert text[pos] == ",", f"bad label set in {line!r}"
            pos += 1
    return labels


def _value(s, line):
    """A sample value: a Go ParseFloat number, +Inf, -Inf or NaN."""
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    assert _FLOAT_RE.match(s), f"bad sample value {s!r} in {line!r}"
    return float(s)


class Metrics:
    """A parsed scrape, checked strictly (the assertion names the offending line):
    - every line is a # HELP, a # TYPE or a sample; no blank, padded or other comment lines;
    - metric and label names are valid, label names do not start with "__", label values use
      only the escapes \\\\, \\" and \\n, HELP texts only \\\\ and \\n;
    - each family has one # HELP and one # TYPE, both before its first sample, and its lines are
      one contiguous block: a family is never declared twice;
    - a sample's name is its family's (histograms: _bucket, _sum, _count only; summaries: the
      name, _sum, _count), and no series (name + label set) appears twice;
    - counters and the _bucket/_count of histograms and summaries are numbers >= 0, sums are
      numbers (never NaN);
    - each histogram series has numeric, increasing `le` buckets whose counts are cumulative,
      a le="+Inf" bucket equal to its _count, and a _sum; `le` appears on buckets only.
    .families: name -> {"help", "type"}; .samples: (name, labels tuple) -> value, in the order
    of the text."""

    def __init__(self, text):
        self.text = text
        self.families = {}
        self.samples = {}
        self._sampled = set()  # families whose first sample was seen
        self._parse(text)
        self._check_histograms()

    def _family_of(self, name):
        """The declared family a sample name belongs to, or None."""
        if name in self.families:
            return name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)] if name.endswith(suffix) else None
            if base and self.families.get(base, {}).get("type") in ("histogram", "summary"):
                return base
        return None

    def _parse(self, text):
        assert text.endswith("\n"), "the exposition does not end with a newline"
        current = None  # the family whose lines may follow
        done = set()  # families whose block ended (a family must be one contiguous block)

        def start(name, line):
            nonlocal current
            assert _NAME_RE.match(name), f"bad metric name in {line!r}"
            assert name not in done, f"{name} declared again after its block ended: {line!r}"
            if current and current != name:
                done.add(current)
            current = name

        for line in text.split("\n")[:-1]:
            assert line.strip() == line and line, f"blank or padded line {line!r}"
            if line.startswith("#"):
                m = _HELP_RE.match(line)
                if m:
                    name = m.group(1)
                    start(name, line)
                    fam = self.families.setdefault(name, {})
                    assert "help" not in fam, f"second # HELP for {name}"
                    assert name not in self._sampled, f"# HELP {name} after its samples"
                    fam["help"] = _unescape(m.group(2) or "", "\\n", f"HELP text of {name}")
                    continue
                m = _TYPE_RE.match(line)
                assert m, f"comment line that is neither # HELP nor # TYPE: {line!r}"
                name = m.group(1)
                start(name, line)
                fam = self.families.setdefault(name, {})
                assert "type" not in fam, f"second # TYPE for {name}"
                assert name not in self._sampled, f"# TYPE {name} after its samples"
                fam["type"] = m.group(2)
                continue
            m = _SAMPLE_RE.match(line)
            assert m, f"bad sample line {line!r}"
            name, labels_text, value = m.group(1), m.group(2), m.group(3)
            fam = self._family_of(name)
            assert fam is not None and "type" in self.families[fam], \
                f"sample {name} before (or without) its # TYPE line"
            assert "help" in self.families[fam], f"sample {name} before its # HELP line"
            assert fam == current and fam not in done, f"samples of {fam} are not contiguous"
            ftype = self.families[fam]["type"]
            assert name[len(fam):] in _SUFFIXES[ftype], \
                f"sample {name} does not belong to the {ftype} {fam}"
            self._sampled.add(fam)
            labels = _parse_labels(labels_text or "", line)
            key = (name, tuple(sorted(labels.items())))
            assert key not in self.samples, f"duplicate series {line!r}"
            v = _value(value, line)
            if ftype == "counter" or (ftype in ("histogram", "summary")
                                      and name.endswith(("_bucket", "_count"))):
                assert not math.isnan(v) and v >= 0, f"{ftype} sample {v} in {line!r}"
            if name.endswith("_sum") and ftype in ("histogram", "summary"):
                assert not math.isnan(v), f"{ftype} sum {v} in {line!r}"
            if ftype == "histogram":
                assert ("le" in labels) == name.endswith("_bucket"), \
                    f"`le` must be on the buckets of {fam} and only there: {line!r}"
                if "le" in labels:
                    _value(labels["le"], line)
            self.samples[key] = v
        for name, fam in self.families.items():
            assert "help" in fam and "type" in fam, f"{name} lacks its # HELP or # TYPE line"

    def _check_histograms(self):
        for fam, info in self.families.items():
            if info["type"] != "histogram":
                continue
            series = {}  # label set without le -> {"buckets": [(le, v)], "count", "sum"}
            for (name, labels), v in self.samples.items():
                if self._family_of(name) != fam:
                    continue
                rest = tuple((k, x) for k, x in labels if k != "le")
                s = series.setdefault(rest, {"buckets": []})
                if name.endswith("_bucket"):
                    s["buckets"].append((_value(dict(labels)["le"], name), v))
                else:
                    s[name[len(fam) + 1:]] = v
            for rest, s in series.items():
                where = f"histogram {fam}{dict(rest) or ''}"
                assert "count" in s and "sum" in s, f"{where}: no _count or _sum"
                b = sorted(s["buckets"])
                assert b and b[-1][0] == math.inf, f"{where}: no le=\"+Inf\" bucket"
                for (le1, v1), (le2, v2) in zip(b, b[1:]):
                    assert v1 <= v2, f"{where}: bucket le={le2} ({v2}) < le={le1} ({v1})"
                assert b[-1][1] == s["count"], \
                    f"{where}: le=\"+Inf\" bucket {b[-1][1]} != _count {s['count']}"

    def get(self, name, default=0.0, **labels):
        """The value of one series (default when the series is absent)."""
        return self.samples.get((name, tuple(sorted(labels.items()))), default)

    def has(self, name, **labels):
        return (name, tuple(sorted(labels.items()))) in self.samples

    def series(self, name):
        """[(labels dict, value)] of every series of the sample name `name`."""
        return [(dict(lbl), v) for (n, lbl), v in self.samples.items() if n == name]

    def by_label(self, name, label):
        """{label value: value} over the series of `name`."""
        out = {}
        for lbl, v in self.series(name):
            out[lbl.get(label)] = v
        return out

    def label_values(self):
        return [v for (_, lbl) in self.samples for _, v in lbl]


def scrape(gw):
    """GET /metrics: checks the status and content type; returns Metrics."""
    r = admin(gw, "/metrics")
    assert r.status == 200, f"/metrics answered {r}"
    ctype = r.headers.get("content-type") or ""
    parts = [p.strip() for p in ctype.split(";")]
    assert parts[0] == "text/plain" and "version=0.0.4" in parts[1:], \
        f"/metrics Content-Type is {ctype!r}, expected text/plain; version=0.0.4"
    return Metrics(r.body.decode("utf-8"))


def delta(after, before, name, **labels):
    return after.get(name, **labels) - before.get(name, **labels)


def deltas(after, before, name, label, values):
    """{value: delta} of `name` over the given label values."""
    return {v: delta(after, before, name, **{label: v}) for v in values}


def label_deltas(after, before, name, label):
    """{label value: delta} over every series of `name` present in either scrape, without the
    zero ones."""
    keys = set(after.by_label(name, label)) | set(before.by_label(name, label))
    out = {}
    for k in keys:
        d = after.by_label(name, label).get(k, 0) - before.by_label(name, label).get(k, 0)
        if d:
            out[k] = d
    return out


# ---- logs ----------------------------------------------------------------------------------------

def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise ValueError(f"duplicate key(s) {dups}")
    return dict(pairs)


def strict_records(text):
    """Every non-empty line of `text` parsed as one JSON object with unique keys; fails naming
    the line otherwise."""
    out = []
    for i, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        try:
            rec = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except ValueError as e:
            raise AssertionError(f"log line {i} is not one JSON object with unique keys "
                                 f"({e}): {line!r}") from None
        assert isinstance(rec, dict), f"log line {i} is not a JSON object: {line!r}"
        out.append(rec)
    return out


def loose_records(text):
    """Records of the lines that parse (the last value wins for a duplicate key)."""
    out = []
    for line in text.split("\n"):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def ts_epoch(ts):
    """Seconds since the epoch of an RFC 3339 UTC time stamp with milliseconds."""
    import calendar
    assert TS_RE.match(ts), f"ts {ts!r} is not RFC 3339 UTC with milliseconds"
    base = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
    return base + int(ts[20:23]) / 1000.0


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


# ---- processes -----------------------------------------------------------------------------------

def raise_nofile(want):
    """Raises the soft RLIMIT_NOFILE of this process (and so of the gateways it starts) to at
    least `want` (bounded by the hard limit). Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def signal_gateway(gw, sig):
    os.kill(gw.pid, sig)


def wait_exit(gw, timeout):
    """Waits (bounded) for the gateway to exit after a signal the test sent; records it as
    stopped for the fixture (which then checks the exit code is 0). Returns (code, seconds)."""
    t0 = time.monotonic()
    try:
        gw.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"gateway pid {gw.pid} still running {timeout:.1f}s later") from None
    gw.stopped = True
    gw.returncode = gw.proc.returncode
    return gw.proc.returncode, time.monotonic() - t0


class OwnRedis:
    """A redis-server of the test's own on a free loopback port, started and stopped by PID."""

    def __init__(self, workdir, port=None):
        self.dir = workdir
        self.port = port or harness.free_port()
        self.proc = None
        self.runs = 0
        self.url = f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"redis{self.runs}.log", "wb") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--dir", str(self.dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.runs += 1
        wait_until(lambda: self.proc.poll() is not None or harness.port_accepts(self.port, 0.1),
                   10 * SCALE, f"redis-server to accept TCP on {self.port}")
        assert self.proc.poll() is None, f"redis-server exited with {self.proc.returncode}"
        return self

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        wait_until(lambda: not harness.port_accepts(self.port, 0.05), 5 * SCALE,
                   "the redis port to close")

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.stop()


@pytest.fixture
def own_redis(tmp_path):
    """An OwnRedis (not started). Ask for it BEFORE gateway_factory, so that it is stopped after
    the gateways."""
    r = OwnRedis(tmp_path / "redis")
    yield r
    r.cleanup()


def launch(workdir, args, env=None, stdout=None, wait_port=None):
    """Starts the gateway binary by hand (for what harness.start_gateway does not allow: the
    default admin address, a terminal on stdout, an exit code other than 0). stdout: a file
    descriptor or None (then workdir/stdout.txt). Waits (bounded) until wait_port accepts TCP.
    The caller stops it (stop_proc)."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [harness.require_bin(), *args]
    so = open(workdir / "stdout.txt", "wb") if stdout is None else None
    with open(workdir / "stderr.txt", "wb") as se:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=so if so is not None else stdout, stderr=se,
                                env=harness.gateway_env(env), cwd=workdir)
    if so is not None:
        so.close()
    if wait_port is not None:
        wait_until(lambda: proc.poll() is not None or harness.port_accepts(wait_port),
                   harness.START_TIMEOUT * SCALE, f"the gateway to accept TCP on {wait_port}")
        assert proc.poll() is None, \
            f"gateway exited with {proc.returncode}: {(workdir / 'stderr.txt').read_text()}"
    return proc


def stop_proc(proc, timeout=harness.STOP_TIMEOUT):
    """SIGTERM by PID, bounded wait, SIGKILL as a last resort. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def listening_ports(pid):
    """The TCP ports the process `pid` listens on (from /proc/<pid>/fd and /proc/net/tcp{,6})."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports
