"""The shipped Redis requires a password, and the gateways send it (docs/scaling.md, deploy/README).

- deploy/local/cluster.sh: a new password per `up`; Redis answers NOAUTH without it; every node
  is connected and ready with it; the password is on no process's command line; redis.conf and
  cluster.env are mode 0600.
- docker-compose.yml and deploy/k8s: the Redis command, its health/liveness probe and the
  gateway's way to CHAT_REDIS_URL are taken from the files (compose: after its `$$` unescaping;
  Kubernetes: from `kubectl kustomize`, after its `$(VAR)` expansion) and run here against the
  committed placeholder password. Only the address changes: Redis gets `--port P --bind
  127.0.0.1` right after its `-` (stdin config) argument, and the host `redis` / `chat-redis`
  becomes 127.0.0.1:P. Redis must refuse a client without the password, the probe must pass, and
  the gateway must come up ready.
"""

import base64
import os
import pathlib
import re
import shutil
import stat
import subprocess

import yaml

import harness
from cluster import Cluster, wait_until
from ophelpers import check_ready, readyz, stop_proc

REPO = harness.REPO_ROOT
SCALE = harness.TIMEOUT_SCALE


def redis_cli(port, *args, password=None):
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if password is not None:
        env["REDISCLI_AUTH"] = password
    r = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                       timeout=5 * SCALE, stdin=subprocess.DEVNULL, env=env)
    return r.stdout + r.stderr


def cmdlines():
    """pid -> command line of every process we can see."""
    out = {}
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
            except OSError:
                pass
    return out


def env_file(path):
    """KEY=VALUE lines of an env file (comments and blank lines skipped), as compose and
    kustomize read them."""
    env = {}
    for line in pathlib.Path(path).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            env[k.strip()] = v
    return env


class Procs:
    """Processes this test starts, stopped by PID at the end."""

    def __init__(self, workdir):
        self.dir = workdir
        self.procs = []

    def start(self, name, argv, env):
        log = open(self.dir / f"{name}.log", "wb")
        with log:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        self.procs.append((name, p))
        return p

    def log(self, name):
        return (self.dir / f"{name}.log").read_text(errors="replace")

    def stop_all(self):
        codes = {}
        for name, p in reversed(self.procs):
            codes[name] = stop_proc(p)
        return codes


def start_redis_from(procs, name, script, port, env):
    """Runs the deployment's Redis shell command (exec redis-server - ...) on 127.0.0.1:port."""
    assert script.count("redis-server - ") == 1, f"unexpected Redis command: {script!r}"
    local = script.replace("redis-server - ", f"redis-server - --port {port} --bind 127.0.0.1 ")
    p = procs.start(name, ["sh", "-c", local],
                    {"PATH": os.environ["PATH"], "HOME": str(procs.dir), **env})
    wait_until(lambda: p.poll() is not None or harness.port_accepts(port, 0.1), 10 * SCALE,
               f"{name} to accept TCP on {port}")
    assert p.poll() is None, f"{name} exited with {p.returncode}:\n{procs.log(name)}"
    return p


def check_redis_auth(port, password):
    assert "NOAUTH" in redis_cli(port, "PING"), "Redis answers a client without the password"
    assert "WRONGPASS" in redis_cli(port, "PING", password="not-the-password")
    assert redis_cli(port, "PING", password=password).strip() == "PONG"


def wait_gateway_ready(admin_port, proc, logs):
    def ready():
        assert proc.poll() is None, f"the gateway exited with {proc.returncode}:\n{logs()}"
        if not harness.port_accepts(admin_port, 0.1):
            return None
        st, body = readyz(f"http://127.0.0.1:{admin_port}")
        return (st, body) if st == 200 else None

    try:
        st, body = wait_until(ready, 10 * SCALE, "the gateway to be ready (Redis with AUTH)")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- gateway log:\n{logs()[-3000:]}") from None
    check_ready(st, body)


# ---- deploy/local/cluster.sh --------------------------------------------------------------------

