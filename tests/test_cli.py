from pathlib import Path

import pytest
from typer.testing import CliRunner

from placement.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def subcommands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def test_every_subcommand_has_help():
    names = subcommands()
    assert {"label", "catalogue", "probe"} <= set(names)
    for name in names:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage" in result.output


def test_label_prints_the_paper_table():
    result = runner.invoke(app, ["label", str(ROOT / "data/traces/paper_table2.csv"), "--json"])
    assert result.exit_code == 0, result.output
    labels = {line.split('"job_id": "')[1].split('"')[0]: '"label": "gpu"' in line
              for line in result.output.splitlines() if line.strip()}
    assert labels == {"bert_imdb": True, "mobilenet_imagenet100": False, "resnet18_imagenet100": True,
                      "xgb_iris": True, "TimeSformer_k400": True}


@pytest.mark.parametrize("args, message", [
    (["label", "missing.parquet"], "not found"),
    (["label", "data/traces/paper_table2.csv", "--speedup-min", "0"], "speedup_min"),
])
def test_label_errors_are_clear(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.output


def test_label_with_stricter_threshold_flips_resnet():
    result = runner.invoke(app, ["label", str(ROOT / "data/traces/paper_table2.csv"), "--json", "-t", "10"])
    line = next(row for row in result.output.splitlines() if "resnet18" in row)
    assert '"label": "cpu"' in line


def test_query_table_never_cuts_the_decision_id():
    from rich.console import Console

    from placement.cli import decisions_table
    from placement.serve.schemas import PlacementResponse

    ids = [f"{'0123456789abcdef' * 2}-{i}" for i in (0, 1234567)]
    answer = PlacementResponse.model_validate({
        "target_id": "agx-orin", "policy_version": "0.1.0+gd6c0c29d7d27-dbd748208a",
        "thresholds": {"speedup_min": 2.0, "energy_ratio_max": 1.5, "missing_power": "speed_only"},
        "decisions": [{"decision_id": i, "job_name": "resnet18_cifar10_train_b64", "device": "gpu", "cpu_cores": 4,
                       "gpu_mem_cap": 2048, "gpu_probability": 0.91234, "predicted_speedup": 12.3456,
                       "predicted_energy_ratio": 0.3456, "prediction_method": "modelled", "explored": False,
                       "decided_by": "policy", "policy_version": "v"} for i in ids]})
    wide = Console(width=150, record=True)  # placement query puts the ids in the table from 150 columns up
    wide.print(decisions_table(answer))
    text = wide.export_text()
    assert all(i in text for i in ids) and "resnet18_cifar10_train_b64" in text, text
    narrow = Console(width=80, record=True)  # below: the ids are listed under the table, one per line
    narrow.print(decisions_table(answer, with_ids=False))
    text = narrow.export_text()
    assert "0.912" in text and "12.3" in text and "0.346" in text, text  # the figures stay readable


def test_evaluate_says_when_the_model_was_trained_on_the_trace():
    trace = str(ROOT / "data/traces/paper_table2.csv")
    result = runner.invoke(app, ["evaluate", "--traces", trace], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "was trained on" in result.output and "paper_table2.csv" in result.output
    assert "in-sample" in result.output


def test_describe_imports_a_module_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "mymodule_i17.py").write_text(
        "import torch.nn as nn\n\n"
        "class Factory(nn.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__(nn.Flatten(), nn.Linear(12, 4))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))  # keep sys.path restored after the test
    import sys
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    result = runner.invoke(app, ["describe", "mymodule_i17:Factory", "--family", "mlp", "--input-shape", "3,4"])
    assert result.exit_code == 0, result.output
    assert '"param_count": 52' in result.output
    missing = runner.invoke(app, ["describe", "nosuchmodule_i17:Net", "--family", "mlp", "--input-shape", "3"],
                            terminal_width=300)
    assert missing.exit_code == 2
    assert "PYTHONPATH" in " ".join(missing.output.split())


def test_train_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "metadata.json").write_text("{}")
    trace = str(ROOT / "data/traces/paper_table2.csv")
    result = runner.invoke(app, ["train", "--traces", trace, "--out", str(out)], terminal_width=200)
    assert result.exit_code == 2 and "--force" in result.output
    assert (out / "metadata.json").read_text() == "{}"


def test_train_draws_no_progress_bars_into_a_log(tmp_path, monkeypatch):
    import placement.agents.training

    seen = {}

    def capture(paths, out, settings):
        seen["progress"] = settings.progress
        raise ValueError("stop here")

    monkeypatch.setattr(placement.agents.training, "train_from_traces", capture)
    trace = str(ROOT / "data/traces/paper_table2.csv")
    result = runner.invoke(app, ["train", "--traces", trace, "--out", str(tmp_path / "m")])  # stderr: not a TTY
    assert result.exit_code == 2 and "stop here" in result.output
    assert seen == {"progress": False}


def test_temperature_refits_the_models_own_recipe_on_its_own_traces(tmp_path, monkeypatch):
    import shutil

    import placement.agents.temperature
    from placement.agents.artifact import read_metadata
    from placement.agents.temperature import PolicyTemperature

    model = tmp_path / "model"
    shutil.copytree(ROOT / "models/default", model)
    meta = read_metadata(model)
    wrong = runner.invoke(app, ["temperature", str(model), "--traces", str(ROOT / "data/traces/paper_table2.csv")],
                          terminal_width=200)
    assert wrong.exit_code == 2 and "trained on" in " ".join(wrong.output.split())
    assert read_metadata(model).temperature == meta.temperature  # untouched
    seen = {}

    def fit(paths, settings, folds, work_dir):
        seen.update(settings=settings, folds=folds)
        return PolicyTemperature(value=3.0, rows=200, folds=folds, seed=settings.seed, log_loss_before=0.5,
                                 log_loss_after=0.3, ece_before=0.1, ece_after=0.04)

    monkeypatch.setattr(placement.agents.temperature, "fit_policy_temperature", fit)
    traces = [str(ROOT / p) for p in meta.trace_hashes]
    result = runner.invoke(app, ["temperature", str(model), "--traces", *traces, "--folds", "3"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "temperature 3.000" in " ".join(result.output.split()) and read_metadata(model).temperature["value"] == 3.0
    s = seen["settings"]  # the model's recipe, read from its metadata
    assert seen["folds"] == 3 and s.seed == meta.seed and s.dnn.to_dict() == meta.dnn_config
    assert s.ppo_timesteps == meta.metrics["ppo"]["timesteps"] and s.cv_folds == 0
    assert s.augment_copies == meta.metrics["estimate_augmentation"]["copies"]
