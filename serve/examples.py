"""Example request bodies for the OpenAPI document (``/docs``, ``/redoc``): one or more per request record.

Each example is a complete, valid body (``tests/test_docs.py`` validates every one against its
record); the jobs are ResNet-18-sized (7e11 FLOPs per batch of 64 images of 224x224x3).
"""

from __future__ import annotations

from typing import Any

_JOB: dict[str, Any] = {
    "name": "resnet18_train_b64", "family": "cnn", "mode": "train", "batch_size": 64,
    "flops_per_batch": 7.0e11, "param_count": 11_230_000, "input_elems_per_sample": 150_528,
    "input_bytes_per_sample": 602_112,
}
_SMALL_MLP: dict[str, Any] = {
    "name": "tabular_mlp_infer_b32", "family": "mlp", "mode": "infer", "batch_size": 32,
    "flops_per_batch": 2.1e6, "param_count": 33_000, "input_elems_per_sample": 64, "input_bytes_per_sample": 256,
}
_DECISION_ID = "3f2b9c1e8a7d4e6f9b0c1d2e3f4a5b6c-0"

REQUEST_EXAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "PlacementRequest": {
        "one_job": {"summary": "One job on a catalogue target (Jetson AGX Orin)",
                    "value": {"job": _JOB, "target": "agx-orin"}},
        "batch": {"summary": "A batch of jobs on this host, with stricter thresholds",
                  "value": {"jobs": [_JOB, _SMALL_MLP], "target": "local",
                            "thresholds": {"speedup_min": 3.0, "energy_ratio_max": 1.2}, "explore": False}},
        "columns": {"summary": "Jobs as columns (the fast bulk format)",
                    "value": {"columns": {k: [_JOB[k], _SMALL_MLP[k]] for k in _JOB}, "target": "B"}},
        "hardware": {"summary": "A target described in full (not in the catalogue)",
                     "value": {"job": _JOB, "max_slowdown": 1.5, "target": {
                         "id": "my-workstation", "kind": "desktop", "cpu_model": "AMD Ryzen 9 7950X", "cpu_cores": 16,
                         "cpu_gflops": 1800.0, "cpu_tdp_w": 170.0, "ram_gib": 64.0, "gpu_model": "NVIDIA RTX 4090",
                         "gpu_gflops": 82600.0, "gpu_mem_gib": 24.0, "gpu_tdp_w": 450.0, "gpu_mem_bw_gbs": 1008.0,
                         "host_link_gbs": 32.0}}},
    },
    "FeedbackRequest": {
        "measured_energy": {"summary": "The chosen device's run, energy measured by a counter (J, eq. 2)",
                            "value": {"decision_id": _DECISION_ID, "outcome": {
                                "device": "gpu", "n_samples": 50_000, "time_total_s": 41.7, "energy_j": 9_380.0,
                                "energy_method": "measured"}}},
        "powers_and_other_device": {"summary": "Average powers, and the other device's run measured too",
                                    "value": {"decision_id": _DECISION_ID, "outcome": {
                                        "device": "gpu", "n_samples": 50_000, "time_total_s": 41.7,
                                        "avg_cpu_power_w": 65.0, "cpu_power_method": "modelled",
                                        "avg_gpu_power_w": 160.0, "gpu_power_method": "measured"},
                                        "other_outcome": {"device": "cpu", "n_samples": 50_000, "time_total_s": 512.0,
                                                          "avg_cpu_power_w": 95.0, "cpu_power_method": "measured"}}},
        "failed_run": {"summary": "The run did not fit in GPU memory",
                       "value": {"decision_id": _DECISION_ID, "outcome": {
                           "device": "gpu", "feasible": False, "infeasible_reason": "oom"}}},
    },
    "RollbackRequest": {
        "previous": {"summary": "Serve the version promoted before the current one", "value": {}},
        "named": {"summary": "Serve a named version (GET /v1/policy lists them)",
                  "value": {"version": "0.1.0+gd6c0c29d7d27-dbd748208a"}},
    },
}