def test_cluster_redis_requires_a_password(tmp_path):
    cl = Cluster(tmp_path / "cluster").up()
    try:
        env = cl.env
        pw = env["REDIS_PASSWORD"]
        assert re.fullmatch(r"[0-9a-f]{48}", pw), f"password {pw!r}: expected 48 hex digits"
        assert env["REDIS_URL"] == f"redis://:{pw}@127.0.0.1:{cl.redis_port}"
        check_redis_auth(cl.redis_port, pw)
        clients = cl.redis_cli("CLIENT", "LIST")
        for i in range(1, cl.nodes + 1):
            for link in ("pub", "sub"):
                assert f"name=chat-gateway:node{i}:{link} " in clients, \
                    f"node{i}'s {link} link is not connected:\n{clients}"
            check_ready(*readyz(env[f"NODE{i}_ADMIN_URL"]))
        seen = [f"pid {pid}: {c}" for pid, c in cmdlines().items() if pw in c]
        assert not seen, f"the Redis password is on a command line: {seen}"
        for name in ("redis.conf", "cluster.env"):
            mode = stat.S_IMODE((cl.dir / name).stat().st_mode)
            assert mode == 0o600, f"{name} has mode {mode:o}, expected 600"
    finally:
        problems = cl.finish()
    assert not problems, "\n".join(problems)

    # the next `up` makes a new password
    cl2 = Cluster(tmp_path / "cluster2").up()
    try:
        assert cl2.env["REDIS_PASSWORD"] != pw
    finally:
        problems = cl2.finish()
    assert not problems, "\n".join(problems)


# ---- docker-compose.yml -------------------------------------------------------------------------

def compose_unescape(value):
    """docker-compose's interpolation of a string from the file: `$$` is a literal `$`. The
    shipped file must not interpolate anything from the host's environment."""
    assert not re.search(r"(?<!\$)\$(?!\$)", value.replace("$$", "")), \
        f"docker-compose.yml interpolates a host variable in {value!r}"
    return value.replace("$$", "$")


