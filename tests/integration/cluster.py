"""The local multi-node cluster (deploy/local/cluster.sh) for the integration tests.

Cluster(workdir).up() runs `cluster.sh up` with its own CLUSTER_DIR and a free block of 11
consecutive loopback ports (redis = base, node I = base+I, nginx = base+10), and reads
cluster.env. finish() runs `cluster.sh down`, stops every process the test started itself (a
restarted redis-server) by PID, and lists what went wrong: a node that died on its own, a node
that needed SIGKILL, a node that did not log a clean stop, a sanitizer report in a node log.

Every wait is bounded (a deadline and a loop count). Processes are only ever signalled by PID.
"""

import os
import pathlib
import random
import re
import signal
import socket
import subprocess
import time
import types

import harness

REPO_ROOT = harness.REPO_ROOT
CLUSTER_SH = REPO_ROOT / "deploy" / "local" / "cluster.sh"
SCALE = harness.TIMEOUT_SCALE

# Port blocks are taken below the kernel's ephemeral range (32768..), so that an outgoing
# connection of another test cannot sit on one of them.
PORT_LOW, PORT_HIGH = 20000, 32700
ROOM_LINGER = "1s"  # --room-linger of the test cluster's nodes
BLOCK = 14  # redis, 3 nodes, nginx at +10, the nodes' admin ports at +11..+13


def _bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not harness.port_accepts(port, timeout=0.05)


