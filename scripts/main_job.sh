#!/usr/bin/env bash
# The main job on the default dataset (ML-100K with posters and plots), end to end:
#   prepare -> embed (cached) -> pretrain with Accelerate -> build the FAISS index
#   -> onboard the held-out cold-start items from content -> recommendations + warm/cold metrics.
# Usage: bash scripts/main_job.sh [CONFIG] [key=value overrides for training...]
# Run from anywhere; uses .venv if present. Set RUN_DIR to choose the run folder.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
CONFIG="${1:-configs/default.yaml}"; shift || true
if [ -x .venv/bin/mmrec ]; then BIN=.venv/bin/; else BIN="$(dirname "$(command -v mmrec)")/"; fi
HOME_DIR="${MMREC_HOME:-$HOME/.cache/mmrec}"
RUN_DIR="${RUN_DIR:-$HOME_DIR/runs/main-$(date +%Y%m%d-%H%M%S)}"

echo "== 1/5 prepare data ($CONFIG)"
"${BIN}mmrec" data prepare "$CONFIG"
echo "== 2/5 embed item text and images (cached after the first run)"
"${BIN}mmrec" embed "$CONFIG"
echo "== 3/5 pretrain -> $RUN_DIR"
mkdir -p "$(dirname "$RUN_DIR")"
"${BIN}accelerate" launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
  scripts/pretrain.py --config "$CONFIG" --output-dir "$RUN_DIR" -q "$@" > "$RUN_DIR.summary.json"
echo "== 4/5 build the FAISS index"
"${BIN}mmrec" index build --run "$RUN_DIR"
echo "== 5/5 onboard cold-start items, recommend, evaluate"
"${BIN}python" scripts/main_demo.py --run "$RUN_DIR" --json "$RUN_DIR/main_job.json"
