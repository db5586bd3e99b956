"""Knob recommender: fewest cores within a tolerance, fastest GPU cap without OOM risk."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from placement.core.catalogue import get_target
from placement.model.recommend import (
    peak_memory_from_journal,
    recommend_cores,
    recommend_for_target,
    recommend_from_trace,
    recommend_gpu_cap,
    recommendations_frame,
)

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "data/traces/h200_measured.parquet"


def test_fewest_cores_within_tolerance():
    times = {1: 10.0, 2: 5.4, 4: 3.1, 8: 3.0, 16: 3.05}
    assert recommend_cores(times) == 4  # 3.1 <= 3.0 * 1.05
    assert recommend_cores(times, tolerance=0.0) == 8
    assert recommend_cores(times, tolerance=0.9) == 2
    assert recommend_cores({1: 2.0, 2: float("nan"), 4: 3.0}) == 1  # missing times are ignored
    assert recommend_cores({6: 1.0}) == 6


@pytest.mark.parametrize("times,tol,match", [({}, 0.05, "at least one"), ({1: math.nan}, 0.05, "at least one"),
                                             ({0: 1.0}, 0.05, "core counts"), ({1: -1.0}, 0.05, "> 0"),
                                             ({1: 1.0}, 1.5, "tolerance"), ({1: 1.0}, -0.1, "tolerance")])
def test_recommend_cores_errors(times, tol, match):
    with pytest.raises(ValueError, match=match):
        recommend_cores(times, tol)


def test_cap_prefers_the_smallest_safe_explicit_cap_within_tolerance():
    times = {"grow": 1.00, 2048: 1.01, 512: 1.02, 128: None}
    feasible = {"grow": True, 2048: True, 512: True, 128: False}
    assert recommend_gpu_cap(times, feasible, peak_mib=300) == 512  # 512 >= 300 x 1.25
    assert recommend_gpu_cap(times, feasible, peak_mib=450) == 2048  # 512 < 450 x 1.25: at risk
    assert recommend_gpu_cap(times, feasible, peak_mib=450, prefer_explicit=False) == "grow"
    # peak unknown: 512 is the smallest cap above an OOM, so it is at risk
    assert recommend_gpu_cap(times, feasible) == 2048


def test_cap_speed_and_fallbacks():
    assert recommend_gpu_cap({"grow": 1.0, 1024: 2.0}) == "grow"  # the cap is much slower
    assert recommend_gpu_cap({"grow": 1.0, 1024: None}, {"grow": True, 1024: False}) == "grow"
    assert recommend_gpu_cap({256: 1.0}, peak_mib=1000) == 256  # only candidate, even at risk
    with pytest.raises(ValueError, match="no feasible cap"):
        recommend_gpu_cap({"grow": None, 64: None}, {"grow": False, 64: False})
    with pytest.raises(ValueError, match="caps must be"):
        recommend_gpu_cap({0: 1.0})
    with pytest.raises(ValueError, match="headroom"):
        recommend_gpu_cap({64: 1.0}, headroom=-1)


def _frame() -> pd.DataFrame:
    rows = []
    for cores, t in ((1, 8.0), (2, 4.2), (4, 2.05), (8, 2.0)):
        rows.append({"job_id": "j", "target_id": "host", "device": "cpu", "cpu_cores": cores, "gpu_mem_cap_mib": None,
                     "feasible": True, "time_per_batch_s": t})
    for cap, t, ok in ((None, 0.50, True), (4096, 0.50, True), (1024, 0.51, True), (256, None, False)):
        rows.append({"job_id": "j", "target_id": "host", "device": "gpu", "cpu_cores": 8, "gpu_mem_cap_mib": cap,
                     "feasible": ok, "time_per_batch_s": t})
    return pd.DataFrame(rows).astype({"gpu_mem_cap_mib": "Int64", "time_per_batch_s": "Float64"})


def test_recommend_from_a_table_and_for_a_smaller_target():
    (rec,) = recommend_from_trace(_frame(), peaks_mib={"j": 600.0})
    assert rec.cpu_cores == 4 and rec.best_cpu_cores == 8 and rec.cpu_time_s == 2.05
    assert rec.gpu_mem_cap == 1024 and rec.gpu_time_s == 0.51 and rec.source == "measured"
    assert rec.cores_measured == (1, 2, 4, 8) and rec.caps_measured == ("256", "1024", "4096", "grow")
    nano = get_target("jetson-nano").model_copy(update={"gpu_mem_gib": 2.0})  # 4 cores; 2 GiB for the test
    (edge,) = recommend_for_target(_frame(), nano, peaks_mib={"j": 600.0})
    assert edge.target_id == "jetson-nano" and edge.cpu_cores == 4 and edge.gpu_mem_cap == 1024
    assert "4096" not in edge.caps_measured and "measured on host" in edge.source
    (two,) = recommend_from_trace(_frame(), max_cores=2)
    assert two.cpu_cores == 2


@pytest.mark.skipif(not MEASURED.exists(), reason="measured trace not present")
def test_recommendations_on_the_measured_trace():
    from placement.core.trace import read_trace

    frame = read_trace(MEASURED).frame
    peaks = peak_memory_from_journal(Path(str(MEASURED) + ".journal.jsonl"))
    assert peaks["mlp_cifar10-train-b256"] > 0
    recs = recommendations_frame(recommend_from_trace(frame, peaks_mib=peaks))
    assert len(recs) == frame["job_id"].nunique()
    cores = recs["cpu_cores"].dropna()
    assert cores.isin([1, 2, 4, 8, 16]).all()
    for r in recs.itertuples():  # never a cap that ran out of memory
        if r.gpu_mem_cap not in (None, "grow"):
            rows = frame[(frame["job_id"] == r.job_id) & (frame["gpu_mem_cap_mib"] == r.gpu_mem_cap)]
            assert rows["feasible"].all()


@pytest.mark.slow
@pytest.mark.skipif(not MEASURED.exists(), reason="measured trace not present")
def test_edge_study_script_runs(tmp_path, monkeypatch):
    import json
    import runpy
    import sys

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["edge_study.py", "--smoke", "--no-ray", "--out", str(tmp_path)])
    runpy.run_path(str(ROOT / "experiments/edge_study.py"), run_name="__main__")
    assert (tmp_path / "section.md").read_text().startswith("## Study")
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert {"seed", "thresholds", "trace_hashes", "code_version", "hardware"} <= set(prov)
    assert (tmp_path / "edge_cores.png").exists() and (tmp_path / "edge_gpu_cap.png").exists()
    rec = pd.read_csv(tmp_path / "edge_recommend.csv")
    assert {"h200-host", "jetson-nano", "orin-nano", "agx-orin"} <= set(rec["target_id"])
    assert (rec.loc[rec["target_id"] == "jetson-nano", "cpu_cores"].dropna() <= 4).all()
