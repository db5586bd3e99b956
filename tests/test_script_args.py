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


def test_fan_out_in_process_keeps_the_call_order():
    from experiments.harness import fan_out

    assert fan_out(divmod, [(7, 2), (9, 4)], "test", use_ray=False) == [(3, 1), (2, 1)]
    assert fan_out(divmod, [], "test", use_ray=True) == []  # nothing to run: Ray is not started


def test_provenance_file_and_note(tmp_path):
    import json
    import time

    from experiments.harness import provenance_note, write_provenance

    prov = write_provenance(tmp_path, "study", Args(seed=4), thresholds={"speedup_min": 2.0},
                            trace_hashes={"data/traces/t.parquet": "ab" * 32}, targets=["A"], start=time.time(), extra=1)
    assert json.loads((tmp_path / "provenance.json").read_text()) == json.loads(json.dumps(prov))  # tuples: lists
    assert list(prov) == ["study", "args", "seed", "thresholds", "trace_hashes", "code_version", "hardware", "extra", "wall_s"]
    assert prov["seed"] == 4 and prov["args"]["jobs"] == 100 and prov["hardware"]["targets"] == ["A"]
    assert provenance_note("study", {"data/traces/t.parquet": "ab" * 32}).endswith(", trace sha256 `t.parquet` abababababab).")
    assert provenance_note("study", {}).startswith("Provenance: `study/provenance.json` (code ")
    assert provenance_note("study", {}).endswith(").") and "sha256" not in provenance_note("study", {})
