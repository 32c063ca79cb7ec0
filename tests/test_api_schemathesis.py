"""schemathesis against the documented API of a real ``inboxhub serve`` process.

The hub runs as a child process on the session Redis, with a little real data (a routed
conversation, an agent online), and schemathesis generates requests from the published
/api/v1/openapi.json for every operation, valid and invalid, with an admin bearer token. No
answer may be a 5xx, and every answer must be documented: its status, content type, headers
and body schema; invalid input must be refused. Examples per operation are bounded so the
whole run stays within seconds.

The test drives Hypothesis with ``operation.as_strategy()`` rather than the pytest plugin's
lazy ``from_fixture`` loader, which reads pytest internals that pytest 9 removed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from redis import Redis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_TOKEN, AGENT_TOKEN, TEST_SECRET, RedisServer, write_config
from tests.test_crash_recovery import free_port

ROUTING = """
[routing]
languages = ["es", "pt", "en"]

[[routing.agents]]
id = "ana.agent"
languages = { es = 5 }
"""

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]


def _signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(TEST_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Inboxhub-Signature": f"sha256={digest}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def hub_url(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    Redis(unix_socket_path=redis_server.socket).flushall()
    home = tmp_path_factory.mktemp("schemathesis-hub")
    port = free_port()
    config = write_config(home, redis_server.url, port=port, extra=ROUTING)
    env = {**os.environ, "IH_TEST_SECRET": TEST_SECRET, "IH_TEST_ADMIN": ADMIN_TOKEN,
           "IH_TEST_AGENT": AGENT_TOKEN}
    log = (home / "hub.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "hub", "--config", str(config), "serve"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, home / "hub.log")
        _seed(base)
        yield base
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"hub exited early:\n{log.read_text(errors='replace')}")
        try:
            if requests.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"hub not ready:\n{log.read_text(errors='replace')}")


def _seed(base: str) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = json.dumps({"id": "s-1", "sender": "buyer", "text": "Hola, ¿dónde está mi pedido?",
                       "language": "es"}).encode()
    assert requests.post(base + "/webhooks/api/shop", data=body, headers=_signed(body),
                         timeout=10).status_code == 200
    r = requests.post(base + "/api/v1/agents/ana.agent/status", json={"status": "online"},
                      headers=admin, timeout=10)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        convs = requests.get(base + "/api/v1/conversations", headers=admin,
                             timeout=10).json()["conversations"]
        if convs and convs[0]["status"] == "assigned":
            return
        time.sleep(0.1)
    raise AssertionError("seed conversation was not routed")


# Streams never end, so a generated request would only time out; tests/test_events.py drives
# GET /api/v1/events and checks its bad-input answers.
STREAMS = frozenset({"/api/v1/events"})
EXAMPLES = 15  # per operation and mode: 22 operations x 3 runs stay well under a minute


@pytest.mark.parametrize(
    ("mode", "token"),
    [(GenerationMode.POSITIVE, ADMIN_TOKEN), (GenerationMode.NEGATIVE, ADMIN_TOKEN),
     (GenerationMode.POSITIVE, AGENT_TOKEN)],
    ids=["valid-input-admin", "invalid-input-admin", "valid-input-agent"])
def test_documented_api_conforms(hub_url: str, mode: GenerationMode, token: str) -> None:
    schema = schemathesis.openapi.from_url(hub_url + "/api/v1/openapi.json", timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in STREAMS:
            continue

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def exercise(case: Any) -> None:
            case.call_and_validate(base_url=hub_url, headers=headers, checks=CHECKS,
                                   timeout=10)

        try:
            exercise()
        except Unsatisfiable:
            continue  # nothing to make invalid (no parameters, no body)
        except Exception as exc:  # collect every operation's failure, not just the first
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
        tested += 1
    # every documented operation but the document itself (schemathesis leaves that out);
    # invalid input exists only where there are parameters or a body
    assert tested >= (21 if mode is GenerationMode.POSITIVE else 15), tested
    assert not failures, "\n\n".join(failures)
