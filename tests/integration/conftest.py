"""Fixtures for the chat-gateway integration tests (run with /usr/bin/pytest).

gateway_factory(*args, node_id="t1", env=None, listen=True, port=None) starts a gateway with
extra command-line arguments / environment and returns a harness.Gateway (.url, .http, .pid,
.port, .node_id). `gateway` is one default gateway. At teardown every gateway started by the test
gets SIGTERM (bounded wait); the test errors unless each exited 0 with no sanitizer report.
"""

import pytest

import harness


@pytest.fixture
def gateway_factory(tmp_path):
    started = []

    def start(*args, node_id="t1", env=None, listen=True, port=None):
        gw = harness.start_gateway(tmp_path / f"gw{len(started)}", args=args, node_id=node_id,
                                   env=env, listen=listen, port=port)
        started.append(gw)
        return gw

    yield start

    problems = []
    for gw in started:  # stop every one of them, even when an earlier one misbehaved
        for p in gw.problems():
            problems.append(f"[gateway pid {gw.pid}, port {gw.port}] {p}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def gateway(gateway_factory):
    return gateway_factory()
