"""The performance model's limits (paper A and B behaviour), API contract and input errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from placement.core.catalogue import default_catalogue, get_target
from placement.core.job import Job
from placement.core.threshold import joint_threshold
from placement.model.perfmodel import (
    FamilyParams,
    PerformanceModel,
    PerfParams,
    Prediction,
    model_columns,
    recommend_knobs,
)

GPU_TARGETS = [t for t in default_catalogue().values() if t.has_gpu]
EDGE_TARGETS = [t for t in default_catalogue().values() if t.is_edge]


@pytest.fixture(scope="module", params=["defaults", "bundled"])
def model(request) -> PerformanceModel:
    """Both the code defaults and the bundled (calibrated, when shipped) parameters."""
    return PerformanceModel(PerfParams()) if request.param == "defaults" else PerformanceModel()


def tiny_mlp() -> Job:
    return Job(name="mlp_tiny", family="mlp", mode="infer", batch_size=1, flops_per_batch=2 * (784 * 128 + 128 * 10),
               param_count=784 * 128 + 1290, input_elems_per_sample=784, input_bytes_per_sample=784 * 4)


def resnet18_train(batch: int = 64) -> Job:
    return Job(name="resnet18_imagenet100", family="cnn", mode="train", batch_size=batch,
               flops_per_batch=10_645_647_360.0 * batch + 4 * 11_227_812, param_count=11_227_812,
               input_elems_per_sample=150528, input_bytes_per_sample=602112)


def transformer_train(batch: int = 64) -> Job:
    return Job(name="transformer_imdb", family="transformer", mode="train", batch_size=batch,
               flops_per_batch=352_323_072.0 * 4 * batch, param_count=4 * 2_973_186,
               input_elems_per_sample=512, input_bytes_per_sample=4096)


def rnn_infer(name: str, batch: int = 64) -> Job:
    return Job(name=name, family="rnn", mode="infer", batch_size=batch, flops_per_batch=25_166_336.0 * batch,
               param_count=1_379_586, input_elems_per_sample=128, input_bytes_per_sample=1024)


def label(model: PerformanceModel, job: Job, target) -> tuple[bool, float, float]:
    cpu = model.predict(job, target, "cpu")
    gpu = model.predict(job, target, "gpu")
    lab = joint_threshold(cpu.time_per_sample_s, gpu.time_per_sample_s, cpu.energy_per_sample_j,
                          gpu.energy_per_sample_j, cpu.feasible, gpu.feasible)
    return bool(lab.gpu), float(lab.speedup), float(lab.energy_ratio)


@pytest.mark.parametrize("target", GPU_TARGETS, ids=lambda t: t.id)
def test_tiny_jobs_favour_cpu(model, target):
    gpu, speedup, _ = label(model, tiny_mlp(), target)
    assert not gpu, f"tiny MLP on {target.id}: speedup {speedup:.2f} should stay below 2"
    assert speedup < 2.0


@pytest.mark.parametrize("target", GPU_TARGETS, ids=lambda t: t.id)
@pytest.mark.parametrize("make_job", [resnet18_train, transformer_train], ids=["resnet18", "transformer"])
def test_large_conv_and_transformer_jobs_favour_gpu(model, target, make_job):
    job = make_job(16 if target.id == "jetson-nano" else 64)
    gpu, speedup, ratio = label(model, job, target)
    assert gpu, f"{job.name} on {target.id}: speedup {speedup:.2f}, energy ratio {ratio:.2f}"
    assert speedup >= 2.0 and ratio <= 1.5


@pytest.mark.parametrize("target", EDGE_TARGETS, ids=lambda t: t.id)
def test_lstm_core_scaling_is_flat_and_gru_is_not_on_edge(model, target):
    """Paper B (TensorFlow on the Jetsons): an LSTM gains nothing from more cores, a GRU does."""
    def times(name):
        return [model.predict(rnn_infer(name), target, "cpu", cpu_cores=c).time_per_batch_s for c in range(1, target.cpu_cores + 1)]

    lstm, gru = times("lstm_imdb"), times("gru_imdb")
    assert lstm[0] / min(lstm) < 1.05, f"LSTM should gain < 5% from cores on {target.id}: {lstm}"
    assert gru[0] / min(gru) > 1.3, f"GRU should gain from cores on {target.id}: {gru}"
    assert recommend_knobs(model, rnn_infer("lstm_imdb"), target, "cpu")[0] == 1


def test_compute_bound_cpu_time_falls_with_cores_amdahl(model):
    target = get_target("agx-orin")
    job = resnet18_train(8).model_copy(update={"name": "cnn_job"})  # no architecture override
    t = [model.predict(job, target, "cpu", cpu_cores=c).time_per_batch_s for c in range(1, 13)]
    assert all(b <= a * 1.0001 for a, b in zip(t, t[1:], strict=False))
    assert 2.0 < t[0] / t[-1] <= 12.0, "real gains, never superlinear"
    # with no coherency term and no memory traffic the gain is exactly Amdahl's
    pure = PerformanceModel(model.params.with_values({"cpu_coherency": 0.0, "families.cnn.act_bytes_per_flop": 0.0,
                                                      "cpu_op_overhead_s": 0.0, "cpu_thread_sync_s": 0.0, "batch_overhead_s": 0.0,
                                                      "train_step_overhead_s": 0.0, "host_prep_gbs_per_core": 1e6}))
    lean = job.model_copy(update={"param_count": 0})
    t1, t12 = (pure.predict(lean, target, "cpu", cpu_cores=c).time_per_batch_s for c in (1, 12))
    par = model.params.families["cnn"].parallel_frac
    assert t1 / t12 == pytest.approx(1.0 / ((1 - par) + par / 12), rel=1e-3)


@pytest.mark.parametrize("target", [t for t in GPU_TARGETS if t.id in ("jetson-nano", "A", "h100-host")], ids=lambda t: t.id)
def test_oom_below_the_working_set_and_feasible_above(model, target):
    job = resnet18_train(16)
    ws = model.predict_columns(model_columns(job, target), "gpu", np.nan, np.nan).working_set_mib[0]
    below = model.predict(job, target, "gpu", gpu_mem_cap_mib=max(1, int(ws * 0.9)))
    above = model.predict(job, target, "gpu", gpu_mem_cap_mib=int(ws * 1.1) + 1)
    assert (below.feasible, below.infeasible_reason) == (False, "oom")
    assert above.feasible


def test_job_larger_than_the_gpu_is_oom_even_when_growing(model):
    nano = get_target("jetson-nano")
    huge = Job(name="big", family="transformer", mode="train", batch_size=64, flops_per_batch=1e14,
               param_count=1_000_000_000, input_elems_per_sample=512, input_bytes_per_sample=4096)
    out = model.predict(huge, nano, "gpu")
    assert (out.feasible, out.infeasible_reason) == (False, "oom")
    assert out.time_total_s is None


def test_over_allocating_gpu_memory_slows_slightly_and_grow_is_fastest(model):
    target = get_target("orin-nano")
    job = resnet18_train(4).model_copy(update={"mode": "infer", "flops_per_batch": 3_627_225_088.0 * 4})
    ws = model.predict_columns(model_columns(job, target), "gpu", np.nan, np.nan).working_set_mib[0]
    grow = model.predict(job, target, "gpu").time_per_batch_s
    tight = model.predict(job, target, "gpu", gpu_mem_cap_mib=int(ws * 1.3)).time_per_batch_s
    loose = model.predict(job, target, "gpu", gpu_mem_cap_mib=int(target.gpu_mem_mib * 0.9)).time_per_batch_s
    assert grow <= tight < loose
    assert loose / grow < 1.25, "over-allocation costs a little, not a lot (paper B)"


def test_no_gpu_target_and_cpu_rows_have_no_gpu_power(model):
    cpu_only = get_target("A").model_copy(update={"gpu_model": None, "gpu_gflops": 0.0, "gpu_mem_gib": 0.0, "id": "cpu-only"})
    out = model.predict(tiny_mlp(), cpu_only, "gpu")
    assert (out.feasible, out.infeasible_reason) == (False, "no_gpu")
    cpu = model.predict(tiny_mlp(), cpu_only, "cpu")
    assert cpu.avg_gpu_power_w is None and cpu.gpu_power_method == "unknown"


def test_unified_memory_has_no_transfer_cost(model):
    orin = get_target("agx-orin")
    discrete = orin.model_copy(update={"unified_memory": False, "host_link_gbs": 16.0, "id": "agx-discrete"})
    job = Job(name="big_input", family="cnn", mode="infer", batch_size=256, flops_per_batch=1e6,
              param_count=1000, input_elems_per_sample=150528, input_bytes_per_sample=602112)
    t_unified = model.predict(job, orin, "gpu").time_per_batch_s
    t_discrete = model.predict(job, discrete, "gpu").time_per_batch_s
    expected_xfer = 256 * 602112 / (16e9 * model.params.link_eff)
    assert t_discrete - t_unified == pytest.approx(expected_xfer + model.params.transfer_latency_s, rel=1e-6)


@pytest.mark.parametrize("target", GPU_TARGETS, ids=lambda t: t.id)
def test_powers_are_modelled_and_within_idle_and_tdp(model, target):
    for device in ("cpu", "gpu"):
        out = model.predict(resnet18_train(8), target, device)
        if not out.feasible:
            continue
        assert target.cpu_idle_w - 1e-9 <= out.avg_cpu_power_w <= target.cpu_tdp_w + 1e-9
        assert out.cpu_power_method == "modelled"
        if device == "gpu":
            assert target.gpu_idle_w - 1e-9 <= out.avg_gpu_power_w <= target.gpu_tdp_w + 1e-9
            assert out.gpu_power_method == "modelled" and out.energy_method == "modelled"
            assert out.energy_j == pytest.approx((out.avg_cpu_power_w + out.avg_gpu_power_w) * out.time_total_s)


def test_stronger_gpu_on_the_same_host_is_never_slower_and_wins_more_jobs():
    from placement.model.simulate import generate_jobs

    model = PerformanceModel(PerfParams())
    jobs = generate_jobs(300, np.random.default_rng(3))
    shares = {}
    for tid in ("C", "D"):  # same Ryzen 9 7950X host; RTX 4070 Ti vs RTX 4090
        target = get_target(tid)
        cols = {**{k: jobs[k].to_numpy() for k in jobs.columns}, **{k: [v[0]] * len(jobs) for k, v in
                model_columns(Job(name="x", family="mlp", mode="infer", batch_size=1, flops_per_batch=1, param_count=1,
                                  input_elems_per_sample=1, input_bytes_per_sample=1), target).items() if k.startswith("hw_")}}
        cpu = model.predict_columns(cols, "cpu", np.nan, np.nan)
        gpu = model.predict_columns(cols, "gpu", np.nan, np.nan)
        lab = joint_threshold(cpu.time_per_batch_s, gpu.time_per_batch_s, cpu.energy_per_batch_j, gpu.energy_per_batch_j,
                              cpu.feasible, gpu.feasible)
        shares[tid] = (lab.gpu.mean(), gpu.time_per_batch_s)
    assert shares["D"][0] >= shares["C"][0]
    both = np.isfinite(shares["C"][1]) & np.isfinite(shares["D"][1])
    assert np.all(shares["D"][1][both] <= shares["C"][1][both] * (1 + 1e-9))
    assert 0.2 < shares["C"][0] < 0.9, "the label must not be trivial"


def test_recommend_knobs_on_edge(model):
    nano = get_target("orin-nano")
    cores, cap = recommend_knobs(model, resnet18_train(8), nano, "gpu")
    ws = model.predict_columns(model_columns(resnet18_train(8), nano), "gpu", np.nan, np.nan).working_set_mib[0]
    assert 1 <= cores <= nano.cpu_cores
    assert isinstance(cap, int) and ws < cap <= nano.gpu_mem_mib
    assert model.predict(resnet18_train(8), nano, "gpu", gpu_mem_cap_mib=cap).feasible
    # fewest cores within tolerance of the best
    times = [model.predict(resnet18_train(8), nano, "gpu", cpu_cores=c).time_per_batch_s for c in range(1, nano.cpu_cores + 1)]
    assert times[cores - 1] <= min(times) * 1.05
    assert all(t > min(times) * 1.05 for t in times[: cores - 1])
    assert recommend_knobs(model, tiny_mlp(), nano, "cpu")[1] == "grow"
    assert recommend_knobs(model, tiny_mlp(), nano, 1)[1] != "grow"  # 1 = GPU, as Policy.knobs passes it


def test_predict_matches_predict_columns_and_accepts_a_dataframe(model):
    target = get_target("B")
    job = resnet18_train(32)
    one = model.predict(job, target, "gpu", cpu_cores=4, gpu_mem_cap_mib=8192)
    frame = pd.DataFrame(model_columns(job, target))
    pred = model.predict_columns(frame, ["gpu"], [4], [8192.0])
    assert isinstance(pred, Prediction)
    assert pred.time_per_batch_s[0] == pytest.approx(one.time_per_batch_s)
    assert pred.avg_gpu_power_w[0] == pytest.approx(one.avg_gpu_power_w)
    assert one.n_samples == job.batch_size and one.time_total_s == one.time_per_batch_s


def test_noise_is_seeded_and_centred():
    model = PerformanceModel(PerfParams())
    target = get_target("h100-host")
    cols = {k: v * 4000 for k, v in model_columns(resnet18_train(64), target).items()}
    clean = model.predict_columns(cols, "gpu", np.nan, np.nan).time_per_batch_s
    a = model.predict_columns(cols, "gpu", np.nan, np.nan, np.random.default_rng(7)).time_per_batch_s
    b = model.predict_columns(cols, "gpu", np.nan, np.nan, np.random.default_rng(7)).time_per_batch_s
    np.testing.assert_array_equal(a, b)
    log_ratio = np.log(a / clean)
    assert abs(np.median(log_ratio)) < 0.01
    assert 0.5 * model.params.noise_time_sigma < log_ratio.std() < model.params.noise_time_sigma + model.params.noise_overhead_sigma


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"device": "tpu"}, "device"),
        ({"device": "cpu", "cpu_cores": 99}, "cpu_cores"),
        ({"device": "gpu", "gpu_mem_cap_mib": 10**9}, "gpu_mem_cap_mib"),
        ({"device": "gpu", "gpu_mem_cap_mib": 0}, "gpu_mem_cap_mib"),
    ],
)
def test_bad_knobs_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PerformanceModel(PerfParams()).predict(tiny_mlp(), get_target("A"), **kwargs)


def test_bad_columns_raise_naming_the_column():
    model = PerformanceModel(PerfParams())
    cols = model_columns(tiny_mlp(), get_target("A"))
    with pytest.raises(ValueError, match="family"):
        model.predict_columns({**cols, "family": ["quantum"]}, "cpu", np.nan, np.nan)
    with pytest.raises(ValueError, match="flops_per_batch"):
        model.predict_columns({**cols, "flops_per_batch": [math.nan]}, "cpu", np.nan, np.nan)
    with pytest.raises(KeyError, match="hw_gpu_gflops"):
        model.predict_columns({k: v for k, v in cols.items() if k != "hw_gpu_gflops"}, "cpu", np.nan, np.nan)
    with pytest.raises(ValueError, match="rows"):
        model.predict_columns(cols, ["cpu", "gpu"], np.nan, np.nan)


def test_params_round_trip_and_reject_typos():
    p = PerfParams().with_values({"families.cnn.gpu_eff": 0.7, "gpu_launch_overhead_s": 2e-5,
                                  "model_overrides.lstm.parallel_frac": 0.1})
    assert p.get("families.cnn.gpu_eff") == 0.7 and p.families["rnn"] == PerfParams().families["rnn"]
    assert PerfParams.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="gpu_lanch"):
        PerfParams.from_dict({"gpu_lanch_overhead_s": 1.0})
    with pytest.raises(ValueError, match="parallel_frac"):
        FamilyParams(cpu_eff=0.3, gpu_eff=0.3, parallel_frac=1.5, kernels_per_pass=1, act_bytes_per_flop=0.0)
    with pytest.raises(KeyError):
        p.get("families.cnn.nope")
    with pytest.raises(KeyError):
        p.with_values({"model_overrides.lstm.nope": 1.0})
    assert p.get("model_overrides.lstm.parallel_frac") == 0.1


def test_architecture_overrides_apply_by_name_and_edge_ones_only_on_edge():
    p = PerfParams(model_overrides={"resnet18": {"cpu_eff": 0.05}}, edge_model_overrides={"resnet18": {"cpu_eff": 0.01}})
    model = PerformanceModel(p)
    other = resnet18_train(8).model_copy(update={"name": "vgg_imagenet100"})
    server, edge = get_target("h100-host"), get_target("agx-orin")
    base = PerformanceModel(PerfParams(edge_model_overrides={}))
    assert model.predict(other, server, "cpu").time_per_batch_s == pytest.approx(base.predict(other, server, "cpu").time_per_batch_s)
    slow = model.predict(resnet18_train(8), server, "cpu").time_per_batch_s
    assert slow > 3 * base.predict(resnet18_train(8), server, "cpu").time_per_batch_s
    assert model.predict(resnet18_train(8), edge, "cpu").time_per_batch_s > 3 * PerformanceModel(
        PerfParams(model_overrides={"resnet18": {"cpu_eff": 0.05}}, edge_model_overrides={})
    ).predict(resnet18_train(8), edge, "cpu").time_per_batch_s
