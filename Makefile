# Two commands on a fresh clone (Python >= 3.10 on PATH as python3):
#   make run    set up .venv and start the service with the bundled default policy
#   make test   set up .venv and run lint, type checks and the whole test suite
# (make test-fast: unit and in-process HTTP tests only, a few minutes; no Ray, server process or PostgreSQL)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test test-fast lint typecheck pytest clean-venv model bench-decide bench soak evaluation-report newcomer reliability

# CPU torch, never CUDA: constraints.txt pins the CPU build (torch==X+cpu), which only the PyTorch CPU index (or a
# local wheel) has, so pip fails rather than fetch CUDA wheels. The index is added when it answers within 5 s (an
# unreachable extra index costs ~10 s of retries per package); where it does not, pip's own configuration must
# supply the pinned wheel (e.g. a local find-links folder). GPU machines: see README "GPU machines".
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PYTHON) -c "import urllib.request; urllib.request.urlopen('$(TORCH_INDEX)/torch/', timeout=5)" 2>/dev/null; \
	then index="--extra-index-url $(TORCH_INDEX)"; echo "torch: CPU build from $(TORCH_INDEX)"; \
	else index=""; echo "torch: $(TORCH_INDEX) unreachable; the pinned CPU build must come from pip's configured indexes"; fi; \
	set -x; $(PY) -m pip install --quiet --disable-pip-version-check $$index -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/placement serve

lint: setup
	$(VENV)/bin/ruff check placement envs agents serve tests experiments

typecheck: setup
	$(VENV)/bin/mypy placement  # every package: placement/envs, agents and serve are links into the namespace

pytest: setup
	$(PY) -m pytest

test: lint typecheck pytest

# unit tests and in-process HTTP tests (FastAPI TestClient): no Ray, no service process, no PostgreSQL, nothing
# over ~3 s (markers in pyproject.toml; tests/conftest.py adds ray/postgres from a test's fixtures); <= 3 min on
# 2 cores. `make test` above stays the whole suite, as CI runs it.
FAST_TESTS = not slow and not ray and not server and not postgres
test-fast: setup
	$(PY) -m pytest -m "$(FAST_TESTS)"

# every measured sweep except the H100 host's (noisy, and its CPU ran the same jobs ~1.8x slower under the same
# catalogue figures: experiments/evaluation_report.py NOT_POOLED scores it as a held-out host instead; data/traces/README.md)
NOT_POOLED = data/traces/h100_pairs_measured.parquet
MEASURED_TRACES = $(filter-out $(NOT_POOLED),$(wildcard data/traces/*_measured.parquet))
calibration: setup  # performance model: fit on the measured traces, report, then re-simulate
	$(VENV)/bin/placement calibrate $(MEASURED_TRACES) --params-out placement/data/perf_params.json --report docs/calibration.md --seed 0 --folds 5 --max-nfev 400 && $(VENV)/bin/python -m placement.model.opcalibration --fit --report docs/calibration.md && $(VENV)/bin/placement simulate --out data/traces/simulated.parquet --n-jobs 80 --seed 0

# the bundled default model: DNN + warm PPO from the shipped traces (paper, simulated, the first two measured
# H200 sweeps). The third sweep (h200_archs_measured: ten architectures) stays out: the served model's check on
# architectures outside its traces reads it, and a model trained with it did no better on the held-out H100
# host (docs/evaluation.md, "The served policy's P(GPU)")
MODEL_TRACES = $(wildcard data/traces/paper_table2.csv data/traces/simulated.parquet) $(filter-out data/traces/h200_archs_measured.parquet,$(MEASURED_TRACES))
model: setup
	$(VENV)/bin/placement train --traces $(MODEL_TRACES) --out models/default --force --seed 0 --ppo-steps 20000 --threads 1 --quiet
	$(VENV)/bin/placement temperature models/default --traces $(MODEL_TRACES) --folds 4 --threads 1

bench-decide: setup  # single-decision latency and batched decisions/s per policy
	$(PY) benchmarks/bench_decide.py

# every benchmark, figures printed (docs/benchmarks.md records a run and its machine); traffic on 127.0.0.1 only
bench: setup
	$(PY) benchmarks/bench_decide.py
	PYTHONPATH=. $(PY) benchmarks/bench_edge_batch.py
	$(PY) benchmarks/bench_env.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_store.py
	$(PY) benchmarks/bench_http.py --variant "throughput-optimised, HAProxy stable address, 1 replica"
	$(PY) benchmarks/bench_http.py --replicas 2 --batches 4 --port 18800 --variant "throughput-optimised, HAProxy stable address, 2 replicas"
	$(PY) benchmarks/bench_http.py --no-haproxy --batches 4 --port 19100 --variant "direct ingress without HAProxy, 1 replica"
	$(PY) benchmarks/bench_http.py --max-ongoing 4 --batches 4 --port 18900 --variant "max_ongoing_requests 4"
	$(PY) benchmarks/bench_http.py --no-throughput-optimized --batches 4 --port 19000 --variant "Ray Serve default path (proxy actor)"
	PYTHONPATH=. $(PY) benchmarks/bench_haproxy_floor.py
	PYTHONPATH=. $(PY) benchmarks/bench_startup.py
	PYTHONPATH=. $(PY) benchmarks/bench_two_nodes.py  # needs PostgreSQL's server binaries (initdb, pg_ctl)

# load and fault tests against the real service, figures printed (fixed-rate load, replica SIGKILL, whole-service
# SIGKILL, full and read-only disks, damaged artifacts, poisoned feedback) and the OpenAPI fuzzing
soak: setup
	$(PY) -m pytest -s -p no:cacheprovider tests/test_load_faults.py tests/test_openapi_fuzz.py

# hostile clients and whole-service SIGKILL on a private Ray cluster (docs/reliability.md; loopback only, ~20 min)
reliability: setup
	$(PY) benchmarks/bench_hostile.py --per-operation 800 --scenarios 800 --out results/reliability/bench_hostile.json

evaluation-report: setup  # docs/evaluation.md and docs/figures/ (held-out Table 5, warm vs cold PPO curves)
	$(PY) -m experiments.evaluation_report

experiments: setup  # every study of experiments/ (small default budgets) and results/REPORT.md
	$(VENV)/bin/placement experiment all --out results

# a fresh clone in a temporary folder: make run (background), query, feedback, placement stop, make test; each
# step timed (NEWCOMER_TESTS=0 skips make test)
newcomer:
	scripts/newcomer.sh

clean-venv:
	rm -rf $(VENV)
