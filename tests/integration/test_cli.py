"""Command line and environment: --help, --version, invalid values, env vars vs flags, SIGTERM."""

import asyncio
import subprocess
import time

import pytest

import harness
from wsclient import Client, check_system, open_clients, run

OPTIONS = ["--listen", "--node-id", "--room-events", "--max-rooms-per-conn", "--max-text-bytes",
           "--help", "--version"]
ENV_VARS = ["CHAT_LISTEN", "CHAT_NODE_ID", "CHAT_ROOM_EVENTS", "CHAT_MAX_ROOMS_PER_CONN",
            "CHAT_MAX_TEXT_BYTES"]
CLI_TIMEOUT = 10.0 * harness.TIMEOUT_SCALE


def run_cli(args, env=None):
    return subprocess.run([harness.require_bin(), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, env=harness.gateway_env(env),
                          timeout=CLI_TIMEOUT)


def check_no_sanitizer(proc):
    err = proc.stderr.decode(errors="replace")
    assert not harness.sanitizer_findings(err), err


def test_help_lists_every_option_env_var_and_default():
    p = run_cli(["--help"])
    assert p.returncode == 0, p
    out = p.stdout.decode()
    for opt in OPTIONS:
        assert opt in out, f"--help does not mention {opt}:\n{out}"
    for var in ENV_VARS:
        assert var in out, f"--help does not mention {var}:\n{out}"
    assert "128" in out, "--help does not state the --max-rooms-per-conn default (128)"
    assert "4096" in out, "--help does not state the --max-text-bytes default (4096)"
    check_no_sanitizer(p)


def test_help_does_not_listen():
    port = harness.free_port()
    p = run_cli(["--help", "--listen", f"127.0.0.1:{port}", "--node-id", "n"])
    assert p.returncode == 0
    assert not harness.port_accepts(port)


def test_version():
    p = run_cli(["--version"])
    assert p.returncode == 0, p
    assert p.stdout.strip(), "--version printed nothing on stdout"
    check_no_sanitizer(p)


def run_invalid(args, env=None, port=None):
    """Runs the gateway expecting a refusal at start-up; while it runs, checks (bounded) that
    its port never accepts a connection. Returns (exit code, stderr text, accepted?)."""
    proc = subprocess.Popen([harness.require_bin(), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=harness.gateway_env(env))
    accepted = False
    deadline = time.monotonic() + CLI_TIMEOUT
    try:
        for _ in range(10000):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            if port is not None and harness.port_accepts(port, timeout=0.05):
                accepted = True
            time.sleep(0.01)
        out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=5)
        pytest.fail(f"{args} {env}: the gateway kept running (it should exit 2)")
    if proc.returncode is None:
        proc.kill()
        proc.wait(5)
        pytest.fail(f"{args} {env}: the gateway kept running (it should exit 2)")
    return proc.returncode, err.decode(errors="replace"), accepted


BAD_FLAGS = [
    ["--max-rooms-per-conn", "0"],
    ["--max-rooms-per-conn", "-1"],
    ["--max-rooms-per-conn", "abc"],
    ["--max-rooms-per-conn", "12abc"],
    ["--max-rooms-per-conn", ""],
    ["--max-rooms-per-conn", "99999999999999999999999999"],
    ["--max-rooms-per-conn"],  # value missing at the end
    ["--max-text-bytes", "0"],
    ["--max-text-bytes", "x"],
    ["--max-text-bytes", "-5"],
    ["--max-rooms-per-conn", "1000001"],  # range 1 - 1000000
    ["--max-text-bytes", "1048577"],  # range 1 - 1048576
    ["--room-events=maybe"],
    ["--node-id", "bad!id"],
    ["--node-id", ""],
    ["--node-id", "n" * 65],
    ["--redis-timeout", "5x"],  # durations: 500ms, 25s, 2m, 1h or plain seconds
    ["--redis-timeout", "ms"],
    ["--redis-timeout", "-1s"],
    ["--bogus"],
    ["--bogus=1"],
]


@pytest.mark.parametrize("bad", BAD_FLAGS, ids=lambda a: " ".join(a) or "empty")
def test_invalid_flag_exits_2_without_listening(bad):
    port = harness.free_port()
    rc, err, accepted = run_invalid(["--listen", f"127.0.0.1:{port}", "--node-id", "n", *bad],
                                    port=port)
    assert rc == 2, f"exit code {rc}, stderr: {err}"
    assert err.strip(), "no message on stderr"
    assert not accepted, "the gateway listened before rejecting its options"
    assert not harness.sanitizer_findings(err), err
    option = bad[0].split("=", 1)[0]
    assert option in err, f"the message does not name {option}: {err}"
    if option != "--bogus" and len(bad) > 1:  # (a missing value only names the option)
        var = "CHAT_" + option[2:].upper().replace("-", "_")
        assert var in err, f"the message does not name {var}: {err}"
    assert len(err.strip().splitlines()) == 1, f"not one line: {err!r}"


@pytest.mark.parametrize("bad,accepted_forms", [
    (["--max-rooms-per-conn", "1000001"], ["1000000"]),
    (["--max-text-bytes", "1048577"], ["1048576"]),
    (["--redis-timeout", "2m"], ["60s", "60 s", "1m", "60000"]),
    (["--redis-timeout", "5ms"], ["10ms", "10 ms", "0.01"]),
])
def test_out_of_range_message_states_the_range(bad, accepted_forms):
    """docs/configuration.md: the message says what is expected. For a value out of range that
    is the range, not only the syntax."""
    port = harness.free_port()
    rc, err, _ = run_invalid(["--listen", f"127.0.0.1:{port}", "--node-id", "n", *bad])
    assert rc == 2
    assert any(f in err for f in accepted_forms), \
        f"{' '.join(bad)}: the message does not state the allowed range: {err.strip()}"


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:", "127.0.0.1:99999",
                                    "127.0.0.1:-1", "999.1.1.1:80", ":abc", ""])
