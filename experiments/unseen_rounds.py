"""Issue 13: unseen architectures, chosen-device feedback only, rounds of placements through the HTTP service.

The target: ">= 97 % outside the +-25 % band after <= 3 rounds of feedback over them, through the
HTTP service". The measured H200 architectures are split into ``folds`` groups (seeded); for each
group, in turn unseen:

1. a model is trained without the group's architectures by the shipped recipe (the DNN on every
   pooled row of the other architectures plus its estimate-augmented copies, then warm PPO), and
   the performance model loses the group's per-architecture constants (its family constants were
   fitted with them: a residual leak, as in the grounding evaluation);
2. the service runs on it over HTTP (``placement.serve.app.build_fastapi`` on uvicorn, loopback, a
   fresh SQLite store; the service's learner in process, as its learner replica runs it), on the
   ``h200-host`` target;
3. round 0 asks for every measured job of the group (each job with its architecture's structural
   signature, as a client that describes its model sends it) without exploration: the zero-shot
   answers; then each round asks for every job again (exploration on, as served), reports the
   *chosen* device's long measured run for each decision (``POST /v1/feedback``, no other device),
   lets the learner update, and asks once more without exploration: the answers scored.

Scores: agreement with the joint threshold (T_t 2, T_e 1.5) on the long measurements, on the jobs
whose |joint margin| > ln 1.25 ("clear") and on all; where the answers came from
(``estimate_source``); the learner's updates. Energies mix measured GPU (NVML) and modelled CPU
power (no RAPL on the lent host), as the traces label them.

With ``--poison-share 0.2`` each group is played a second time with a fifth of the feedback lying
consistently toward the CPU (the GPU 3-10x slower than it ran, or the CPU as much faster; issue 13's
poison target: no answer flipped), and the answers flipped against the honest run are counted --
all of them, and the ``harmed`` ones: clear jobs the honest run answered right and the lying one
wrong. With ``--poison-client`` the lying share reports through a client token of its own (the
service's ``client_tokens_file``; the other reports with the service token), in the honest play too
(honestly there), so the client screen (:mod:`placement.serve.learning.clients`) can compare it with
the rest. Each round records which reports lied, the device each decision ran on, and per group the
jobs' names, labels and clear flags, so a flip can be traced to the reports behind it.

Run: ``python -m experiments.unseen_rounds [--poison-share 0.2]`` (``--smoke``: one small group, one round).
"""

from __future__ import annotations

import json
import math
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.evaluation_report import pooled_traces
from experiments.harness import parse_script_args, write_provenance


@dataclass
class Args:
    out: str = "results/unseen_rounds"
    seed: int = 0
    folds: int = 4
    """Groups of the measured architectures, each unseen in turn (seeded split)."""
    rounds: int = 3
    speedup_min: float = 2.0
    energy_ratio_max: float = 1.5
    target: str = "h200-host"
    exploration: float = 0.1
    dnn_epochs: int = 120
    """The grounding evaluation's shortened DNN recipe (no refit, at most this many epochs)."""
    ppo_steps: int = 4096
    ppo_warmup_steps: int = 2048
    poison_share: float = 0.0
    """With a share > 0 each group is played three times: honestly, with this share of the feedback
    lying consistently toward the CPU (the GPU reported ``poison_factor`` slower, or the CPU as
    much faster, varied batch sizes), and with those same reports withheld (``--poison-client``:
    the lying client never reports); the answers that flip against the honest and the withheld
    plays are counted."""
    poison_factor: tuple[float, ...] = (3.0, 10.0)
    """The range the lying factor is drawn from (log-uniform)."""
    poison_client: bool = False
    """The lying share's reports come from one client of their own (a client token of the
    service's ``client_tokens_file``; the rest with the service token), in both plays: honest
    in the honest one. Without it every report comes from one client and the lies fall at random."""
    threads: int = 2
    smoke: bool = False


SMOKE = dict(folds=8, rounds=1, dnn_epochs=8, ppo_steps=64, ppo_warmup_steps=64)
BAND = math.log(1.25)


def parse_args(argv: list[str] | None = None) -> Args:
    return parse_script_args(Args, argv, __doc__, {"smoke": SMOKE})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _outcome(pair: pd.Series, device: str, n_samples: int = 10_000) -> dict[str, Any]:
    """The long measured run of ``device`` for one job as feedback: the whole run of ``n_samples``."""
    if not bool(pair[f"{device}_feasible"]):
        return {"device": device, "feasible": False, "infeasible_reason": "oom" if device == "gpu" else "did_not_run"}
    t = float(pair[f"{device}_time_per_sample_s"])
    out: dict[str, Any] = {"device": device, "n_samples": n_samples, "time_total_s": t * n_samples}
    e = pair[f"{device}_energy_per_sample_j"]
    if pd.notna(e):
        method = str(pair[f"{device}_energy_method"])
        out.update(energy_j=float(e) * n_samples, energy_method=method if method in ("measured", "modelled") else "modelled")
    return out


