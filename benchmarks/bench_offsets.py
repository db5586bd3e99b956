"""Change detection of the target offsets (placement.serve.learning.offsets): false changes under a lying fifth and
outcomes until a 3x slowdown shows (a measurement, not a test; ``tests/test_offsets.py`` runs
one seed of each case).

Run: ``.venv/bin/python benchmarks/bench_offsets.py [--seeds 12]``

Synthetic log residuals: honest ones normal with spread 0.25 or 0.6 (the performance model's
error across architectures); 20 % lying by 3x, 10x, 1/3 or 1/10 in one direction, each sliding
window of :data:`placement.serve.learning.offsets.TARGET_HISTORY` outcomes checked every 2 outcomes; a 3x slowdown
after 150 honest outcomes, the first outcome at which the level exceeds 0.8 ln 3.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from placement.serve.learning.offsets import TARGET_HISTORY, TARGET_MIN_OUTCOMES, offset_level  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seeds", type=int, default=12)
    args = ap.parse_args()
    bad = total = 0
    for spread in (0.25, 0.6):
        for seed in range(args.seeds):
            for lie in (3.0, 10.0, 1 / 3, 1 / 10):
                rng = np.random.default_rng(seed)
                honest = rng.normal(0.0, spread, 400)
                values = np.where(rng.random(400) < 0.2, honest + math.log(lie), honest)
                for k in range(TARGET_MIN_OUTCOMES, 400, 2):
                    window = list(values[max(0, k + 1 - TARGET_HISTORY):k + 1])
                    total += 1
                    bad += offset_level(window)[1] != len(window)
    print(f"false change detections under a lying fifth: {bad} of {total} windows")
    for spread in (0.25, 0.6):
        firsts = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            v = list(rng.normal(0.0, spread, 150)) + list(rng.normal(math.log(3.0), spread, 60))
            firsts.append(next((k for k in range(1, 61) if offset_level(v[:150 + k])[0] > 0.8 * math.log(3.0)), None))
        print(f"spread {spread}: 3x slowdown shown after {firsts} outcomes")


if __name__ == "__main__":
    main()
