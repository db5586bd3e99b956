"""Offline API docs and a self-describing OpenAPI: Swagger UI and ReDoc from the installed package's own
files (no CDN), an example for every request body, a description for every field."""

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from placement.serve import schemas
from placement.serve.app import PlacementService, build_fastapi
from placement.serve.examples import REQUEST_EXAMPLES
from placement.serve.settings import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    service = PlacementService(Settings(state_dir=tmp_path_factory.mktemp("docs")), replica="docs")
    with TestClient(build_fastapi(service)) as c:
        yield c


@pytest.mark.parametrize("page, asset", [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
def test_docs_pages_load_only_local_assets(client, page, asset):
    html = client.get(page)
    assert html.status_code == 200, html.text
    assert f"/docs-static/{asset}" in html.text
    assert "http://" not in html.text and "https://" not in html.text, "a page must not load anything from another host"
    js = client.get(f"/docs-static/{asset}")
    assert js.status_code == 200 and len(js.content) > 100_000
    if page == "/docs":
        assert client.get("/docs-static/swagger-ui.css").status_code == 200


def test_every_request_body_has_valid_examples(client):
    spec = client.get("/openapi.json").json()
    bodies = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None:
                continue
            bodies += 1
            name = content["schema"]["$ref"].rsplit("/", 1)[-1]
            examples = content.get("examples") or {}
            assert examples, f"{method.upper()} {path}: no example"
            record: type[BaseModel] = getattr(schemas, name)
            for key, example in examples.items():
                assert example.get("summary"), (name, key)
                record.model_validate(example["value"])  # every example is a valid body
    assert bodies >= 3 and set(REQUEST_EXAMPLES) <= {"PlacementRequest", "FeedbackRequest", "RollbackRequest"}


def test_every_field_has_a_description(client):
    spec = client.get("/openapi.json").json()
    missing = [f"{name}.{field}" for name, sch in spec["components"]["schemas"].items()
               for field, prop in (sch.get("properties") or {}).items() if not prop.get("description")]
    assert not missing, missing


@pytest.mark.parametrize("key", sorted(REQUEST_EXAMPLES["PlacementRequest"]))
def test_placement_examples_are_answered(client, key):
    body = REQUEST_EXAMPLES["PlacementRequest"][key]["value"]
    answer = client.post("/v1/placements", json=body)
    assert answer.status_code == 200, answer.text
