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


# ---- identity tests (test_auth_*.py) -------------------------------------------------------------

@pytest.fixture(scope="session")
def auth_keys(tmp_path_factory):
    """tokens.Keys: k1.key, k2.key (HS secrets), rsa1.pem, ec1.pem, ec384.pem in a temp dir,
    generated once per session."""
    import tokens

    return tokens.Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def token_leak_check(tmp_path):
    """After the test (and after gateway_factory stopped its gateways, when this fixture is
    set up first: autouse or usefixtures), no minted token, signature or secret may appear in
    any gateway log under tmp_path."""
    yield
    import tokens

    tokens.assert_no_leak(tmp_path)