def free_port_block(tries=200):
    """The base of BLOCK consecutive loopback ports that were all free a moment ago."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(tries):
        base = rng.randrange(PORT_LOW, PORT_HIGH - BLOCK)
        if all(_bindable(base + i) for i in range(BLOCK)):
            return base
    raise RuntimeError(f"no block of {BLOCK} free ports found in {tries} tries")


def pid_alive(pid):
    """Alive and not a zombie (cluster.sh's children are reparented; nobody may reap them)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pid_state(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def wait_until(pred, timeout, what, interval=0.05):
    """Polls pred() until it returns a true value (returned) or the deadline passes (fails)."""
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(int(timeout / interval) + 100):
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")


def endpoint(url):
    """What wsclient.Client.open() needs: an object with .url."""
    return types.SimpleNamespace(url=url)


class Cluster:
    def __init__(self, workdir, nodes=3):
        self.dir = pathlib.Path(workdir)
        self.nodes = nodes
        self.env = {}
        self.base = None
        self.started_pids = {}  # component -> pid at `up`
        self.expected_dead = set()  # components a test killed on purpose
        self.own_procs = []  # (name, Popen) started by the test itself
        self.down_output = ""

    # ---- lifecycle ---------------------------------------------------------------------------

    def _script_env(self):
        env = harness.gateway_env()  # no CHAT_* of the caller; ASAN_OPTIONS under ASan
        # A short room linger, so that subscriptions visibly follow membership (rooms stay
        # subscribed this long after their last local member left).
        env.update(CHAT_GATEWAY_BIN=harness.require_bin(), CLUSTER_DIR=str(self.dir),
                   CLUSTER_NODES=str(self.nodes), CLUSTER_ROOM_LINGER=ROOM_LINGER)
        if self.base is not None:
            env["CLUSTER_BASE_PORT"] = str(self.base)
        return env

    def _run(self, cmd, timeout):
        return subprocess.run(["bash", str(CLUSTER_SH), cmd], env=self._script_env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO_ROOT)

    def up(self, attempts=3):
        self.dir.mkdir(parents=True, exist_ok=True)
        out = ""
        for _ in range(attempts):
            self.base = free_port_block()
            r = self._run("up", timeout=120 * SCALE)
            out = r.stdout + r.stderr
            if r.returncode == 0:
                break
            # A port taken between the scan and the start is the only reason worth a retry.
            if "already in use" not in out:
                raise AssertionError(f"cluster.sh up failed (exit {r.returncode}):\n{out}")
        else:
            raise AssertionError(f"cluster.sh up failed {attempts} times:\n{out}")
        self.env = {}
        for line in (self.dir / "cluster.env").read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                self.env[k] = v
        for comp in self.components():
            self.started_pids[comp] = self.pid(comp)
        return self

    def components(self):
        return ["redis"] + [f"node{i}" for i in range(1, self.nodes + 1)] + ["nginx"]

    def pid(self, comp):
        return int((self.dir / f"{comp}.pid").read_text().split()[0])

    def finish(self):
        """Stops everything (cluster.sh down, then our own processes by PID); returns a list of
        problems (empty when all went well)."""
        problems = []
        for comp in self.components():
            if comp in self.expected_dead or comp not in self.started_pids:
                continue
            if not pid_alive(self.started_pids[comp]):
                problems.append(f"{comp} (pid {self.started_pids[comp]}) died during the test")
        # A paused redis would make `down` wait for its stop timeout.
        for name, p in self.own_procs:
            if p.poll() is None and pid_state(p.pid) == "T":
                os.kill(p.pid, signal.SIGCONT)
        rp = self.started_pids.get("redis")
        if rp and pid_alive(rp) and pid_state(rp) == "T":
            os.kill(rp, signal.SIGCONT)
        try:
            r = self._run("down", timeout=120 * SCALE)
            self.down_output = r.stdout + r.stderr
            if r.returncode != 0:
                problems.append(f"cluster.sh down exited {r.returncode}:\n{self.down_output}")
            if "SIGKILL" in self.down_output:
                problems.append(f"cluster.sh down had to SIGKILL:\n{self.down_output}")
        except subprocess.TimeoutExpired as e:
            problems.append(f"cluster.sh down did not finish: {e}")
        for name, p in self.own_procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
                    problems.append(f"{name} (pid {p.pid}) needed SIGKILL")
        for comp in self.components():
            if comp.startswith("node") and comp in self.started_pids:
                pid = self.started_pids[comp]
                if comp not in self.expected_dead and pid_alive(pid):
                    problems.append(f"{comp} (pid {pid}) still running after cluster.sh down")
        for i in range(1, self.nodes + 1):
            comp = f"node{i}"
            log = self.log(comp)
            found = harness.sanitizer_findings(log)
            if found:
                problems.append(f"{comp}: sanitizer report ({', '.join(found)}):\n{log[-6000:]}")
            elif comp not in self.expected_dead and '"msg":"stopped"' not in log:
                problems.append(f"{comp}: no clean stop ('\"msg\":\"stopped\"') in its log:\n"
                                f"{log[-3000:]}")
        return problems

    # ---- addresses -----------------------------------------------------------------------------

    @property
    def redis_port(self):
        return int(self.env["REDIS_PORT"])

    def node_port(self, i):
        return int(self.env[f"NODE{i}_PORT"])

    def node(self, i):
        """Endpoint of node i (1-based) for wsclient.Client.open()."""
        return endpoint(self.env[f"NODE{i}_URL"])

    @property
    def nginx(self):
        return endpoint(self.env["NGINX_URL"])

    def log(self, comp):
        try:
            return (self.dir / f"{comp}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def count_in_log(self, comp, needle):
        return self.log(comp).count(needle)

    # ---- redis ---------------------------------------------------------------------------------

    @property
    def redis_password(self):
        return self.env["REDIS_PASSWORD"]

    def redis_cli(self, *args, timeout=5.0, auth=True):
        env = dict(os.environ)
        env.pop("REDISCLI_AUTH", None)
        if auth:  # the cluster's Redis requires the password of this run (cluster.env)
            env["REDISCLI_AUTH"] = self.redis_password
        r = subprocess.run(["redis-cli", "-p", str(self.redis_port), *map(str, args)],
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, env=env)
        assert r.returncode == 0, f"redis-cli {args} failed: {r.stdout}{r.stderr}"
        return r.stdout

    def numsub(self, channel):
        out = self.redis_cli("PUBSUB", "NUMSUB", channel).split()
        assert len(out) == 2 and out[0] == channel, out
        return int(out[1])

    def channels(self, pattern):
        return sorted(self.redis_cli("PUBSUB", "CHANNELS", pattern).split())

    def sub_counts(self):
        """node id -> number of channels its subscriber link is subscribed to (CLIENT LIST; the
        gateway names its links chat-gateway:<node>:sub)."""
        counts = {}
        for line in self.redis_cli("CLIENT", "LIST").splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            m = re.fullmatch(r"chat-gateway:(.+):sub", fields.get("name", ""))
            if m:
                counts[m.group(1)] = counts.get(m.group(1), 0) + int(fields.get("sub", 0))
        return counts

    def link_ids(self, kind):
        """node id -> sorted CLIENT LIST ids of the connections named chat-gateway:<node>:<kind>
        (kind "pub" or "sub"): a connection that was replaced shows up as a new id."""
        ids = {}
        for line in self.redis_cli("CLIENT", "LIST").splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            m = re.fullmatch(r"chat-gateway:(.+):" + re.escape(kind), fields.get("name", ""))
            if m:
                ids.setdefault(m.group(1), []).append(int(fields["id"]))
        return {node: sorted(v) for node, v in ids.items()}

    def wait_numsub(self, channel, n, timeout=5.0):
        wait_until(lambda: self.numsub(channel) == n, timeout * SCALE,
                   f"PUBSUB NUMSUB {channel} == {n}")

    def stop_redis(self):
        """SIGTERM to the redis-server of cluster.sh (by its PID) and a bounded wait."""
        pid = self.started_pids["redis"]
        assert pid_alive(pid), "redis is not running"
        os.kill(pid, signal.SIGTERM)
        self.expected_dead.add("redis")
        wait_until(lambda: not pid_alive(pid), 10 * SCALE, f"redis pid {pid} to exit")
        wait_until(lambda: not harness.port_accepts(self.redis_port, 0.05), 5,
                   "the redis port to close")

    def start_redis(self):
        """A new redis-server on the same port and with the same password (cluster.sh's
        redis.conf), owned by the test (stopped by PID at finish)."""
        log = open(self.dir / f"redis-restart{len(self.own_procs)}.log", "wb")
        with log:
            p = subprocess.Popen(["redis-server", str(self.dir / "redis.conf"),
                                  "--port", str(self.redis_port), "--bind",
                                  "127.0.0.1", "--save", "", "--appendonly", "no",
                                  "--daemonize", "no", "--dir", str(self.dir)],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.own_procs.append(("redis-server (restarted)", p))
        wait_until(lambda: p.poll() is not None or harness.port_accepts(self.redis_port, 0.1),
                   10 * SCALE, "the restarted redis to accept TCP")
        assert p.poll() is None, f"restarted redis exited with {p.returncode}"
        return p

    def kill_node(self, i):
        comp = f"node{i}"
        pid = self.started_pids[comp]
        self.expected_dead.add(comp)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10, f"{comp} (pid {pid}) to die")