def test_invalid_listen_exits_2(listen):
    rc, err, _ = run_invalid(["--listen", listen, "--node-id", "n"])
    assert rc == 2, f"--listen {listen!r}: exit code {rc}, stderr: {err}"
    assert err.strip(), "no message on stderr"


@pytest.mark.parametrize("var,value", [
    ("CHAT_MAX_ROOMS_PER_CONN", "0"),
    ("CHAT_MAX_ROOMS_PER_CONN", "lots"),
    ("CHAT_MAX_TEXT_BYTES", "abc"),
    ("CHAT_ROOM_EVENTS", "maybe"),
    ("CHAT_LISTEN", "nonsense"),
    ("CHAT_NODE_ID", "bad id"),
])
def test_invalid_env_value_exits_2(var, value):
    port = harness.free_port()
    args = [] if var == "CHAT_NODE_ID" else ["--node-id", "n"]
    if var != "CHAT_LISTEN":
        args += ["--listen", f"127.0.0.1:{port}"]
    rc, err, accepted = run_invalid(args, env={var: value}, port=port)
    assert rc == 2, f"{var}={value}: exit code {rc}, stderr: {err}"
    assert var in err, f"the message does not name {var}: {err}"
    assert not accepted


# ---- env vars used when there is no flag; flags override env ---------------------------------

def test_env_listen(gateway_factory):
    port = harness.free_port()
    gw = gateway_factory(listen=False, port=port, env={"CHAT_LISTEN": f"127.0.0.1:{port}"})

    async def body():
        c = await Client.open(gw)
        await c.close()
    run(body())


def test_flag_listen_overrides_env(gateway_factory):
    env_port, flag_port = harness.free_port(), harness.free_port()
    gw = gateway_factory(port=flag_port, env={"CHAT_LISTEN": f"127.0.0.1:{env_port}"})
    assert gw.port == flag_port
    assert not harness.port_accepts(env_port), "the gateway also listens on the env address"


def test_env_node_id(gateway_factory):
    gw = gateway_factory(node_id=None, env={"CHAT_NODE_ID": "from-env"})

    async def body():
        c = await Client.open(gw)
        assert c.welcome["node"] == "from-env"
        assert c.user.startswith("guest-from-env-")
        await c.close()
    run(body())


def test_flag_node_id_overrides_env(gateway_factory):
    gw = gateway_factory(node_id="from-flag", env={"CHAT_NODE_ID": "from-env"})

    async def body():
        c = await Client.open(gw)
        assert c.welcome["node"] == "from-flag"
        await c.close()
    run(body())


async def joins_until_limit(gw, limit):
    c = await Client.open(gw)
    for i in range(limit):
        await c.join(f"r{i}")
    await c.send({"type": "join", "room": "one-too-many"})
    err = await c.error("room_limit")
    assert err.get("room") == "one-too-many"
    await c.close()


def test_env_max_rooms_per_conn(gateway_factory):
    gw = gateway_factory(env={"CHAT_MAX_ROOMS_PER_CONN": "2"})
    run(joins_until_limit(gw, 2))


