import math
from pathlib import Path

import pandas as pd
import pytest

from placement.core.catalogue import get_target
from placement.core.paper import paper_table2_frame, paper_table2_meta
from placement.core.trace import (
    COLUMN_NAMES,
    TraceMeta,
    TraceValidationError,
    pair_outcomes,
    read_trace,
    row_target,
    validate,
    write_trace,
)


@pytest.fixture
def frame() -> pd.DataFrame:
    return paper_table2_frame()


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip_keeps_rows_and_metadata(tmp_path: Path, frame: pd.DataFrame, suffix: str):
    path = write_trace(frame, tmp_path / f"t{suffix}", paper_table2_meta("v-test"))
    back = read_trace(path)
    assert back.meta.source == "paper" and back.meta.code_version == "v-test"
    assert list(back.frame.columns) == list(COLUMN_NAMES)
    assert len(back.frame) == len(frame)
    pd.testing.assert_series_equal(
        back.frame["time_total_s"].astype("float64"), validate(frame)["time_total_s"].astype("float64")
    )
    assert back.frame["avg_gpu_power_w"].isna().sum() == frame["avg_gpu_power_w"].isna().sum()
    assert len(back.sha256) == 64


def test_parquet_and_csv_give_the_same_labels(tmp_path: Path, frame: pd.DataFrame):
    a = pair_outcomes(read_trace(write_trace(frame, tmp_path / "a.parquet", paper_table2_meta())).frame)
    b = pair_outcomes(read_trace(write_trace(frame, tmp_path / "b.csv", paper_table2_meta())).frame)
    assert a["label_gpu"].tolist() == b["label_gpu"].tolist()


def errors_of(frame: pd.DataFrame) -> list[tuple[int, str, str]]:
    with pytest.raises(TraceValidationError) as info:
        validate(frame)
    return info.value.errors


def test_rejects_wrong_type_naming_row_and_column(frame):
    bad = frame.astype({"batch_size": object})
    bad.loc[2, "batch_size"] = "sixty-four"
    (row, col, why), *_ = errors_of(bad)
    assert (row, col) == (3, "batch_size") and "number" in why


def test_rejects_negative_time(frame):
    bad = frame.copy()
    bad.loc[0, "time_total_s"] = -1.0
    assert (1, "time_total_s") in [(r, c) for r, c, _ in errors_of(bad)]


def test_rejects_missing_column(frame):
    errs = errors_of(frame.drop(columns=["flops_per_batch"]))
    assert errs[0][:2] == (0, "flops_per_batch") and "missing column" in errs[0][2]


@pytest.mark.parametrize("column", ["device", "n_samples", "time_total_s", "hw_gpu_gflops", "cpu_cores"])
def test_a_missing_column_the_cross_rules_read_is_named_not_a_key_error(frame, column):
    errs = errors_of(frame.drop(columns=[column]))  # TraceValidationError, not a bare KeyError
    assert (0, column) in [(r, c) for r, c, _ in errs]


def test_rejects_nan_in_required_and_inf_anywhere(frame):
    bad = frame.copy()
    bad.loc[1, "flops_per_batch"] = math.nan
    bad.loc[3, "time_total_s"] = math.inf
    found = {(r, c) for r, c, _ in errors_of(bad)}
    assert (2, "flops_per_batch") in found and (4, "time_total_s") in found


def test_rejects_explicit_nan_text_in_csv(tmp_path: Path, frame):
    path = write_trace(frame, tmp_path / "t.csv", paper_table2_meta())
    lines = path.read_text().splitlines()
    header = lines[1].split(",")
    cells = lines[2].split(",")
    cells[header.index("time_total_s")] = "nan"
    lines[2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceValidationError, match="row 1, column 'time_total_s'"):
        read_trace(path)


def test_rejects_bad_choice_and_cross_column_rules(frame):
    bad = frame.copy()
    bad.loc[0, "family"] = "quantum"
    bad.loc[1, "cpu_power_method"] = "measured"
    bad.loc[1, "avg_cpu_power_w"] = math.nan
    found = {(r, c) for r, c, _ in errors_of(bad)}
    assert (1, "family") in found
    bad = frame.copy()
    bad.loc[0, "cpu_power_method"] = "modelled"
    bad.loc[0, "avg_cpu_power_w"] = None
    assert (1, "cpu_power_method") in {(r, c) for r, c, _ in errors_of(bad)}


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path: Path, frame):
    path = write_trace(frame, tmp_path / "t.parquet", paper_table2_meta())
    before = path.read_bytes()
    bad = frame.copy()
    bad.loc[0, "batch_size"] = -5
    with pytest.raises(TraceValidationError):
        write_trace(bad, path, paper_table2_meta())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_unknown_suffix_and_missing_metadata(tmp_path: Path, frame):
    with pytest.raises(ValueError, match="parquet or .csv"):
        write_trace(frame, tmp_path / "t.json", paper_table2_meta())
    plain = tmp_path / "plain.csv"
    frame.to_csv(plain, index=False)
    with pytest.raises(TraceValidationError, match="metadata"):
        read_trace(plain)


def test_cv_flag_set_above_five_percent(frame):
    noisy = frame.copy()
    noisy["time_cv"] = 0.0
    noisy.loc[0, "time_cv"] = 0.08
    typed = validate(noisy)
    assert typed["cv_flag"].tolist()[:2] == [True, False]


def test_row_target_rebuilds_the_catalogue_target(frame):
    t = row_target(validate(frame).iloc[0])
    ref = get_target("B")
    assert t.id == "B" and t.gpu_gflops == ref.gpu_gflops and t.cpu_cores == ref.cpu_cores


def test_meta_rejects_unknown_source(tmp_path: Path, frame):
    with pytest.raises(ValueError, match="source"):
        write_trace(frame, tmp_path / "t.csv", TraceMeta(source="made-up"))
