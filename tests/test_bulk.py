"""The bulk format (Arrow IPC, :mod:`placement.serve.bulk`) in process, on the app every ingress
replica serves: the same answers as the JSON columns format, decisions recorded (feedback on a
bulk decision id works), and every bad column answered 422 naming ``columns.<field>`` and the row."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from placement.serve import bulk
from tests.test_http_app import AUTH, client  # noqa: F401  (the fixture)

HEADERS = {"content-type": bulk.MEDIA_TYPE}


def _columns(job: dict, n: int = 4) -> dict:
    """``n`` jobs as columns: the example job at batch sizes 1, 2, 4, ..."""
    cols = {k: [v] * n for k, v in job.items() if v is not None and k not in ("operators", "signature")}
    cols["batch_size"] = [2**i for i in range(n)]
    cols["flops_per_batch"] = [job["flops_per_batch"] * 2**i for i in range(n)]
    return cols


def _post(c, body: bytes):
    return c.post("/v1/placements", content=body, headers=HEADERS)


@pytest.mark.parametrize("target", ["B", "agx-orin"])
def test_bulk_answers_equal_the_json_columns_answers(client, example_job, target):  # noqa: F811
    cols = _columns(example_job.model_dump())
    as_json = client.post("/v1/placements", json={"columns": cols, "target": target, "explore": False})
    assert as_json.status_code == 200, as_json.text
    js = as_json.json()
    r = _post(client, bulk.encode_request(cols, target=target, explore=False))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == bulk.MEDIA_TYPE
    head, table = bulk.decode_response(r.content)
    assert head["target_id"] == js["target_id"] and head["policy_version"] == js["policy_version"]
    assert head["thresholds"] == js["thresholds"]
    out = table.to_pydict()
    jc = js["columns"]
    assert out["device"] == jc["device"] and out["cpu_cores"] == jc["cpu_cores"]
    assert out["decided_by"] == jc["decided_by"] and out["estimate_source"] == jc["estimate_source"]
    assert out["gpu_probability"] == pytest.approx(jc["gpu_probability"])
    assert out["predicted_speedup"] == pytest.approx(jc["predicted_speedup"])
    assert out["gpu_feasible"] == jc["gpu_feasible"]
    # the cap: MiB, null for grow
    assert out["gpu_mem_cap_mib"] == [None if c == "grow" else c for c in jc["gpu_mem_cap"]]
    assert len(set(out["decision_id"])) == len(cols["batch_size"])


def test_bulk_decisions_are_recorded_and_take_feedback(client, example_job, serve_world):  # noqa: F811
    from placement.core.catalogue import get_target

    cols = _columns(example_job.model_dump(), n=2)
    before = client.get("/v1/policy", headers=AUTH).json()["decisions"]["total"]
    _, table = bulk.decode_response(_post(client, bulk.encode_request(cols, target="B")).content)
    assert client.get("/v1/policy", headers=AUTH).json()["decisions"]["total"] == before + 2
    job = example_job.model_copy(update={"batch_size": 1, "flops_per_batch": example_job.flops_per_batch})
    decision_id, device = table["decision_id"][0].as_py(), table["device"][0].as_py()
    body = {"decision_id": decision_id, "outcome": serve_world.outcome(job, get_target("B"), device)}
    r = client.post("/v1/feedback", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "recorded", r.text


def test_bulk_columns_may_be_numpy_typed_and_chunked(client, example_job):  # noqa: F811
    cols = _columns(example_job.model_dump(), n=6)
    table = pa.table({k: pa.array(np.asarray(v, dtype=np.int32) if k in ("batch_size", "param_count") else v)
                      for k, v in cols.items()})
    table = pa.concat_tables([table.slice(0, 3), table.slice(3)])  # two record batches
    table = table.replace_schema_metadata({bulk.REQUEST_KEY: json.dumps({"target": "B"}).encode()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        for b in table.to_batches():
            w.write_batch(b)
    r = _post(client, sink.getvalue().to_pybytes())
    assert r.status_code == 200, r.text
    assert bulk.decode_response(r.content)[1].num_rows == 6
    # optional columns of nulls only (pyarrow types them 'null'): unknown, as if left out
    nulls = bulk.encode_request({**cols, "dataset_size": [None] * 6, "signature": [None] * 6}, target="B")
    assert _post(client, nulls).status_code == 200


def _bad_cases(job: dict) -> list[tuple[bytes, int, str]]:
    cols = _columns(job)
    cases: list[tuple[bytes, int, str]] = []

    def with_(name: str, values: list, **head) -> bytes:
        return bulk.encode_request({**cols, name: values}, **{"target": "B", **head})

    cases.append((with_("batch_size", [1, 0, 2, 3]), 422, "columns.batch_size"))  # below ge=1
    cases.append((with_("batch_size", [1.0, 2.5, 2.0, 3.0]), 422, "columns.batch_size"))  # not whole
    cases.append((with_("batch_size", ["1", "2", "3", "4"]), 422, "columns.batch_size"))  # strings
    cases.append((with_("batch_size", [True, False, True, True]), 422, "columns.batch_size"))  # booleans
    cases.append((with_("batch_size", [1, None, 2, 3]), 422, "columns.batch_size"))  # null in a required field
    cases.append((with_("flops_per_batch", [1.0, float("nan"), 1.0, 1.0]), 422, "columns.flops_per_batch"))
    cases.append((with_("flops_per_batch", [1.0, float("inf"), 1.0, 1.0]), 422, "columns.flops_per_batch"))
    cases.append((with_("param_count", [1, -1, 1, 1]), 422, "columns.param_count"))
    cases.append((with_("family", ["cnn", "bogus", "cnn", "cnn"]), 422, "columns.family"))
    cases.append((with_("mode", ["train", None, "infer", "infer"]), 422, "columns.mode"))
    cases.append((with_("name", ["a", "", "b", "c"]), 422, "columns.name"))
    cases.append((with_("signature", ["0123456789abcdef", "XYZ", None, None]), 422, "columns.signature"))
    cases.append((with_("operators", ["x"] * 4), 422, "columns.operators"))
    cases.append((with_("dataset_size", [10, 0, None, 5]), 422, "columns.dataset_size"))
    cases.append((bulk.encode_request({k: v for k, v in cols.items() if k != "mode"}, target="B"), 422, "columns.mode"))
    cases.append((with_("batch_size", cols["batch_size"], thresholds={"speedup_min": 0}), 422, "thresholds.speedup_min"))
    cases.append((with_("batch_size", cols["batch_size"], colour="red"), 422, "colour"))
    cases.append((with_("batch_size", cols["batch_size"], target="nowhere"), 422, "target"))
    cases.append((b"not arrow at all", 422, "body"))
    many = {k: v * 6000 for k, v in cols.items()}  # 24 000 jobs > max_batch_jobs (20 000)
    cases.append((bulk.encode_request(many, target="B"), 413, "columns"))
    return cases


def test_bad_bulk_requests_are_4xx_naming_the_field(client, example_job):  # noqa: F811
    for body, status, field in _bad_cases(example_job.model_dump()):
        r = _post(client, body)
        assert r.status_code == status, (field, r.text[:300])
        assert [x["field"] for x in r.json()["detail"]] == [field], r.text
    ok = client.post("/v1/placements", json={"columns": _columns(example_job.model_dump()), "target": "B"})
    assert ok.status_code == 200  # nothing above broke the service


def test_the_bulk_format_is_for_placements_only(client, example_job):  # noqa: F811
    body = bulk.encode_request(_columns(example_job.model_dump()), target="B")
    r = client.post("/v1/feedback", content=body, headers={**HEADERS, **AUTH})
    assert r.status_code == 415 and r.json()["detail"][0]["field"] == "Content-Type"


def test_the_python_client_places_in_the_bulk_format(client, example_job):  # noqa: F811
    from placement.serve.client import PlacementApiError, PlacementClient

    cols = _columns(example_job.model_dump())
    api = PlacementClient("http://testserver")
    api._http = client  # the in-process app behind the client's own HTTP calls
    head, table = api.place_bulk({k: np.asarray(v) for k, v in cols.items()}, "B", explore=False)
    assert head["target_id"] == "B" and table.num_rows == 4
    assert set(table["device"].to_pylist()) <= {"cpu", "gpu"}
    with pytest.raises(PlacementApiError) as err:
        api.place_bulk({**cols, "batch_size": [0] * 4}, "B")
    assert err.value.status == 422 and err.value.detail[0]["field"] == "columns.batch_size"