def test_flag_max_rooms_per_conn_overrides_env(gateway_factory):
    gw = gateway_factory("--max-rooms-per-conn", "3", env={"CHAT_MAX_ROOMS_PER_CONN": "2"})
    run(joins_until_limit(gw, 3))


async def text_limit_is(gw, limit):
    c = await Client.open(gw, "/chat/r")
    await c.chat_confirmed("a" * limit)
    await c.send({"type": "chat", "text": "a" * (limit + 1), "cid": "over"})
    await c.error("bad_request")
    await c.close()


def test_env_max_text_bytes(gateway_factory):
    gw = gateway_factory(env={"CHAT_MAX_TEXT_BYTES": "5"})
    run(text_limit_is(gw, 5))


def test_flag_max_text_bytes_overrides_env(gateway_factory):
    gw = gateway_factory("--max-text-bytes", "8", env={"CHAT_MAX_TEXT_BYTES": "5"})
    run(text_limit_is(gw, 8))


def test_flag_room_events_overrides_env(gateway_factory):
    gw = gateway_factory("--room-events=true", env={"CHAT_ROOM_EVENTS": "false"})

    async def body():
        a, b = await open_clients(gw, ["/chat/r", "/chat/r"])
        check_system(await a.recv(), "r", "join", b.user)
        await a.close()
        await b.close()
    run(body())


# ---- shutdown -------------------------------------------------------------------------------

def test_sigterm_with_open_connections_exits_0(gateway_factory):
    gw = gateway_factory()

    async def body():
        clients = await open_clients(gw, ["/chat/r"] * 3 + ["/ws"] * 2)
        rc = await asyncio.get_running_loop().run_in_executor(None, gw.stop)
        assert rc == 0, f"exit code {rc} after SIGTERM\n{gw.stderr_text()[-3000:]}"
        for c in clients:  # every client sees its connection end
            await c.expect_closed(timeout=5)
    run(body())
    # the fixture's teardown checks stderr for sanitizer reports


def test_sigterm_when_idle_exits_0(gateway_factory):
    gw = gateway_factory()
    assert gw.stop() == 0


# ---- syntax and ranges from docs/configuration.md -------------------------------------------

def test_flag_equals_value_syntax(gateway_factory):
    gw = gateway_factory("--max-rooms-per-conn=2")
    run(joins_until_limit(gw, 2))


def test_range_upper_bounds_are_accepted(gateway_factory):
    gw = gateway_factory("--max-rooms-per-conn", "1000000", "--max-text-bytes", "1048576")

    async def body():
        c = await Client.open(gw, "/chat/r")
        _, copy = await c.chat_confirmed("x" * 5000)  # over the default 4096
        assert len(copy["text"]) == 5000
        await c.close()
    run(body())


def test_bare_boolean_flag_means_true(gateway_factory):
    gw = gateway_factory("--room-events", env={"CHAT_ROOM_EVENTS": "false"})

    async def body():
        a, b = await open_clients(gw, ["/chat/r", "/chat/r"])
        check_system(await a.recv(), "r", "join", b.user)
        await a.close()
        await b.close()
    run(body())


@pytest.mark.parametrize("value,events", [("0", False), ("1", True), ("true", True)])
def test_env_boolean_values(gateway_factory, value, events):
    gw = gateway_factory(env={"CHAT_ROOM_EVENTS": value})

    async def body():
        a, b = await open_clients(gw, ["/chat/r", "/chat/r"])
        if events:
            check_system(await a.recv(), "r", "join", b.user)
        await a.assert_quiet()
        await a.close()
        await b.close()
    run(body())


# --redis-timeout takes 10 ms to 60 s, so "2m" and "1h" are only checked as out of range below.
@pytest.mark.parametrize("value", ["500ms", "25s", "1m", "3", "1.5", "10ms", "60"])
def test_duration_syntax_is_accepted(gateway_factory, value):
    gw = gateway_factory("--redis-timeout", value)
    assert gw.alive()


def test_listen_localhost(gateway_factory):
    port = harness.free_port()
    gw = gateway_factory("--listen", f"localhost:{port}", listen=False, port=port)

    async def body():
        c = await Client.open(gw)
        await c.close()
    run(body())


def test_sigterm_closes_websockets_with_1001(gateway_factory):
    gw = gateway_factory()

    async def body():
        c = await Client.open(gw, "/chat/r")
        stop = asyncio.get_running_loop().run_in_executor(None, gw.stop)
        assert await c.expect_closed(timeout=10) == 1001
        assert await asyncio.wait_for(stop, 15) == 0
    run(body())
