"""Process management for the chat-gateway integration tests.

Starts the gateway binary on a free loopback port, waits (bounded) until it accepts TCP, and stops
it with SIGTERM (bounded), reporting a non-zero exit or any sanitizer report on its stderr.

Environment:
  CHAT_GATEWAY_BIN   path of the binary (default: <repo>/build/gateway/chat-gateway, or
                     <repo>/build-asan/gateway/chat-gateway when CHAT_TEST_ASAN=1)
  CHAT_TEST_ASAN=1   the binary is an AddressSanitizer build: the gateway runs with a small
                     allocator quarantine (so the RSS test means something), timeouts are doubled
                     and the memory test warms up longer (0 forces a plain build; unset: detected
                     from the binary).
  CHAT_TEST_TIMEOUT_SCALE  multiplies every timeout (default 1, 2 under ASan).
"""

import os
import pathlib
import signal
import socket
import subprocess
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
_ASAN_FLAG = os.environ.get("CHAT_TEST_ASAN")
DEFAULT_BIN = (REPO_ROOT / ("build-asan" if _ASAN_FLAG == "1" else "build") / "gateway"
               / "chat-gateway")

# Strings that only appear on stderr when a sanitizer reported something.
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error")

START_TIMEOUT = 10.0  # seconds until the gateway must accept TCP
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and exit (leak checking included)

# Under ASan: keep leak detection and shrink the quarantine (default 256 MiB) so that RSS tracks
# what the gateway really holds.
ASAN_TEST_OPTIONS = "detect_leaks=1:quarantine_size_mb=16"


def gateway_bin():
    return os.environ.get("CHAT_GATEWAY_BIN") or str(DEFAULT_BIN)


def _binary_has_asan(path):
    """True when the binary was linked with AddressSanitizer (used when CHAT_TEST_ASAN is
    not set)."""
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


ASAN = _ASAN_FLAG == "1" if _ASAN_FLAG in ("0", "1") else _binary_has_asan(gateway_bin())

# Every wait in the suite is multiplied by this (sanitized builds are several times slower).
TIMEOUT_SCALE = float(os.environ.get("CHAT_TEST_TIMEOUT_SCALE", "2" if ASAN else "1"))


def require_bin():
    """Returns the binary path or fails the calling test with a clear message."""
    import pytest

    path = gateway_bin()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"gateway binary not found or not executable: {path} "
                    "(build it first, or set CHAT_GATEWAY_BIN)", pytrace=False)
    return path


