from pathlib import Path

import pytest

from placement.core.threshold import MissingPower, Thresholds
from placement.core.trace import pair_outcomes, read_trace

PAPER = Path(__file__).resolve().parent.parent / "data" / "traces" / "paper_table2.csv"


@pytest.fixture(scope="module")
def paper():
    return read_trace(PAPER)


def labels(trace, th=None):
    pairs = pair_outcomes(trace.frame, th)
    return {r.job_id: r for r in pairs.itertuples()}


def test_paper_table2_labels(paper):
    got = labels(paper)
    assert got["bert_imdb"].label_gpu and got["bert_imdb"].speedup == pytest.approx(42.56, rel=1e-3)
    assert got["bert_imdb"].energy_ratio == pytest.approx(0.0754, rel=1e-2)
    assert not got["mobilenet_imagenet100"].label_gpu
    assert got["mobilenet_imagenet100"].reason == "too_slow"
    assert got["resnet18_imagenet100"].label_gpu
    assert got["resnet18_imagenet100"].energy_ratio == pytest.approx(0.178, rel=1e-2)
    assert got["TimeSformer_k400"].label_gpu and got["TimeSformer_k400"].reason == "cpu_infeasible"
    # declared missing-power policy: speed_only -> GPU (35x faster), flagged energy_unknown
    assert got["xgb_iris"].label_gpu and got["xgb_iris"].energy_unknown
    assert got["xgb_iris"].speedup == pytest.approx(35.0)


def test_paper_xgb_under_conservative_policy(paper):
    got = labels(paper, Thresholds(missing_power=MissingPower.CPU))
    assert not got["xgb_iris"].label_gpu and got["xgb_iris"].reason == "no_energy_evidence"


def test_paper_trace_carries_provenance(paper):
    assert paper.meta.source == "paper"
    assert len(paper.sha256) == 64
    assert set(paper.frame["cpu_power_method"]) <= {"measured", "unknown"}
