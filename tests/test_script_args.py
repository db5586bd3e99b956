from dataclasses import dataclass

import pytest

from experiments.harness import parse_script_args


@dataclass
class Args:
    seed: int = 0
    jobs: int = 100
    names: tuple[str, ...] = ("a", "b")
    ray: bool = True
    full: bool = False


def test_fields_become_options_and_presets_fill_defaults_only():
    a = parse_script_args(Args, ["--seed", "3", "--names", "x", "--no-ray"], "doc")
    assert (a.seed, a.jobs, a.names, a.ray) == (3, 100, ("x",), False)
    b = parse_script_args(Args, ["--full", "--seed", "5"], "doc", {"full": {"jobs": 1000, "seed": 9}})
    assert (b.jobs, b.seed) == (1000, 5)


def test_bad_value_exits_with_usage():
    with pytest.raises(SystemExit):
        parse_script_args(Args, ["--seed", "x"], "doc")