def free_port():
    """A loopback port that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port, timeout=0.2):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def gateway_env(extra=None):
    """The environment for a gateway: ours without any CHAT_* variable (so a developer's shell
    cannot change the tests' outcome), plus sanitizer options, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    if ASAN:
        prev = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = f"{prev}:{ASAN_TEST_OPTIONS}" if prev else ASAN_TEST_OPTIONS
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    env.update(extra or {})
    return env


def sanitizer_findings(text):
    return [m for m in SANITIZER_MARKERS if m in text]


class Gateway:
    """A running gateway. .url/.http are the WebSocket and HTTP base addresses."""

    def __init__(self, proc, port, node_id, workdir, argv, admin_port=None):
        self.proc = proc
        self.admin_port = admin_port
        self.admin = f"http://127.0.0.1:{admin_port}" if admin_port else None
        self.pid = proc.pid
        self.port = port
        self.node_id = node_id
        self.workdir = workdir
        self.argv = argv
        self.url = f"ws://127.0.0.1:{port}"
        self.http = f"http://127.0.0.1:{port}"
        self.returncode = None  # set by stop()
        self.stopped = False
        self.killed = False

    def stdout_text(self):
        return (self.workdir / "stdout.txt").read_text(errors="replace")

    def stderr_text(self):
        return (self.workdir / "stderr.txt").read_text(errors="replace")

    def log_text(self):
        """Everything the gateway wrote: its log records (stdout) and stderr."""
        return self.stdout_text() + self.stderr_text()

    def log_records(self):
        """The JSON log records on stdout (one object per line), parsed."""
        import json
        return [json.loads(line) for line in self.stdout_text().splitlines() if line.strip()]

    def rss_bytes(self):
        """Resident set size of the gateway process, from /proc/<pid>/status."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM to this PID, bounded wait, SIGKILL as a last resort. Returns the exit code."""
        if self.stopped:
            return self.returncode
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        return self.returncode

    def problems(self):
        """Stops the gateway if needed and lists what is wrong with how it ended."""
        out = []
        if not self.stopped and self.proc.poll() is not None:
            out.append(f"gateway exited on its own during the test with code {self.proc.returncode}")
            self.stopped = True
            self.returncode = self.proc.returncode
        rc = self.stop()
        if self.killed:
            out.append(f"gateway did not exit within {STOP_TIMEOUT}s of SIGTERM (killed)")
        elif rc != 0:
            out.append(f"gateway exit code after SIGTERM: {rc} (expected 0)")
        err = self.stderr_text()
        found = sanitizer_findings(err)
        if found:
            out.append(f"sanitizer report on stderr ({', '.join(found)})")
        if out:
            tail = err[-6000:]
            out.append(f"argv: {self.argv}\n--- gateway stderr (tail) ---\n{tail}")
        return out


def start_gateway(workdir, args=(), node_id="t1", env=None, listen=True, port=None):
    """Starts a gateway and waits until its port accepts TCP (bounded by START_TIMEOUT).

    listen=False leaves out --listen (the test passes CHAT_LISTEN in env and must give `port`).
    node_id=None leaves out --node-id.
    """
    import pytest

    binary = require_bin()
    workdir.mkdir(parents=True, exist_ok=True)
    attempts = 3 if (listen and port is None) else 1
    last_err = ""
    for attempt in range(attempts):
        p = port if port is not None else free_port()
        argv = [binary]
        if listen:
            argv += ["--listen", f"127.0.0.1:{p}"]
        if node_id is not None:
            argv += ["--node-id", node_id]
        # Every gateway of the suite gets its own admin port, and a short drain (the tests of
        # the drain itself set theirs), unless the test chose otherwise.
        given = " ".join(args) + " " + " ".join((env or {}).keys())
        admin_port = None
        if "admin-listen" not in given and "CHAT_ADMIN_LISTEN" not in given:
            admin_port = free_port()
            argv += ["--admin-listen", f"127.0.0.1:{admin_port}"]
        if "drain-" not in given and "CHAT_DRAIN_" not in given:
            argv += ["--drain-delay", "0", "--drain-timeout", "3s"]
        # Every test client connects from 127.0.0.1: the per-address connection limit is off
        # unless the test is about it (test_amplification_churn.py).
        if "connect-" not in given and "CHAT_CONNECT_" not in given:
            argv += ["--connect-rate-per-ip", "0"]
        argv += list(args)
        with open(workdir / "stdout.txt", "wb") as so, open(workdir / "stderr.txt", "wb") as se:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=so, stderr=se,
                                    env=gateway_env(env), cwd=workdir)
        gw = Gateway(proc, p, node_id if node_id is not None else (env or {}).get("CHAT_NODE_ID"),
                     workdir, argv, admin_port)
        deadline = time.monotonic() + START_TIMEOUT * TIMEOUT_SCALE
        for _ in range(10000):  # bounded by the deadline as well
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            if port_accepts(p):
                return gw
            time.sleep(0.02)
        if proc.poll() is None:
            gw.stop()
            pytest.fail(f"gateway did not accept TCP on port {p} within {START_TIMEOUT}s\n"
                        f"argv: {argv}\nstderr:\n{gw.stderr_text()[-4000:]}", pytrace=False)
        last_err = gw.stderr_text()
        # A port taken between free_port() and bind() is the only reason worth a retry.
        if "in use" not in last_err.lower():
            break
    pytest.fail(f"gateway exited during start-up with code {proc.returncode}\n"
                f"argv: {argv}\nstderr:\n{last_err[-4000:]}", pytrace=False)


# ---- helpers for the connection-safety tests (test_limits_*.py and friends) ---------------------

_HELP_TEXT = None


def gateway_help():
    """The binary's --help text (cached)."""
    global _HELP_TEXT
    if _HELP_TEXT is None:
        p = subprocess.run([require_bin(), "--help"], stdin=subprocess.DEVNULL,
                           capture_output=True, env=gateway_env(), timeout=10 * TIMEOUT_SCALE)
        _HELP_TEXT = p.stdout.decode(errors="replace")
    return _HELP_TEXT


def require_options(*options):
    """Fails the calling test (not a skip) with a clear message when the binary does not know one
    of `options` (checked against its --help)."""
    import pytest

    missing = [o for o in options if o not in gateway_help()]
    if missing:
        pytest.fail(f"the gateway binary {gateway_bin()} does not know {', '.join(missing)} "
                    "(not in its --help)", pytrace=False)


def run_expect_exit(args, env=None, port=None, timeout=None):
    """Runs the gateway expecting it to refuse to start. While it runs, checks (bounded) that
    `port` never accepts a connection. Returns (exit code, stderr text, accepted?); kills it and
    fails the test if it keeps running."""
    import pytest

    timeout = timeout or 10.0 * TIMEOUT_SCALE
    proc = subprocess.Popen([require_bin(), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=gateway_env(env))
    accepted = False
    deadline = time.monotonic() + timeout
    for _ in range(100000):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        if port is not None and port_accepts(port, timeout=0.05):
            accepted = True
        time.sleep(0.01)
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=5)
        pytest.fail(f"{args} {env}: the gateway kept running (expected it to refuse to start)",
                    pytrace=False)
    _, err = proc.communicate(timeout=5)
    return proc.returncode, err.decode(errors="replace"), accepted