def test_compose_redis_requires_the_password_and_gateways_send_it(tmp_path):
    binary = harness.require_bin()
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    redis = services["redis"]
    assert "--protected-mode" not in str(redis), "Redis runs with --protected-mode no"
    assert "ports" not in redis, "Redis must not be published on the host"
    redis_env = env_file(REPO / redis["env_file"])
    pw = redis_env["REDIS_PASSWORD"]
    assert pw.startswith("replace-me"), f"a real-looking password is committed: {pw!r}"

    cmd = [compose_unescape(c) for c in redis["command"]]
    assert cmd[:2] == ["sh", "-c"] and len(cmd) == 3, cmd
    probe = [compose_unescape(c) for c in redis["healthcheck"]["test"]]
    assert probe[0] == "CMD-SHELL" and len(probe) == 2, probe

    procs = Procs(tmp_path)
    port = harness.free_port()
    try:
        start_redis_from(procs, "redis", cmd[2], port, redis_env)
        check_redis_auth(port, pw)
        seen = [c for c in cmdlines().values() if pw in c]
        assert not seen, f"the Redis password is on a command line: {seen}"
        # the health check, as the container runs it (with the port of this test)
        assert probe[1].count("redis-cli ") == 1, probe
        hc = subprocess.run(["sh", "-c", probe[1].replace("redis-cli ", f"redis-cli -p {port} ")],
                            env={"PATH": os.environ["PATH"], **redis_env}, timeout=10 * SCALE,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert hc.returncode == 0, f"the Redis health check failed: {hc.stdout}{hc.stderr}"
        hc = subprocess.run(["sh", "-c", probe[1].replace("redis-cli ", f"redis-cli -p {port} ")],
                            env={"PATH": os.environ["PATH"], "REDIS_PASSWORD": "wrong"},
                            timeout=10 * SCALE, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
        assert hc.returncode != 0, "the health check passes with a wrong password"

        # a gateway: the compose entrypoint with this build's binary, the service's environment
        gw = services["gateway1"]
        entry = [compose_unescape(c) for c in gw["entrypoint"]]
        script = entry[2]
        assert script.count("/usr/local/bin/chat-gateway") == 1 and \
            script.count("@redis:6379") == 1, script
        script = script.replace("/usr/local/bin/chat-gateway", binary) \
                       .replace("@redis:6379", f"@127.0.0.1:{port}")
        gw_env = {"PATH": os.environ["PATH"], **env_file(REPO / gw["env_file"])}
        gw_env.update({k: str(v) for k, v in gw["environment"].items()})
        admin = harness.free_port()
        gw_env.update(CHAT_LISTEN=f"127.0.0.1:{harness.free_port()}",
                      CHAT_ADMIN_LISTEN=f"127.0.0.1:{admin}")
        p = procs.start("gateway", [*entry[:2], script, *entry[3:]], harness.gateway_env(gw_env))
        wait_gateway_ready(admin, p, lambda: procs.log("gateway"))
        environ = pathlib.Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0")
        assert f"CHAT_REDIS_URL=redis://:{pw}@127.0.0.1:{port}".encode() in environ
        assert not any(e.startswith(b"REDIS_PASSWORD=") for e in environ), \
            "the gateway process keeps REDIS_PASSWORD in its environment"
        assert pw not in pathlib.Path(f"/proc/{p.pid}/cmdline").read_text(errors="replace")
        clients = redis_cli(port, "CLIENT", "LIST", password=pw)
        assert "name=chat-gateway:node1:pub " in clients, clients
    finally:
        codes = procs.stop_all()
    assert codes.get("gateway") == 0, f"gateway exit {codes}:\n{procs.log('gateway')[-3000:]}"
    assert not harness.sanitizer_findings(procs.log("gateway")), procs.log("gateway")[-6000:]


# ---- deploy/k8s ---------------------------------------------------------------------------------

def k8s_expand(value, env):
    """Kubernetes' $(VAR) expansion in an env value (variables defined earlier in the list)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: env.get(m.group(1), m.group(0)), value)


def test_k8s_redis_requires_the_secret_and_gateways_send_it(tmp_path):
    binary = harness.require_bin()
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found (it renders deploy/k8s)"
    r = subprocess.run([kubectl, "kustomize", str(REPO / "deploy" / "k8s")], capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    secrets = [s for s in by_kind["Secret"] if s["metadata"]["name"].startswith("chat-redis-auth")]
    assert len(secrets) == 1, by_kind.get("Secret")
    secret = secrets[0]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    pw = data["REDIS_PASSWORD"]
    assert pw.startswith("replace-me"), f"a real-looking password is committed: {pw!r}"
    for cm in by_kind["ConfigMap"]:
        assert "CHAT_REDIS_URL" not in cm.get("data", {}), \
            "CHAT_REDIS_URL in a ConfigMap (it carries the password: it comes from the Secret)"

    deps = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}

    def container_env(dep):
        """The container's env list, resolved: secretKeyRef values from the rendered Secret
        (by its generated name), $(VAR) expanded as the kubelet does."""
        c = dep["spec"]["template"]["spec"]["containers"][0]
        env = {}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = k8s_expand(e["value"], env)
            elif "secretKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret["metadata"]["name"], \
                    f"{dep['metadata']['name']} refers to Secret {ref['name']}"
                env[e["name"]] = data[ref["key"]]
        return c, env

    rc, renv = container_env(deps["chat-redis"])
    assert "--protected-mode" not in str(rc), "Redis runs with --protected-mode no"
    assert renv.get("REDIS_PASSWORD") == pw and renv.get("REDISCLI_AUTH") == pw, renv
    cmd = rc["command"] + rc.get("args", [])
    assert cmd[:2] == ["sh", "-c"] and len(cmd) == 3, cmd
    live = rc["livenessProbe"]["exec"]["command"]
    assert live[:2] == ["sh", "-c"] and len(live) == 3, live

    gc, genv = container_env(deps["chat-gateway"])
    url = genv.get("CHAT_REDIS_URL", "")
    assert url == f"redis://:{pw}@chat-redis:6379", \
        f"the gateway's CHAT_REDIS_URL resolves to {url!r} (REDIS_PASSWORD must come before it)"

    pols = [p for p in by_kind.get("NetworkPolicy", [])
            if p["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "chat-redis"}]
    assert len(pols) == 1, "no NetworkPolicy in front of Redis"
    assert pols[0]["spec"]["policyTypes"] == ["Ingress"]
    assert pols[0]["spec"]["ingress"] == [{
        "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "chat-gateway"}}}],
        "ports": [{"port": "redis", "protocol": "TCP"}]}], pols[0]["spec"]["ingress"]

    procs = Procs(tmp_path)
    port = harness.free_port()
    try:
        start_redis_from(procs, "redis", cmd[2], port, renv)
        check_redis_auth(port, pw)
        assert not [c for c in cmdlines().values() if pw in c], "password on a command line"
        lv = subprocess.run(["sh", "-c", live[2].replace("redis-cli ", f"redis-cli -p {port} ")],
                            env={"PATH": os.environ["PATH"], **renv}, timeout=10 * SCALE,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert lv.returncode == 0, f"the liveness probe failed: {lv.stdout}{lv.stderr}"

        admin = harness.free_port()
        env = {"CHAT_REDIS_URL": url.replace("@chat-redis:6379", f"@127.0.0.1:{port}"),
               "CHAT_LISTEN": f"127.0.0.1:{harness.free_port()}",
               "CHAT_ADMIN_LISTEN": f"127.0.0.1:{admin}", "CHAT_NODE_ID": "pod1"}
        p = procs.start("gateway", [binary], harness.gateway_env(env))
        wait_gateway_ready(admin, p, lambda: procs.log("gateway"))
    finally:
        codes = procs.stop_all()
    assert codes.get("gateway") == 0, f"gateway exit {codes}:\n{procs.log('gateway')[-3000:]}"
    assert not harness.sanitizer_findings(procs.log("gateway")), procs.log("gateway")[-6000:]