def _lie(outcome: dict[str, Any], factor: float) -> dict[str, Any]:
    """The run reported ``factor`` times worse for the GPU: a GPU run slower, a CPU run faster (the
    same power, so the energy moves with the time)."""
    if not outcome.get("time_total_s"):
        return outcome
    scale = factor if outcome["device"] == "gpu" else 1.0 / factor
    out = {**outcome, "time_total_s": outcome["time_total_s"] * scale}
    if "energy_j" in out:
        out["energy_j"] = out["energy_j"] * scale
    return out


def run_fold(a: Args, fold: int, held: list[str], data: Any, frame: pd.DataFrame,
             poison_share: float = 0.0, silent: bool = False) -> dict[str, Any]:
    """Train without ``held``, serve over HTTP, and play the rounds on ``held``'s measured jobs
    (``poison_share`` of the feedback lying, or withheld with ``silent``, see :class:`Args`)."""
    import httpx
    import uvicorn

    from placement.agents.artifact import ModelMetadata, save_model
    from placement.agents.dnn import DnnConfig
    from placement.agents.evaluation import model_architecture
    from placement.agents.grounding import GroundingSettings, _fold_model, _train
    from placement.agents.ppo import PpoConfig, make_env, train_warm_ppo
    from placement.core.job import Job
    from placement.core.threshold import Thresholds
    from placement.lab.signature import workload_signature
    from placement.serve.app import PlacementService, build_fastapi
    from placement.serve.learning.learner import Learner
    from placement.serve.placer import Placer, bootstrap_store, seeded_batch_ids
    from placement.serve.settings import Settings
    from placement.serve.storage.store import Store

    th = Thresholds(a.speedup_min, a.energy_ratio_max)
    arch = data.pairs["arch"].astype(str).to_numpy()
    is_meas = (data.pairs["source"].astype(str) == "measured").to_numpy()
    train_rows = np.flatnonzero(~np.isin(arch, held))
    test_rows = np.flatnonzero(is_meas & np.isin(arch, held))
    test = data.pairs.iloc[test_rows].reset_index(drop=True)
    recipe = DnnConfig(seed=a.seed, max_epochs=a.dnn_epochs, patience=40, refit=False)
    dnn = _train(data, train_rows, GroundingSettings(seed=a.seed, dnn=recipe, thresholds=th))
    train_frame = frame[~np.isin(model_architecture(frame["model"]).astype(str), held)].reset_index(drop=True)
    ppo = train_warm_ppo(dnn, make_env(train_frame, th), timesteps=a.ppo_steps,
                         config=PpoConfig.warm(value_warmup_steps=a.ppo_warmup_steps), seed=a.seed).policy
    perf = _fold_model(*held)  # the unseen architectures' own constants out

    jobs = [Job(name=str(r.model), family=str(r.family), mode=str(r.mode), batch_size=int(r.batch_size),
                flops_per_batch=float(r.flops_per_batch), param_count=int(r.param_count),
                input_elems_per_sample=int(r.input_elems_per_sample), input_bytes_per_sample=int(r.input_bytes_per_sample),
                signature=workload_signature(str(r.model))) for r in test.itertuples(index=False)]
    truth = np.asarray(data.y, dtype=bool)[test_rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.minimum(np.log(test["speedup"].to_numpy(dtype=float) / th.speedup_min),
                            np.log(th.energy_ratio_max / test["energy_ratio"].to_numpy(dtype=float)))
    clear = ~(np.abs(np.nan_to_num(margin, nan=np.inf)) <= BAND)  # a failed GPU run is clear (CPU)

    rounds: list[dict[str, Any]] = []
    service_auth = {"Authorization": "Bearer unseen-rounds-service-token"}
    other_auth = {"Authorization": "Bearer unseen-rounds-team-b-token"}
    with tempfile.TemporaryDirectory(prefix="unseen-rounds-") as tmp:
        clients_file = Path(tmp) / "client_tokens"
        clients_file.write_text("team-b unseen-rounds-team-b-token\n")
        clients_file.chmod(0o600)
        auth = dict(token="unseen-rounds-service-token", client_tokens_file=clients_file) if a.poison_client else {}
        model_dir = Path(tmp) / "model"
        save_model(model_dir, dnn=dnn, ppo=ppo, normaliser=dnn.normaliser, thresholds=th,
                   metadata=ModelMetadata(version=f"without-fold-{fold}", seed=a.seed, thresholds=th.as_dict(),
                                          trace_hashes={"pooled traces": "see provenance"}))
        settings = Settings(state_dir=Path(tmp) / "state", model_path=model_dir, speedup_min=th.speedup_min,
                            energy_ratio_max=th.energy_ratio_max, seed=a.seed, exploration_rate=a.exploration,
                            torch_threads=a.threads, **auth)
        store = Store(settings.database)
        placer = Placer(bootstrap_store(store, settings), settings=settings, store=store, perf_model=perf,
                        batch_ids=seeded_batch_ids(a.seed + fold))
        service = PlacementService(settings, placer=placer, poll=False)
        learner = Learner(settings, store, perf_model=perf)
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(build_fastapi(service), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                              headers=service_auth if a.poison_client else None) as c:
                def place(explore: bool) -> list[dict[str, Any]]:
                    r = c.post("/v1/placements", json={"jobs": [j.model_dump(mode="json") for j in jobs],
                                                       "target": a.target, "explore": explore})
                    if r.status_code != 200:
                        raise RuntimeError(f"placements answered {r.status_code}: {r.text[:300]}")
                    placer.refresh()  # the service's own poll, at a round's end rather than on a timer
                    return list(r.json()["decisions"])

                def score(k: int, answers: list[dict[str, Any]], updates: list[Any], lied: list[int] | None = None,
                          reported: list[str] | None = None) -> None:
                    gpu = np.array([d["device"] == "gpu" for d in answers])
                    rounds.append({
                        "fold": fold, "round": k, "jobs": len(jobs), "clear_jobs": int(clear.sum()),
                        "agreement_clear": float(np.mean(gpu[clear] == truth[clear])) if clear.any() else math.nan,
                        "agreement_all": float(np.mean(gpu == truth)),
                        "right_clear": int((gpu[clear] == truth[clear]).sum()),
                        "estimate_source": dict(pd.Series([d["estimate_source"] for d in answers]).value_counts()),
                        "decided_by": dict(pd.Series([d["decided_by"] for d in answers]).value_counts()),
                        "serving_version": answers[0]["policy_version"] if answers else None,
                        "updates": [u.status for u in updates],
                        "gpu": [bool(g) for g in gpu],
                        "lied": lied or [],
                        "reported_device": reported or [],
                    })

                score(0, place(explore=False), [])
                lies = np.random.default_rng([a.seed, fold, 17])
                lo, hi = (math.log(f) for f in a.poison_factor)
                for k in range(1, a.rounds + 1):
                    decisions = place(explore=True)
                    lied: list[int] = []
                    for j, (d, (_, pair)) in enumerate(zip(decisions, test.iterrows(), strict=True)):
                        outcome = _outcome(pair, d["device"])
                        headers = None
                        if a.poison_client:  # the same reports come from team-b in both plays
                            u, factor = lies.random(), math.exp(lies.uniform(lo, hi))
                            if u < a.poison_share:
                                if silent:  # the third play: team-b never reports
                                    lied.append(j)  # in this play: the reports withheld
                                    continue
                                headers = other_auth
                                if poison_share > 0:
                                    outcome = _lie(outcome, factor)
                                    lied.append(j)
                        elif lies.random() < poison_share:
                            factor = math.exp(lies.uniform(lo, hi))  # drawn in both plays: the same reports
                            if silent:  # the third play: the reports that lie in the poisoned play are withheld
                                lied.append(j)  # in this play: the reports withheld
                                continue
                            outcome = _lie(outcome, factor)
                            lied.append(j)
                        r = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": outcome},
                                   headers=headers)
                        if r.status_code != 200:
                            raise RuntimeError(f"feedback answered {r.status_code}: {r.text[:300]}")
                    updates = []
                    while (u := learner.maybe_update()) is not None:
                        updates.append(u)
                    placer.refresh()
                    score(k, place(explore=False), updates, lied, [str(d["device"]) for d in decisions])
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            service.close()
            store.close()
    return {"fold": fold, "held_out": held, "poison_share": poison_share, "rounds": rounds,
            "job_names": [f"{j.name}/{j.mode}/b{j.batch_size}" for j in jobs], "truth_gpu": [bool(t) for t in truth],
            "clear": [bool(c) for c in clear]}


