"""Property-based tests (hypothesis) for the feature, threshold and trace code."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placement.core.catalogue import default_catalogue
from placement.core.job import FAMILIES, Job
from placement.core.paper import paper_table2_frame
from placement.core.threshold import Thresholds, joint_threshold, placement_reward
from placement.core.trace import COLUMN_NAMES, TraceValidationError, validate
from placement.model.features import N_FEATURES, build_features

positive = st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False)
TARGETS = list(default_catalogue().values())


@st.composite
def jobs(draw) -> Job:
    batch = draw(st.integers(1, 1_000_000))
    elems = draw(st.integers(1, 10**9))
    return Job(
        family=draw(st.sampled_from(FAMILIES)),
        mode=draw(st.sampled_from(["train", "infer"])),
        batch_size=batch,
        flops_per_batch=draw(st.floats(0, 1e21, allow_nan=False)),
        param_count=draw(st.integers(0, 10**12)),
        input_elems_per_sample=elems,
        input_bytes_per_sample=draw(st.integers(1, 10**10)),
    )


@given(job=jobs(), target=st.sampled_from(TARGETS), cores=st.integers(1, 64))
@settings(max_examples=200, deadline=None)
def test_features_always_finite(job, target, cores):
    x = build_features(job, target, cpu_cores=min(cores, target.cpu_cores))
    assert x.shape == (N_FEATURES,) and np.all(np.isfinite(x))


@given(t_cpu=positive, t_gpu=positive, e_cpu=positive, e_gpu=positive,
       tt=st.floats(0.5, 10), te=st.floats(0.1, 10))
@settings(max_examples=300, deadline=None)
def test_label_is_the_joint_rule_and_margin_agrees(t_cpu, t_gpu, e_cpu, e_gpu, tt, te):
    th = Thresholds(tt, te)
    lab = joint_threshold([t_cpu], [t_gpu], [e_cpu], [e_gpu], thresholds=th)
    speedup, ratio = t_cpu / t_gpu, e_gpu / e_cpu
    clear_gpu = speedup >= tt * (1 + 1e-6) and ratio <= te * (1 - 1e-6)
    clear_cpu = speedup < tt * (1 - 1e-6) or ratio > te * (1 + 1e-6)
    if clear_gpu:
        assert lab.gpu[0] and lab.margin[0] > 0
    if clear_cpu:
        assert not lab.gpu[0] and lab.margin[0] < 0
    assert math.isfinite(lab.margin[0])


@given(t_cpu=positive, t_gpu=positive, e_cpu=positive, e_gpu=positive, factor=st.floats(1.0, 100.0))
@settings(max_examples=200, deadline=None)
def test_faster_gpu_never_flips_gpu_to_cpu(t_cpu, t_gpu, e_cpu, e_gpu, factor):
    """Monotone: a GPU that gets faster (same power, so less energy) stays GPU."""
    a = joint_threshold([t_cpu], [t_gpu], [e_cpu], [e_gpu])
    b = joint_threshold([t_cpu], [t_gpu / factor], [e_cpu], [e_gpu / factor])
    assert not (a.gpu[0] and not b.gpu[0])


@given(t_cpu=positive, t_gpu=positive, e_cpu=positive, e_gpu=positive, choice=st.booleans())
@settings(max_examples=200, deadline=None)
def test_oracle_choice_never_earns_less_than_any_choice(t_cpu, t_gpu, e_cpu, e_gpu, choice):
    lab = joint_threshold([t_cpu], [t_gpu], [e_cpu], [e_gpu])
    oracle = placement_reward(lab.gpu, lab)[0]
    assert oracle >= placement_reward([choice], lab)[0] and oracle > 0


RAW = paper_table2_frame()
BASE = validate(RAW)
NUMERIC = [c for c in COLUMN_NAMES if c in RAW.columns and str(BASE[c].dtype) in ("Int64", "Float64")]


@pytest.mark.slow
@given(row=st.integers(0, len(BASE) - 1), column=st.sampled_from(NUMERIC),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                       st.text(max_size=5)))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_trace_validation_accepts_or_names_the_cell(row, column, value):
    """Any single-cell change either validates or is rejected naming that row and column."""
    frame = paper_table2_frame().astype({column: object})
    frame.loc[row, column] = value
    try:
        typed = validate(frame)
    except TraceValidationError as exc:
        # named by column, or by a cross-column rule on the same row
        assert any(c == column or r in (0, row + 1) for r, c, _ in exc.errors), exc.errors
        return
    cell = typed.loc[row, column]
    if not pd.isna(cell):
        assert math.isfinite(float(cell))


@pytest.mark.parametrize("column", ["time_total_s", "batch_size", "avg_cpu_power_w"])
def test_negative_values_always_rejected(column):
    frame = paper_table2_frame()
    frame.loc[0, column] = -1
    with pytest.raises(TraceValidationError, match=f"row 1, column '{column}'"):
        validate(frame)
