"""Assemble ``results/REPORT.md`` from the studies' markdown sections (``results/<study>/section.md``).

Each study writes its own section with its figures beside the papers'; this script puts them in
order under one header that says how to reproduce them and which code, traces and seeds made
them (read from each study's ``provenance.json``). A study that has not been run is listed as
missing, never filled in.

Run: ``placement experiment report`` (``placement experiment all`` runs it last).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from experiments.harness import parse_script_args
from placement.core.version import code_version


@dataclass
class Args:
    results: str = "results"
    out: str = "results/REPORT.md"


def parse_args(argv: list[str] | None = None) -> Args:
    return parse_script_args(Args, argv, __doc__)


args = parse_args()
results = Path(args.results)
STUDIES = (
    ("table5", "1", "Paper A Table 5: policy comparison"),
    ("gpu_share", "2", "Paper A Fig. 1: GPU share by configuration"),
    ("threshold_sensitivity", "3", "Paper A sensitivity: T_t and T_e"),
    ("feature_importance", "4", "Paper A Table 3: permutation importance"),
    ("dnn_curves", "5", "Paper A: PR, ROC, calibration of the DNN"),
    ("ppo_warm_vs_cold", "6", "Warm vs cold PPO"),
    ("online_drift", "7", "Online drift"),
    ("contention", "8", "GPU-queue contention"),
    ("edge_knobs", "9", "Paper B: cores and GPU memory cap on edge targets"),
    ("edge_study", "10", "Paper B on the measured host: cores, GPU memory caps, knobs"),
)

known = {name for name, _, _ in STUDIES}
extra = sorted(p.parent.name for p in results.glob("*/section.md") if p.parent.name not in known)
studies = [*STUDIES, *((name, str(len(STUDIES) + i + 1), name.replace("_", " ")) for i, name in enumerate(extra))]
rows, sections, headlines, hashes = [], [], [], {}
for name, number, title in studies:
    section = results / name / "section.md"
    prov_path = results / name / "provenance.json"
    if not section.exists() or not prov_path.exists():
        rows.append(f"| {number} | {title} | `placement experiment {name}` | **not run** | – | – |")
        continue
    prov = json.loads(prov_path.read_text())
    for path, sha in prov.get("trace_hashes", {}).items():
        hashes[path] = sha
    budget = "full" if prov.get("args", {}).get("full") else "default (small)"
    rows.append(f"| {number} | [{title}](#study-{number}) | `placement experiment {name}` | {budget} | "
                f"{prov.get('seed')} | `{prov.get('code_version')}` |")
    text = section.read_text()
    sections.append(f'<a id="study-{number}"></a>\n\n' + text)
    found = re.search(r"^> \*\*Headline\.\*\* (.*)$", text, flags=re.MULTILINE)
    if found:
        headlines.append(f"| [{number}](#study-{number}) | {title} | {found.group(1)} |")

lines = [
    "# Results: paper reproductions and simulation studies",
    "",
    "Every figure below was produced by the study scripts in `experiments/` from the traces in `data/traces/`; "
    "nothing is typed in by hand. Each study's CSVs, plots and provenance (seed, thresholds, trace sha256, hardware, "
    "code version, arguments) are in `results/<study>/`. Energy figures say how they were obtained: **modelled** "
    "(the performance model: every simulated target, the Jetsons included), **measured** (paper A's Table 2 as the "
    "paper reports it), or **mixed** (the measured H200 host: GPU energy measured by NVML, CPU power modelled).",
    "",
    "Reproduce one study with `placement experiment NAME` (small default budget, minutes on 2 cores; `--full` for "
    "the paper-scale run; `--address ray://...` to run its sweep on a Ray cluster), all of them and this report "
    "with `placement experiment all`. `experiments/README.md` maps each paper table and figure to its command and "
    "output files.",
    "",
    "| study | what | command | budget | seed | code version |",
    "|---|---|---|---|---|---|",
    *rows,
    "",
    "## Headlines: the papers' figures and ours",
    "",
    "| study | what | paper vs ours (details, plots and caveats in each study's section) |",
    "|---|---|---|",
    *headlines,
    "",
    "Traces used: " + (", ".join(f"`{p}` (sha256 {h[:12]})" if len(h) == 64 else f"`{p}` ({h})"
                                 for p, h in sorted(hashes.items())) or "none") + ".",
    "",
    f"Report assembled by `experiments/report.py` at code version `{code_version()}`.",
    "",
]
Path(args.out).write_text("\n".join(lines) + "\n" + "\n".join(sections))
print(f"wrote {args.out}: {len(sections)} of {len(studies)} studies")
