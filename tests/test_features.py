import numpy as np
import pytest

from placement.core.catalogue import default_catalogue, get_target
from placement.core.paper import paper_table2_frame
from placement.core.trace import validate
from placement.model.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    N_FEATURES,
    Normaliser,
    build_features,
    feature_matrix,
)


def test_names_unique_and_vector_shape(example_job):
    assert len(set(FEATURE_NAMES)) == N_FEATURES
    x = build_features(example_job, get_target("D"))
    assert x.shape == (N_FEATURES,) and x.dtype == np.float32 and np.all(np.isfinite(x))


def test_single_and_matrix_paths_agree(example_job):
    frame = validate(paper_table2_frame())
    m = feature_matrix({c: frame[c].to_numpy() for c in frame.columns})
    assert m.shape == (len(frame), N_FEATURES) and np.all(np.isfinite(m))


def test_stronger_gpu_raises_estimated_speedup(example_job):
    i = FEATURE_INDEX["log10_est_speedup"]
    weak, strong = build_features(example_job, get_target("A")), build_features(example_job, get_target("D"))
    assert strong[i] > weak[i]


def test_cpu_only_target_and_cores(example_job):
    cpu_only = get_target("A").model_copy(update={"gpu_model": None, "gpu_gflops": 0.0, "gpu_mem_gib": 0.0})
    x = build_features(example_job, cpu_only)
    assert x[FEATURE_INDEX["has_gpu"]] == 0.0 and np.all(np.isfinite(x))
    half = build_features(example_job, get_target("C"), cpu_cores=8)
    assert half[FEATURE_INDEX["cpu_cores_frac"]] == pytest.approx(0.5)


def test_family_and_mode_one_hot(example_job):
    x = build_features(example_job, get_target("B"))
    assert x[FEATURE_INDEX["family_cnn"]] == 1.0 and x[FEATURE_INDEX["family_rnn"]] == 0.0
    assert x[FEATURE_INDEX["mode_train"]] == 1.0


def test_missing_columns_named():
    with pytest.raises(KeyError, match="batch_size"):
        feature_matrix({"family": ["cnn"]})


def test_normaliser_round_trip_and_schema_check(tmp_path, example_job):
    xs = np.stack([build_features(example_job, t) for t in default_catalogue().values()])
    norm = Normaliser.fit(xs)
    z = norm.transform(xs)
    assert np.allclose(z.mean(axis=0)[norm.scale != 1.0], 0.0, atol=1e-4)
    norm.save(tmp_path / "n.json")
    back = Normaliser.load(tmp_path / "n.json")
    assert np.array_equal(back.mean, norm.mean) and np.array_equal(back.scale, norm.scale)
    data = norm.to_dict()
    data["feature_names"] = data["feature_names"][:-1]
    with pytest.raises(ValueError, match="feature schema"):
        Normaliser.from_dict(data)
