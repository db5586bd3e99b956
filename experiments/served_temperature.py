"""How well calibrated the served policy's P(GPU) is on architectures it never trained on, with and
without the temperature in its metadata (issue 12: "P(GPU) calibrated").

The bundled model (``models/default``) records the traces it trained on; its temperature was fitted by
``placement temperature`` from grouped refits of its own recipe on those traces. This study scores the
served policy (as ``load_served`` gives it) zero-shot -- the performance model without the scored
architecture's own constants -- on a measured trace of architectures that are in none of the model's
training traces, and reports expected calibration error (10 bins), log-loss (nats) and agreement with
the joint threshold at T = 1 and at the model's temperature. Nothing here is fitted.

Run (seconds)::

    python -m experiments.served_temperature --out results/served_temperature.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Args:
    model: Path = Path("models/default")
    trace: Path = Path("data/traces/h200_archs_measured.parquet")
    out: Path = Path("results/served_temperature.json")
    seed: int = 0  # nothing is drawn; recorded for the output's provenance


def main(args: Args) -> dict[str, Any]:
    from placement.agents.artifact import load_served
    from placement.agents.dnn import expected_calibration_error
    from placement.agents.evaluation import labelled_set
    from placement.agents.grounding import zero_shot_probability
    from placement.agents.temperature import log_loss, scale
    from placement.core.trace import pair_outcomes, read_traces
    from placement.core.version import code_version

    served = load_served(args.model)
    th = served.thresholds
    frame, hashes = read_traces([args.trace])
    overlap = sorted(set(hashes.values()) & set(served.metadata.trace_hashes.values()))
    if overlap:
        raise ValueError(f"{args.trace} is among the model's training traces: not a held-out test")
    data = labelled_set(pair_outcomes(frame, th))
    arch = data.pairs["arch"].astype(str).to_numpy()
    archs = sorted(set(arch))
    ps, ys = [], []
    for a in archs:
        rows = np.flatnonzero(arch == a)
        p, usable = zero_shot_probability(served.policy, data, rows, a, th)
        ps.append(p[usable])
        ys.append(np.asarray(data.subset(rows).y, dtype=bool)[usable])
    p, y = np.concatenate(ps), np.concatenate(ys)
    temperature = served.metadata.temperature_value

    def figures(q: np.ndarray) -> dict[str, float]:
        return {"ece": float(expected_calibration_error(y, q)), "log_loss": log_loss(y, q),
                "agreement": float(np.mean((q >= 0.5) == y)),
                "share_p_at_least_0.95_or_at_most_0.05": float(np.mean((q >= 0.95) | (q <= 0.05)))}

    payload = {
        "schema": "placement.served_temperature/1", "seed": args.seed, "code_version": code_version(),
        "model": str(args.model), "model_version": served.metadata.version, "temperature": temperature,
        "temperature_fit": served.metadata.temperature, "thresholds": th.as_dict(),
        "trace": str(args.trace), "trace_sha256": hashes, "hardware": "h200-host (measured trace)",
        "architectures": archs, "jobs": int(p.size),
        "without_temperature": figures(p), "with_temperature": figures(scale(p, temperature)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    sys.stdout.write(json.dumps({k: payload[k] for k in ("temperature", "jobs", "without_temperature",
                                                           "with_temperature")}, indent=1) + "\n")
    return payload


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Args.model)
    parser.add_argument("--trace", type=Path, default=Args.trace)
    parser.add_argument("--out", type=Path, default=Args.out)
    a = parser.parse_args()
    main(Args(model=a.model, trace=a.trace, out=a.out))
