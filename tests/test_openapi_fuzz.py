"""schemathesis against the published OpenAPI schema of the placement app, over real HTTP on loopback.

The app is the one every Ray ingress replica serves (:func:`placement.serve.app.build_fastapi`), run
without Ray in its own process (:mod:`tests.plain_server`) with a bearer token configured
and an in-process learner. For every operation of ``/openapi.json`` schemathesis generates
requests that fit the schema (positive) and requests that break it (negative); each answer
must be no 5xx, a status code the schema documents, the documented content type and
headers, a body that validates against the documented response schema, and (negative
cases) a 4xx rejection. At least :data:`MIN_CASES` cases are sent in all; generation is
seeded per operation (the same cases every run, wherever the checkout lies) and the count is asserted.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from placement.serve.settings import Settings
from tests.plain_server import PlainServer, free_port

pytestmark = pytest.mark.server
MIN_CASES = 1000
TOKEN = "fuzz-test-token-0123456789"
EXAMPLES = {  # per operation and mode; operations without inputs run once or twice whatever the budget
    ("POST", "/v1/placements"): 320,
    ("POST", "/v1/feedback"): 160,
    ("POST", "/v1/policy/rollback"): 40,
}
DEFAULT_EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, serve_model_dir):
    s = Settings(state_dir=tmp_path_factory.mktemp("fuzz_state"), model_path=serve_model_dir, port=free_port(),
                 token=TOKEN, learner_enabled=False, policy_poll_s=60.0, max_batch_jobs=2000,
                 max_body_bytes=2**20, ppo_timesteps=64)
    with PlainServer(s) as server:
        yield server


def _fuzz(strategy, budget: int, checks: list, headers: dict, key: str, sent: Counter, statuses: Counter,
          session: requests.Session) -> None:
    """Send up to ``budget`` generated cases of one operation and mode; fail on the first bad answer."""

    # a fixed seed per operation and mode: the same cases on every run and in every checkout
    # (derandomize=True seeds from the test function, whose digest depends on where the file lies)
    @seed(int(hashlib.sha256(key.encode()).hexdigest()[:12], 16))
    @settings(max_examples=budget, derandomize=False, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        response = case.call(headers=headers, session=session, timeout=60)
        sent[key] += 1
        statuses[response.status_code] += 1
        case.validate_response(response, checks=checks, headers=headers)

    run()


@pytest.mark.slow
def test_generated_requests_get_documented_answers(fuzz_server):
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    schema.validate()  # the published schema itself is valid OpenAPI
    headers = {"Authorization": f"Bearer {TOKEN}"}
    session = requests.Session()  # one keep-alive connection
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"POST /v1/placements", "POST /v1/feedback", "GET /v1/policy", "POST /v1/policy/rollback",
            "POST /v1/policy/update", "GET /healthz", "GET /v1/targets", "GET /metrics"} <= labels

    for op in operations:
        label = f"{op.method.upper()} {op.path}"
        budget = EXAMPLES.get((op.method.upper(), op.path), DEFAULT_EXAMPLES)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not list(op.body) and not list(op.iter_parameters()):
                continue  # an operation without inputs has no invalid form
            checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
            _fuzz(op.as_strategy(generation_mode=mode), budget, checks, headers, f"{label} {mode.value}", sent,
                  statuses, session)

    session.close()
    total = sum(sent.values())
    print(f"\nschemathesis: {total} cases, statuses {dict(sorted(statuses.items()))}")
    for key, n in sorted(sent.items()):
        print(f"  {key}: {n}")
    assert total >= MIN_CASES, sent
    assert not [s for s in statuses if s >= 500]
    assert statuses[200] > 0 and statuses[422] > 0  # both accepted and rejected requests were exercised
