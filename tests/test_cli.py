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
