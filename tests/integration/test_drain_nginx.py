"""A drain behind nginx: new clients never see the draining node's 503 (deploy/nginx/nginx.conf.in).

While a node drains it answers new upgrades with 503, and least_conn makes nginx prefer it: it
is the node with the fewest connections through nginx. The shipped config retries a 503 on
another node (proxy_next_upstream ... http_503), so every client gets in.

Three nodes behind nginx (deploy/local/cluster.sh, --drain-delay 8s). node1 holds a few direct
connections (so that it does not exit at once) and gets SIGTERM by PID; once its /readyz says
draining, 50 clients connect through nginx one after the other, each kept open: every one must
get its welcome, from node2 or node3, within the drain delay. nginx's access log must show that
it did try node1 and moved on (an upstream status "503, 101"). Then node1 ends its drain by
itself and logs a clean stop.
"""

import asyncio
import collections
import os
import re
import signal
import time

from cluster import Cluster, SCALE, pid_alive, wait_until
from ophelpers import check_not_ready, readyz
from wsclient import Client, close_all, run

DRAIN_DELAY = 8.0
DRAIN_TIMEOUT = 12.0
N_CLIENTS = 50
N_DIRECT = 3


def test_drain_behind_nginx_new_clients_all_get_in(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTER_DRAIN_DELAY", f"{DRAIN_DELAY:g}s")
    monkeypatch.setenv("CLUSTER_DRAIN_TIMEOUT", f"{DRAIN_TIMEOUT:g}s")
    cl = Cluster(tmp_path / "cluster").up()
    node1 = cl.started_pids["node1"]
    stats = {}
    try:
        async def body():
            direct = [await Client.open(cl.node(1)) for _ in range(N_DIRECT)]
            via = []
            errors = []
            try:
                t0 = time.monotonic()
                cl.expected_dead.add("node1")  # it exits by itself at the end of its drain
                os.kill(node1, signal.SIGTERM)
                loop = asyncio.get_running_loop()
                st, bd = await loop.run_in_executor(None, lambda: wait_until(
                    lambda: (lambda r: r if r[0] == 503 else None)(
                        readyz(cl.env["NODE1_ADMIN_URL"])),
                    2 * SCALE, "node1's /readyz to turn 503 after SIGTERM", interval=0.02))
                check_not_ready(st, bd, ["draining"])
                for i in range(N_CLIENTS):
                    try:
                        via.append(await Client.open(cl.nginx, "/ws"))
                    except Exception as e:  # a refused upgrade, a timeout: counted, reported
                        errors.append(f"client {i}: {type(e).__name__}: {e}")
                stats["elapsed"] = time.monotonic() - t0
                stats["nodes"] = collections.Counter(c.welcome["node"] for c in via)
                stats["errors"] = errors
            finally:
                await close_all(via + direct)

        run(body(), timeout=60)
        assert stats["elapsed"] < DRAIN_DELAY, \
            f"the {N_CLIENTS} connections took {stats['elapsed']:.1f}s, longer than the drain " \
            f"delay ({DRAIN_DELAY:g}s): the test did not run inside the window it tests"
        assert not stats["errors"], \
            f"{len(stats['errors'])} of {N_CLIENTS} clients through nginx failed while node1 " \
            f"drained (nodes of the others: {dict(stats['nodes'])}):\n" + \
            "\n".join(stats["errors"][:10])
        assert sum(stats["nodes"].values()) == N_CLIENTS
        assert "node1" not in stats["nodes"], "a client got a welcome from the draining node"

        # nginx did pick node1 and moved on: "503, 101" in $upstream_status
        access = (cl.dir / "nginx-access.log").read_text(errors="replace")
        retried = [line for line in access.splitlines()
                   if re.search(r"ustatus=503, 101\b", line)]
        assert retried, "nginx never tried the draining node (no 'ustatus=503, 101' in its " \
                        f"access log), so this run did not test the retry:\n{access[-3000:]}"

        # node1 finishes its drain by itself: exit, with its stop logged
        wait_until(lambda: not pid_alive(node1), (DRAIN_TIMEOUT + 5) * SCALE,
                   f"node1 (pid {node1}) to exit at the end of its drain")
        log = cl.log("node1")
        assert '"msg":"stopped"' in log, f"node1 did not log a clean stop:\n{log[-3000:]}"
    finally:
        problems = cl.finish()
    assert not problems, "\n".join(problems)
