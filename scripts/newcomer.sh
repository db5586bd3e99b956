#!/usr/bin/env bash
# A newcomer's first hour, timed: clone this repository into a temporary folder, run the README's two
# commands there (`make run` in the background, then `make test`), and in between query the service, send
# a feedback for its decision and stop it with `placement stop`. Prints each step's wall time; exits non-zero
# at the first step that fails (the clone is kept then, for a look).
#
#   make newcomer                    # or: scripts/newcomer.sh [REPO]   (default: this checkout's committed HEAD)
#   NEWCOMER_TESTS=0 make newcomer   # everything but `make test` (the whole suite: ~10 min on 2 cores)
#   NEWCOMER_REUSE=/tmp/placement-newcomer.XXXX/placement make newcomer   # again in a kept clone (no new venv)
#
# Everything stays on this host: the service binds 127.0.0.1 on free ports, its state lives in the temporary
# folder, its Ray is its own (RAY_ADDRESS=local) and `placement stop` ends only that Ray.
set -euo pipefail

REPO=${1:-$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)}
PYTHON=${PYTHON:-python3}
TESTS=${NEWCOMER_TESTS:-1}
REUSE=${NEWCOMER_REUSE:-}   # a clone kept by a failed run: pull into it instead of cloning (its .venv is reused)
# WORK is always a folder of this script's own (state, log; removed at the end): a reused clone stays where
# it is and is never removed with it (its parent once was WORK, and a clone kept anywhere took its folder along)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/placement-newcomer.XXXXXX")
if [ -n "$REUSE" ]; then CLONE=$(cd "$REUSE" && pwd); else CLONE="$WORK/placement"; fi
LOG="$WORK/run.log"
START_ALL=$(date +%s)
RUN_PID=""

step_start() { STEP="$1"; STEP_T0=$(date +%s%N); printf '\n== %s\n' "$STEP"; }
step_end() {
  local ms=$(( ($(date +%s%N) - STEP_T0) / 1000000 ))
  printf '== %s: %d.%d s\n' "$STEP" $((ms / 1000)) $((ms % 1000 / 100)); TIMES+=("$(printf '%8d.%d s  %s' $((ms / 1000)) $((ms % 1000 / 100)) "$STEP")")
}
TIMES=()
fail() {
  printf '\nFAILED at step "%s": %s\nclone kept in %s (service log: %s)\n' "$STEP" "$1" "$CLONE" "$LOG" >&2
  [ -f "$LOG" ] && tail -n 30 "$LOG" >&2
  exit 1
}
cleanup() {
  # the service, if a failure left it running: placement stop (its own Ray only), else its make process
  if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then
    (cd "$CLONE" && PLACEMENT_STATE_DIR="$WORK/state" .venv/bin/placement stop >/dev/null 2>&1) || kill "$RUN_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
PROXY_PORT=$(free_port)
while [ "$PROXY_PORT" -ge "$PORT" ] && [ "$PROXY_PORT" -le $((PORT + 20)) ]; do PROXY_PORT=$(free_port); done
export PLACEMENT_STATE_DIR="$WORK/state" PLACEMENT_PORT="$PORT" PLACEMENT_RAY_PROXY_PORT="$PROXY_PORT" RAY_ADDRESS=local
URL="http://127.0.0.1:$PORT"
echo "newcomer: $REPO -> $CLONE; service on $URL (Ray proxy $PROXY_PORT), state $PLACEMENT_STATE_DIR"

if [ -n "$REUSE" ]; then
  step_start "git pull (reusing the kept clone $CLONE)"
  git -C "$CLONE" pull --quiet --ff-only "$REPO" "$(git -C "$REPO" rev-parse --abbrev-ref HEAD)" || fail "git pull"
else
  step_start "git clone"
  git clone --quiet "$REPO" "$CLONE" || fail "git clone $REPO"
fi
git -C "$CLONE" log --oneline -1
step_end

cd "$CLONE"
step_start "make run (setup + start, in the background) until $URL/healthz answers"
make run >"$LOG" 2>&1 &
RUN_PID=$!
for _ in $(seq 1 1800); do
  # ready: answering, and its instance record written (what placement stop reads)
  if curl -fsS -m 2 "$URL/healthz" >/dev/null 2>&1 && [ -f "$PLACEMENT_STATE_DIR/serve.json" ]; then break; fi
  kill -0 "$RUN_PID" 2>/dev/null || fail "make run exited ($(tail -n 1 "$LOG"))"
  sleep 1
done
curl -fsS -m 2 "$URL/healthz" || fail "no answer on $URL/healthz within 30 min"
echo
{ grep -E "placement service on|error" "$LOG" || true; } | tr -s ' \n' ' ' | cut -c1-400
step_end

step_start "placement query (a ResNet-18 training job on a Jetson AGX Orin)"
JOB='{"name": "resnet18_train_b64", "family": "cnn", "mode": "train", "batch_size": 64, "flops_per_batch": 7e11,
      "param_count": 11230000, "input_elems_per_sample": 150528, "input_bytes_per_sample": 602112}'
.venv/bin/placement query "$JOB" -T agx-orin --url "$URL" || fail "placement query (table)"
ANSWER=$(.venv/bin/placement query "$JOB" -T agx-orin --url "$URL" --json) || fail "placement query --json"
DECISION=$(echo "$ANSWER" | "$PYTHON" -c 'import json, sys; d = json.load(sys.stdin)["decisions"][0]; print(d["decision_id"], d["device"])')
read -r DECISION_ID DEVICE <<<"$DECISION"
echo "decision $DECISION_ID: $DEVICE"
step_end

step_start "POST /v1/feedback (the measured run of the chosen device)"
FEEDBACK=$(printf '{"decision_id": "%s", "outcome": {"device": "%s", "n_samples": 50000, "time_total_s": 41.7, "energy_j": 9380.0, "energy_method": "measured"}}' "$DECISION_ID" "$DEVICE")
curl -fsS -m 30 -H 'Content-Type: application/json' -d "$FEEDBACK" "$URL/v1/feedback" || fail "feedback refused"
echo
step_end

step_start "offline API docs (/docs and its Swagger UI bundle from the package)"
curl -fsS -m 10 "$URL/docs" | grep -q "/docs-static/swagger-ui-bundle.js" || fail "/docs does not load local assets"
curl -fsS -m 30 -o /dev/null -w "swagger-ui-bundle.js: %{size_download} bytes\n" "$URL/docs-static/swagger-ui-bundle.js" || fail "asset"
step_end

step_start "placement stop"
.venv/bin/placement stop || fail "placement stop"
wait "$RUN_PID" || true
RUN_PID=""
if curl -fsS -m 2 "$URL/healthz" >/dev/null 2>&1; then fail "still answering after placement stop"; fi
tail -n 2 "$LOG"
step_end

if [ "$TESTS" != "0" ]; then
  step_start "make test (ruff, mypy, the whole test suite)"
  unset PLACEMENT_STATE_DIR PLACEMENT_PORT PLACEMENT_RAY_PROXY_PORT RAY_ADDRESS
  make test 2>&1 | tail -n 15 || fail "make test"
  step_end
fi

printf '\nnewcomer: every step passed in %d s:\n' "$(( $(date +%s) - START_ALL ))"
printf '%s\n' "${TIMES[@]}"
echo "removing $WORK${REUSE:+ (the reused clone $CLONE stays)}"
cd / && rm -rf "$WORK"