def main(args: Args | None = None) -> dict[str, Any]:
    """Every group in turn (see the module docstring); writes ``rounds.json`` and ``provenance.json`` to
    ``args.out`` and returns what ``rounds.json`` holds."""
    args = args or parse_args()
    import torch

    from placement.agents.evaluation import labelled_set
    from placement.core.threshold import Thresholds
    from placement.core.trace import pair_outcomes, read_traces

    torch.set_num_threads(args.threads)
    start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    th = Thresholds(args.speedup_min, args.energy_ratio_max)
    frame, hashes = read_traces(pooled_traces())
    data = labelled_set(pair_outcomes(frame, th))
    is_meas = (data.pairs["source"].astype(str) == "measured").to_numpy()
    archs = sorted(set(data.pairs["arch"].astype(str).to_numpy()[is_meas]))
    order = np.random.default_rng([args.seed, 13]).permutation(len(archs))
    groups = [sorted(archs[i] for i in order[k::args.folds]) for k in range(args.folds)]
    if args.smoke:
        groups = groups[:1]
    results: list[dict[str, Any]] = []
    poisoned: list[dict[str, Any]] = []
    silent: list[dict[str, Any]] = []
    for k, held in enumerate(groups):
        for share, into in ((0.0, results), (args.poison_share, poisoned), (args.poison_share, silent)):
            if into is not results and share <= 0:
                continue
            r = run_fold(args, k, held, data, frame, share, silent=into is silent)
            for row in r["rounds"]:
                play = (("silent team-b" if args.poison_client else "lying reports withheld") if into is silent
                        else f"poison {share:g}")
                print(f"fold {k} ({', '.join(held)}) {play} round {row['round']}: clear "
                      f"{row['agreement_clear']:.3f} ({row['right_clear']}/{row['clear_jobs']}), all "
                      f"{row['agreement_all']:.3f}, sources {row['estimate_source']}, updates {row['updates']}", flush=True)
            into.append(r)
    rows = pd.DataFrame([row for r in results for row in r["rounds"]])
    pooled_rounds = rows.groupby("round").agg(right_clear=("right_clear", "sum"), clear_jobs=("clear_jobs", "sum"))
    pooled_rounds["agreement_clear"] = pooled_rounds.right_clear / pooled_rounds.clear_jobs
    summary: dict[str, Any] = {"per_fold": results, "pooled": pooled_rounds.reset_index().to_dict(orient="records"),
                               "target": ">= 0.97 of clear jobs after <= 3 rounds"}
    if poisoned:
        summary.update(_flips(results, poisoned, "poisoned vs honest"))
    if silent:
        # against the play in which the lying client never reported (--poison-client), or the lying
        # reports were never sent: what the lies did beyond taking those reports away (a report a
        # screen leaves out is lost either way)
        summary.update(_flips(silent, poisoned, "poisoned vs silent", key="_vs_silent"), silent=silent)
    (out / "rounds.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(pooled_rounds.to_string())
    write_provenance(out, "unseen_rounds", args, thresholds=th.as_dict(),
                     trace_hashes={Path(k).name: v for k, v in hashes.items()}, targets=[args.target], start=start,
                     groups=groups)
    return summary


def _flips(results: list[dict[str, Any]], poisoned: list[dict[str, Any]], label: str, key: str = "") -> dict[str, Any]:
    """Answers of the ``poisoned`` plays that differ from the ``results`` plays', per fold and round and
    pooled: all of them, and the ``harmed`` ones (clear jobs answered right in ``results``, wrong here)."""
    flips = []
    for honest, lied in zip(results, poisoned, strict=True):
        truth, clear = honest["truth_gpu"], honest["clear"]
        for h, p in zip(honest["rounds"], lied["rounds"], strict=True):
            flips.append({"fold": honest["fold"], "round": h["round"], "jobs": h["jobs"],
                          "flipped": int(sum(x != y for x, y in zip(h["gpu"], p["gpu"], strict=True))),
                          "harmed": int(sum(c and x == t and y != t for x, y, t, c
                                            in zip(h["gpu"], p["gpu"], truth, clear, strict=True))),
                          "right_clear_honest": h["right_clear"], "right_clear_poisoned": p["right_clear"],
                          "clear_jobs": h["clear_jobs"]})
    pooled_flips = pd.DataFrame(flips).groupby("round")[["jobs", "flipped", "harmed", "right_clear_honest",
                                                         "right_clear_poisoned", "clear_jobs"]].sum()
    print(label)
    print(pooled_flips.to_string())
    return {"poisoned": poisoned, f"flips{key}": flips, f"pooled_flips{key}": pooled_flips.reset_index().to_dict(orient="records"),
            "poison_target": "no answer flipped by the lying share"}


if __name__ == "__main__":
    main()
